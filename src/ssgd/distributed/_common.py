"""Pieces shared by the DDP hook and :func:`ssgd.distributed.allreduce_unit_`.

Everything here is rank-local: the norms computed here never leave the process. The unit
vector is :mod:`ssgd.transform`'s (``grad_norms``, ``unit_denominator``, ``divide_``), with the
all-reduce factor folded into the division.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..transform import NONFINITE_POLICIES, check_nonfinite, divide_, grad_norms, nonfinite_positions, unit_denominator

__all__ = ["REDUCES", "NONFINITE", "check_reduce", "check_nonfinite", "raise_if_failed", "normalise_local_",
           "nonfinite_message", "LocalNonFiniteError", "log"]

REDUCES = ("mean", "sum")
NONFINITE = NONFINITE_POLICIES  # both send zeros for a non-finite gradient; 'raise' then raises on that rank

log = logging.getLogger("ssgd.distributed")


class LocalNonFiniteError(FloatingPointError):
    """This rank's local gradient held NaN/inf (raised on that rank, after the collective)."""


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCES:
        raise ValueError(f"Invalid reduce={reduce!r}; expected 'mean' (DDP's average of the unit vectors) "
                         "or 'sum' (the paper's sum of the m unit vectors)")
    return reduce


def nonfinite_message(rank: int, name: str | None, shape: tuple[int, ...] | None) -> str:
    what = f"parameter {name!r}" if name else "a parameter"
    shp = f" (shape {tuple(shape)})" if shape is not None else ""
    return (f"rank {rank}: non-finite local gradient (NaN or inf) in {what}{shp}; SSGD cannot normalise it. "
            "Lower the learning rate or check the loss for NaN; or register the hook / call allreduce_unit_ "
            "with nonfinite='skip' to let this rank contribute zeros for such steps.")


def normalise_local_(grads: Sequence[Tensor], name_of: Callable[[int], str | None], scope: str, eps: float,
                     factor: float, nonfinite: str, rank: int) -> tuple[list[float], str | None]:
    """Turn ``grads`` in place into ``factor`` times their unit vector (global or per tensor).

    Returns ``(norms, error)``; one host read. What leaves the rank never depends on a non-finite
    gradient's values: such a gradient is replaced by zeros -- the whole contribution for global
    scope or ``nonfinite='raise'``, only the non-finite tensors for layer scope with ``'skip'`` --
    and under ``'raise'`` ``error`` is the message naming the parameter, which the caller raises on
    this rank after the collective (the other ranks are not told; the launcher stops them).
    """
    if not grads:
        return [], None
    norms_t = grad_norms(grads)
    denom = unit_denominator(norms_t, scope, eps)
    norms, bad = nonfinite_positions(norms_t, denom)
    if not bad:
        divide_(grads, denom / factor)
        return norms, None
    msg = nonfinite_message(rank, name_of(bad[0]), tuple(grads[bad[0]].shape))
    if nonfinite == "raise" or scope == "global":
        torch._foreach_zero_(list(grads))
        if nonfinite == "skip":
            log.warning("%s -- skipped (contributing zeros)", msg.split(";")[0])
        return norms, msg if nonfinite == "raise" else None
    log.warning("%s -- skipped (contributing zeros)", msg.split(";")[0])
    good = [i for i in range(len(grads)) if i not in set(bad)]
    torch._foreach_zero_([grads[i] for i in bad])
    if good:
        per = (denom / factor).unbind(0)
        divide_([grads[i] for i in good], torch.stack([per[i] for i in good]))
    return norms, None


def raise_if_failed(local_error: str | None) -> None:
    """After the all-reduce: raise this rank's :class:`LocalNonFiniteError`, if it had one."""
    if local_error is not None:
        raise LocalNonFiniteError(local_error)
