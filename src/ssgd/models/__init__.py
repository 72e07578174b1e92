"""Models by name: DLG's LeNet, an MLP, a small ConvNet, a ResNet-18 for 32x32."""

from .zoo import MLP, MODELS, ConvNet, LeNet, ResNet18, build_model, register_model

__all__ = ["MLP", "MODELS", "ConvNet", "LeNet", "ResNet18", "build_model", "register_model"]
