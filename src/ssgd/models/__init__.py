"""Models by name (DLG's LeNet, an MLP, a small ConvNet, a ResNet-18 for 32x32, the DP tanh CNN, a linear
model on ScatterNet features), the optimizers and schedules they are trained with, and their evaluation."""

from .evaluate import evaluate
from .optimizers import (DEFAULT_LR, DEFAULT_MOMENTUM, LARS, OPTIMIZERS, SCHEDULES, build_optimizer,
                         build_scheduler, default_schedule, uses_shards)
from .zoo import MLP, MODELS, ConvNet, LeNet, ResNet18, ScatterLinear, TanhCNN, build_model, register_model

__all__ = ["DEFAULT_LR", "DEFAULT_MOMENTUM", "LARS", "MLP", "MODELS", "OPTIMIZERS", "SCHEDULES", "ConvNet",
           "LeNet", "ResNet18", "ScatterLinear", "TanhCNN", "build_model", "build_optimizer", "build_scheduler",
           "default_schedule", "evaluate", "register_model", "uses_shards"]
