"""Models, selectable by name through :func:`build_model`.

* ``lenet`` -- DLG's LeNet (Zhu et al. 2019): three 5x5 conv layers of 12 channels
  with sigmoid activations and one linear layer; the attack literature's reference.
* ``mlp`` -- a two-hidden-layer perceptron (first layer linear: the analytic attack's target).
* ``convnet`` -- a small ReLU ConvNet with a width multiplier.
* ``resnet18`` -- a ResNet-18 for 32x32 inputs (CIFAR-style stem, BatchNorm).
* ``tanh-cnn`` -- the small tanh CNN of the DP literature (Papernot et al. 2020, Tramèr & Boneh 2021):
  the end-to-end model of the Fashion-MNIST ε = 3 benchmark (26,010 parameters, no BatchNorm).
* ``scatter-linear`` -- Tramèr & Boneh's linear model on ScatterNet features (``ssgd.data.scatternet_features``):
  data-independent group normalisation, then one linear layer (39,700 parameters on 81x7x7 features).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MODELS", "build_model", "register_model", "LeNet", "MLP", "ConvNet", "ResNet18", "TanhCNN",
           "ScatterLinear"]


class LeNet(nn.Module):
    """DLG's LeNet: conv(5, stride 2) -> conv(5, stride 2) -> conv(5, stride 1), sigmoid, linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = (image_size + 3) // 4  # two stride-2 convs with padding 2, kernel 5
        self.fc = nn.Linear(12 * side * side, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 256, depth: int = 2,
                 activation: str = "relu"):
        super().__init__()
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvNet(nn.Module):
    """conv(3x3, 16w)-relu-pool -> conv(3x3, 32w)-relu-pool -> linear(128w) -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 1):
        super().__init__()
        if width < 1:
            raise ValueError(f"Invalid ConvNet width={width}; must be >= 1")
        c1, c2 = 16 * width, 32 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, 128 * width), nn.ReLU(),
                                  nn.Linear(128 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return F.relu(out + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, four stages of two basic blocks (64..512 channels)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TanhCNN(nn.Module):
    """The small tanh CNN of Papernot et al. 2020 / Tramèr & Boneh 2021 (their ``MNIST_CNN``), for 28x28 inputs.

    conv(16, 8x8, stride 2, padding 2) -> tanh -> maxpool(2x2, stride 1)
    -> conv(32, 4x4, stride 2) -> tanh -> maxpool(2x2, stride 1)
    -> linear(32*4*4 -> 32) -> tanh -> linear(32 -> classes).

    Spatial sizes 28 -> 13 -> 12 -> 5 -> 4. Tramèr & Boneh's public code pads the first
    conv by 2; Opacus's MNIST example pads it by 3 (28 -> 14 -> 13 -> 5 -> 4, same
    parameter count): ``padding=3`` selects that variant. No BatchNorm: per-example
    gradients are well defined (example-level DP).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, padding: int = 2):
        super().__init__()
        if padding not in (2, 3):
            raise ValueError(f"Invalid TanhCNN padding={padding}; use 2 (Tramer & Boneh) or 3 (Opacus's example)")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=2, padding=padding), nn.Tanh(), nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        )
        side = (((image_size + 2 * padding - 8) // 2 + 1 - 1) - 4) // 2 + 1 - 1
        if side < 1:
            raise ValueError(f"TanhCNN needs images of at least 16x16 pixels (got {image_size}x{image_size})")
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 32), nn.Tanh(),
                                        nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class ScatterLinear(nn.Module):
    """Tramèr & Boneh's ScatterNet + linear model: ``GroupNorm(groups, C, affine=False)`` on the features
    (C, H, W), then ``Linear(C*H*W -> classes)``.

    The normalisation uses each example's own statistics over groups of channels, never statistics of
    the training set, so it costs no privacy and gives per-example gradients (it has no parameters).
    Their Fashion-MNIST setting is 27 groups of 3 of the 81 channels; ``groups=0`` turns it off."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int = 10, groups: int = 27):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 0:
            raise ValueError(f"Invalid ScatterLinear groups={groups!r}; must be an integer >= 0 (0: no normalisation)")
        if groups and in_channels % groups:
            raise ValueError(f"Invalid ScatterLinear groups={groups}: it must divide the {in_channels} feature "
                             f"channels; use one of {[g for g in range(1, in_channels + 1) if in_channels % g == 0]}")
        self.norm = nn.GroupNorm(groups, in_channels, affine=False) if groups else nn.Identity()
        self.fc = nn.Linear(in_channels * height * width, num_classes)

    def forward(self, x):
        return self.fc(self.norm(x).flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


@register_model("lenet")
def _lenet(shape, num_classes, **kw):
    return LeNet(shape[0], num_classes, shape[1], **kw)


@register_model("mlp")
def _mlp(shape, num_classes, **kw):
    return MLP(shape[0] * shape[1] * shape[2], num_classes, **kw)


@register_model("convnet")
def _convnet(shape, num_classes, **kw):
    return ConvNet(shape[0], num_classes, shape[1], **kw)


@register_model("resnet18")
def _resnet18(shape, num_classes, **kw):
    return ResNet18(shape[0], num_classes, **kw)


@register_model("tanh-cnn")
def _tanh_cnn(shape, num_classes, **kw):
    return TanhCNN(shape[0], num_classes, shape[1], **kw)


@register_model("scatter-linear")
def _scatter_linear(shape, num_classes, **kw):
    return ScatterLinear(shape[0], shape[1], shape[2], num_classes, **kw)


def build_model(name: str, shape: tuple[int, int, int], num_classes: int, *, seed: int | None = None,
                **kwargs) -> nn.Module:
    """Build model ``name`` for inputs of ``shape`` (C, H, W). ``seed`` makes the init deterministic."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known: {sorted(MODELS)}")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MODELS[name](tuple(shape), num_classes, **kwargs)
    return MODELS[name](tuple(shape), num_classes, **kwargs)
