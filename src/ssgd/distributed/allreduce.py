r"""``allreduce_unit_``: SSGD's all-reduce for training loops that do not use DDP.

Call it after ``backward()`` and before ``optimizer.step()`` on every rank::

    loss.backward()
    ssgd.distributed.allreduce_unit_(model.parameters(), scope="global")
    opt.step()                      # a plain SGD step along the mean of the m unit vectors

Each rank replaces its gradient by its unit vector (global or per-tensor scope) and the
ranks all-reduce the result, so ``.grad`` ends up equal on every rank to

.. math:: \frac1m\sum_{j=1}^m g_j/\max(\lVert g_j\rVert,\epsilon) \quad(\texttt{reduce="mean"})
          \qquad\text{or}\qquad \sum_{j=1}^m g_j/\max(\lVert g_j\rVert,\epsilon)\quad(\texttt{"sum"}).

The gradients are flattened into one buffer per (device, dtype) and reduced with one
all-reduce each. Parameters that require grad but have ``.grad is None`` (unused in this
step) contribute zeros and receive the reduced value, like DDP's unused parameters; every
rank must pass the same parameters in the same order. Non-finite local gradients follow
the same protocol as the DDP hook (see :mod:`ssgd.distributed.ddp`): the failing rank
contributes zeros (never a NaN sentinel) and, with ``nonfinite="raise"``, raises
:class:`~ssgd.distributed.LocalNonFiniteError` after the all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..transform import DEFAULT_EPS, check_eps, check_nonfinite, check_scope
from ._common import check_reduce, normalise_local_, raise_if_failed

__all__ = ["allreduce_unit_"]


def _named(params: Any) -> list[tuple[str | None, Tensor]]:
    if isinstance(params, nn.Module):
        return [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    if isinstance(params, Tensor):
        params = [params]
    out: list[tuple[str | None, Tensor]] = []
    for i, item in enumerate(params):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor):
            name, p = item
        elif isinstance(item, Tensor):
            name, p = None, item
        else:
            raise TypeError(f"allreduce_unit_ expects tensors, (name, tensor) pairs or a Module; got "
                            f"{type(item).__name__} at position {i}")
        if p.requires_grad:
            out.append((name, p))
    return out


@torch.no_grad()
def allreduce_unit_(params: Iterable[Tensor] | Iterable[tuple[str, Tensor]] | nn.Module, scope: str = "global",
                    group: Any = None, *, reduce: str = "mean", eps: float = DEFAULT_EPS,
                    nonfinite: str = "raise") -> Tensor:
    """Normalise this rank's ``.grad``\\ s to their unit vector, then all-reduce them in place.

    Args:
        params: parameters (or ``named_parameters()`` pairs, or a Module) whose ``.grad`` to reduce.
        scope: ``"global"`` (one norm over all of them) or ``"layer"`` (one per tensor).
        group: process group (default: the world).
        reduce: ``"mean"`` (default, DDP's convention) or ``"sum"`` (the paper's SSGD(m) sum).
        eps: norms below ``eps`` divide by ``eps``.
        nonfinite: ``"raise"`` or ``"skip"`` (see the module docstring).

    Returns:
        This rank's local norm(s) before normalisation, float64 (0-dim for global scope, one per
        tensor for layer scope). They stay on this rank: nothing but unit vectors is sent.
    """
    check_scope(scope)
    check_reduce(reduce)
    check_nonfinite(nonfinite)
    eps = check_eps(eps)
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("allreduce_unit_ needs an initialised process group: call "
                           "torch.distributed.init_process_group(...) first (torchrun sets the environment)")
    named = _named(params)
    for _, p in named:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        elif p.grad.is_sparse:
            raise ValueError("sparse gradients are not supported by SSGD; use dense parameters (sparse=False)")
    grads = [p.grad for _, p in named]
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    factor = 1.0 / world if reduce == "mean" else 1.0
    norms, err = normalise_local_(grads, lambda i: named[i][0], scope, float(eps), factor, nonfinite, rank)

    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, g in enumerate(grads):
        buckets.setdefault((g.device, g.dtype), []).append(i)
    flats = []
    for idx in buckets.values():
        flat = _flatten_dense_tensors([grads[i] for i in idx])
        dist.all_reduce(flat, group=group)
        flats.append((idx, flat))
    for idx, flat in flats:
        for i, v in zip(idx, _unflatten_dense_tensors(flat, [grads[i] for i in idx])):
            grads[i].copy_(v)
    raise_if_failed(err)
    dev = grads[0].device if grads else torch.device("cpu")
    if scope == "global":
        return torch.tensor(math.hypot(*norms), dtype=torch.float64, device=dev)
    return torch.tensor(norms, dtype=torch.float64, device=dev)
