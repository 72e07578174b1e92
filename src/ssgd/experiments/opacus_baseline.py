"""The DP-SGD baseline every privacy experiment compares against: Opacus's own
``PrivacyEngine`` with per-example clipping and Poisson sampling (never a re-implementation).

:func:`make_private` wraps a model, an optimizer and in-memory data; :func:`train_epoch` runs
one pass of the Poisson-sampled loader (an empty batch still takes a noise-only step, as
DP-SGD's analysis requires)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["make_private", "train_epoch"]


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 batch_size: int, noise_multiplier: float, max_grad_norm: float, accountant: str,
                 loader_generator: torch.Generator, noise_generator: torch.Generator) -> tuple[Any, ...]:
    """``(engine, private_model, private_optimizer, poisson_loader)`` from Opacus's ``PrivacyEngine``."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=loader_generator)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        engine = PrivacyEngine(accountant=accountant)
        pmodel, popt, ploader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=True, noise_generator=noise_generator)
    return engine, pmodel, popt, ploader


def train_epoch(pmodel: nn.Module, popt: torch.optim.Optimizer, ploader, *,
                after_step: Callable[[], None] | None = None, device: str | torch.device | None = None,
                before_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> int:
    """One epoch of DP-SGD over ``ploader``; returns the number of steps (``before_step(xb, yb)`` runs before
    each step, ``after_step()`` after it)."""
    pmodel.train()
    steps = 0
    for xb, yb in ploader:
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        if before_step is not None:
            before_step(xb, yb)
        popt.zero_grad(set_to_none=True)
        if xb.shape[0] > 0:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                F.cross_entropy(pmodel(xb), yb).backward()
        popt.step()
        steps += 1
        if after_step is not None:
            after_step()
    return steps
