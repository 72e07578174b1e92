r"""Noisy training data as in the paper's robustness experiment: Laplace noise per pixel.

Each pixel :math:`x \in [0, 1]` of every *training* image gets independent noise
:math:`x' = x + \mathrm{Lap}(0, b)` with scale :math:`b = \Delta / \varepsilon`, where the
sensitivity :math:`\Delta = 1` is the range of a pixel in [0, 1] (changing one pixel
from black to white). This is the Laplace mechanism applied per pixel: each released
pixel is :math:`\varepsilon`-DP with respect to that pixel's value. (It is *not* a
guarantee for a whole image, which composes over all 784 pixels.) Test images stay
clean: the experiment asks how well an optimiser learns from noisy data. Optional
``clip=True`` clamps back to [0, 1] (post-processing, the guarantee is unchanged).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .datasets import ImageDataset

__all__ = ["PIXEL_SENSITIVITY", "laplace_scale", "add_laplace_noise", "with_laplace_noise"]

PIXEL_SENSITIVITY = 1.0  # pixels live in [0, 1]


def laplace_scale(eps: float, sensitivity: float = PIXEL_SENSITIVITY) -> float:
    """The Laplace mechanism's scale ``b = sensitivity / eps``."""
    if not eps > 0:
        raise ValueError(f"Invalid privacy level eps={eps}; must be > 0 (the paper uses 5, 2, 1)")
    if not sensitivity > 0:
        raise ValueError(f"Invalid sensitivity={sensitivity}; must be > 0")
    return sensitivity / eps


def add_laplace_noise(x: Tensor, eps: float, *, sensitivity: float = PIXEL_SENSITIVITY, seed: int = 0,
                      clip: bool = False) -> Tensor:
    """``x`` plus i.i.d. Laplace(0, sensitivity/eps) noise per element (out of place, seeded)."""
    b = laplace_scale(eps, sensitivity)
    g = torch.Generator().manual_seed(seed)
    # Laplace by inverse CDF from a seeded uniform: u in (-1/2, 1/2), n = -b sign(u) log(1 - 2|u|)
    u = torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5
    u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)
    noise = (-b * torch.sign(u) * torch.log1p(-2.0 * u.abs())).to(x.dtype)
    out = x + noise.to(x.device)
    return out.clamp_(0.0, 1.0) if clip else out


def with_laplace_noise(data: ImageDataset, eps: float, *, sensitivity: float = PIXEL_SENSITIVITY, seed: int = 0,
                       clip: bool = False) -> ImageDataset:
    """A copy of ``data`` whose training images carry Laplace noise at level ``eps``; test images untouched."""
    return ImageDataset(f"{data.name}-laplace-eps{eps:g}",
                        add_laplace_noise(data.x_train, eps, sensitivity=sensitivity, seed=seed, clip=clip),
                        data.y_train, data.x_test, data.y_test, data.num_classes)
