"""The DP-SGD baseline every privacy experiment compares against: Opacus's own
``PrivacyEngine`` with per-example clipping and Poisson sampling (never a re-implementation).

:func:`make_private` wraps a model, an optimizer and in-memory data; :func:`opacus_grad` is its
gradient path in the one training loop (:func:`ssgd.loop.train_loop`; an empty batch still takes a
noise-only step, as DP-SGD's analysis requires)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["make_private", "opacus_grad"]


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


def opacus_grad(pmodel: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor | None:
    """The Opacus gradient path of :func:`ssgd.loop.train_loop`: backward through the wrapped model
    (its hooks keep per-sample gradients; the private optimizer clips and noises them at its step).
    An empty Poisson batch computes nothing: the step that follows is pure noise, as DP-SGD requires."""
    if xb.shape[0] == 0:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss = F.cross_entropy(pmodel(xb), yb)
        loss.backward()
    return loss.detach()
