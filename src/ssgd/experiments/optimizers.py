"""Optimizers by name for the experiments, with the defaults the CLI documents.

``ssgd`` with ``shards=1`` is :class:`ssgd.SSGD`; with ``shards=m > 1`` the m shards'
unit vectors are summed into ``.grad`` by :func:`ssgd.shard_unit_grad_` and a plain
``torch.optim.SGD`` (momentum as given) steps along the sum -- the paper's SSGD(m).
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..optim import SSGD

__all__ = ["OPTIMIZERS", "DEFAULT_LR", "DEFAULT_MOMENTUM", "build_optimizer", "uses_shards"]

OPTIMIZERS = ("sgd", "sgdm", "adam", "ssgd")
DEFAULT_LR = {"sgd": 0.1, "sgdm": 0.01, "adam": 1e-3, "ssgd": 0.5}
DEFAULT_MOMENTUM = {"sgd": 0.0, "sgdm": 0.9, "adam": 0.0, "ssgd": 0.0}


def uses_shards(name: str, shards: int) -> bool:
    return name == "ssgd" and shards > 1


def build_optimizer(name: str, params: Iterable, *, lr: float | None = None, momentum: float | None = None,
                    weight_decay: float = 0.0, scope: str = "global", shards: int = 1) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")
    if shards < 1:
        raise ValueError(f"Invalid shards={shards}; must be >= 1")
    if shards > 1 and name != "ssgd":
        raise ValueError(f"--shards {shards} only applies to --optimizer ssgd (got {name!r}); drop --shards")
    lr = DEFAULT_LR[name] if lr is None else lr
    mom = DEFAULT_MOMENTUM[name] if momentum is None else momentum
    if name in ("sgd", "sgdm"):
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if shards > 1:
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=weight_decay)
    return SSGD(params, lr=lr, scope=scope, momentum=mom, weight_decay=weight_decay)
