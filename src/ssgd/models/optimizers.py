r"""Optimizers and learning-rate schedules by name, with the defaults the CLI documents.

Optimizers (``build_optimizer``):

* ``sgd``, ``sgdm`` (momentum 0.9), ``adam`` -- the PyTorch ones.
* ``ssgd`` -- :class:`ssgd.SSGD` (unit step, ``scope`` global or layer). With
  ``shards=m > 1`` the m shards' unit vectors are summed into ``.grad`` by
  :func:`ssgd.shard_unit_grad_` and a plain ``torch.optim.SGD`` (momentum as given)
  steps along the sum -- the paper's SSGD(m).
* ``nsgd`` -- normalized SGD: a global unit step :math:`\theta \leftarrow \theta - \gamma_t g/\lVert g\rVert`
  with a *decaying* learning rate (its default schedule is ``cosine``). It is SSGD(1)
  with a schedule, the classic normalized-gradient method (Hazan et al. 2015).
* ``lars`` -- :class:`LARS` (You et al. 2017): per-tensor trust ratio
  :math:`\eta\lVert w\rVert/\lVert g + \lambda w\rVert` times ``lr``, heavy-ball momentum 0.9.

Schedules (``build_scheduler``): ``constant``, ``step`` (x0.1 at 50% and 75% of the
steps), ``cosine`` (to 0), each with an optional linear warm-up over ``warmup_steps``;
they are per-step ``LambdaLR``\ s, so their state checkpoints with the optimizer.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim import Optimizer

from ..optim import SSGD

__all__ = ["OPTIMIZERS", "DEFAULT_LR", "DEFAULT_MOMENTUM", "DEFAULT_SCHEDULE", "SCHEDULES", "LARS",
           "build_optimizer", "build_scheduler", "schedule_factor", "uses_shards", "default_schedule"]

OPTIMIZERS = ("sgd", "sgdm", "adam", "ssgd", "nsgd", "lars")
DEFAULT_LR = {"sgd": 0.1, "sgdm": 0.01, "adam": 1e-3, "ssgd": 0.5, "nsgd": 0.5, "lars": 1.0}
DEFAULT_MOMENTUM = {"sgd": 0.0, "sgdm": 0.9, "adam": 0.0, "ssgd": 0.0, "nsgd": 0.0, "lars": 0.9}
DEFAULT_SCHEDULE = {"nsgd": "cosine"}
SCHEDULES = ("constant", "step", "cosine")


def uses_shards(name: str, shards: int) -> bool:
    return name == "ssgd" and shards > 1


def default_schedule(name: str) -> str:
    return DEFAULT_SCHEDULE.get(name, "constant")


class LARS(Optimizer):
    r"""Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017).

    For every parameter tensor :math:`w` with gradient :math:`g`:

    .. math::
       \begin{aligned}
       &d = g + \lambda w,\qquad
        r = \begin{cases}\eta\,\lVert w\rVert / (\lVert d\rVert + \epsilon) & \lVert w\rVert>0,\ \lVert d\rVert>0\\
                          1 & \text{otherwise}\end{cases}\\
       &b \leftarrow \mu b + r\,d,\qquad w \leftarrow w - \gamma\, b
       \end{aligned}

    ``exclude_1d=True`` skips the trust ratio (and weight decay) for biases and norm
    weights, as large-batch practice often does; the default adapts every tensor,
    like the original paper.
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8, exclude_1d: bool = False):
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}; must be >= 0")
        if not momentum >= 0:
            raise ValueError(f"Invalid momentum value: {momentum}; must be >= 0")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}; must be >= 0")
        if not trust_coefficient > 0:
            raise ValueError(f"Invalid trust_coefficient: {trust_coefficient}; must be > 0 (typical: 0.001)")
        if not eps >= 0:
            raise ValueError(f"Invalid eps value: {eps}; must be >= 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps, exclude_1d=exclude_1d))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                skip = group["exclude_1d"] and p.ndim <= 1
                if group["weight_decay"] and not skip:
                    d = d.add(p, alpha=group["weight_decay"])
                if not skip:
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * w_norm / (d_norm + group["eps"]),
                                        torch.ones_like(w_norm))
                    d = d * ratio
                if group["momentum"]:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.detach().clone()
                    else:
                        buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
        return loss


def build_optimizer(name: str, params: Iterable, *, lr: float | None = None, momentum: float | None = None,
                    weight_decay: float = 0.0, scope: str = "global", shards: int = 1) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")
    if shards < 1:
        raise ValueError(f"Invalid shards={shards}; must be >= 1")
    if shards > 1 and name != "ssgd":
        raise ValueError(f"shards={shards} only applies to the 'ssgd' optimizer (got {name!r}); use shards=1")
    lr = DEFAULT_LR[name] if lr is None else lr
    mom = DEFAULT_MOMENTUM[name] if momentum is None else momentum
    if name in ("sgd", "sgdm"):
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=mom, weight_decay=weight_decay)
    if name == "nsgd":
        return SSGD(params, lr=lr, scope="global", momentum=mom, weight_decay=weight_decay)
    if shards > 1:
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=weight_decay)
    return SSGD(params, lr=lr, scope=scope, momentum=mom, weight_decay=weight_decay)


def schedule_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The multiplier of the base lr at optimizer step ``step`` (0-based) of ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; known: {list(SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    return 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(opt: Optimizer, schedule: str, total_steps: int,
                    warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` (call ``.step()`` after every ``opt.step()``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; known: {list(SCHEDULES)}")
    if warmup_steps < 0:
        raise ValueError(f"Invalid warmup_steps={warmup_steps}; must be >= 0")
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: schedule_factor(schedule, s, total_steps, warmup_steps))
