"""Pieces shared by the DDP hook and :func:`ssgd.distributed.allreduce_unit_`.

Everything here is rank-local: the norms computed here never leave the process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..transform import NONFINITE_POLICIES, NonFiniteGradientError, check_nonfinite, grad_norms, scale_

__all__ = ["REDUCES", "NONFINITE", "check_reduce", "check_nonfinite", "check_finite_result", "scale_",
           "normalise_local_", "nonfinite_message", "local_norms", "PeerNonFiniteError", "LocalNonFiniteError", "log"]

REDUCES = ("mean", "sum")
NONFINITE = NONFINITE_POLICIES  # 'raise': every rank raises after the all-reduce; 'skip': the rank contributes zeros

log = logging.getLogger("ssgd.distributed")


class LocalNonFiniteError(FloatingPointError):
    """This rank's local gradient held NaN/inf (raised on that rank, after the collective)."""


class PeerNonFiniteError(FloatingPointError):
    """Another rank's local gradient held NaN/inf (raised on every healthy rank)."""


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCES:
        raise ValueError(f"Invalid reduce={reduce!r}; expected 'mean' (DDP's average of the unit vectors) "
                         "or 'sum' (the paper's sum of the m unit vectors)")
    return reduce


def local_norms(grads: Sequence[Tensor]) -> list[float]:
    """Per-tensor L2 norms as floats: :func:`ssgd.grad_norms` (the core's numerics: float32
    accumulation in blocks, exact recomputation of overflowed or tiny norms, one host read;
    :class:`~ssgd.NonFiniteGradientError` naming the tensor for NaN/inf)."""
    ts = list(grads)
    if not ts:
        return []
    return grad_norms(ts).tolist()


def nonfinite_message(rank: int, name: str | None, shape: tuple[int, ...] | None) -> str:
    what = f"parameter {name!r}" if name else "a parameter"
    shp = f" (shape {tuple(shape)})" if shape is not None else ""
    return (f"rank {rank}: non-finite local gradient (NaN or inf) in {what}{shp}; SSGD cannot normalise it. "
            "Lower the learning rate or check the loss for NaN; or register the hook / call allreduce_unit_ "
            "with nonfinite='skip' to let this rank contribute zeros for such steps.")


def normalise_local_(grads: Sequence[Tensor], name_of: Callable[[int], str | None], scope: str, eps: float,
                     factor: float, nonfinite: str, rank: int) -> tuple[list[float], str | None]:
    """Turn ``grads`` in place into ``factor`` times their unit vector (global or per tensor).

    Returns ``(norms, error)``. On a non-finite gradient, with ``nonfinite='raise'``, every
    tensor is filled with NaN (so the NaN reaches every rank through the all-reduce and all
    of them raise together, instead of the healthy ranks hanging in the collective) and
    ``error`` is the message naming the parameter; with ``'skip'``, global scope zeroes the
    whole contribution, layer scope zeroes only the non-finite tensors.
    """
    if not grads:
        return [], None
    try:
        norms = local_norms(grads)
        bad: list[int] = []
    except NonFiniteGradientError:
        norms, bad = [], []
        for i, g in enumerate(grads):
            if bool(torch.isfinite(g).all()):
                norms.append(float(grad_norms([g])[0]))
            else:
                norms.append(math.nan)
                bad.append(i)
    if bad:
        msg = nonfinite_message(rank, name_of(bad[0]), tuple(grads[bad[0]].shape))
        if nonfinite == "raise":
            for g in grads:
                g.fill_(math.nan)
            return norms, msg
        log.warning("%s -- skipped (contributing zeros)", msg.split(";")[0])
        if scope == "global":
            for g in grads:
                g.zero_()
            return norms, None
        for i in bad:
            grads[i].zero_()
        good = [i for i in range(len(grads)) if i not in set(bad)]
        scale_([grads[i] for i in good], [factor / max(norms[i], eps) for i in good])
        return norms, None
    if scope == "global":
        total = math.hypot(*norms)
        scale_(grads, [factor / max(total, eps)] * len(grads))
    else:
        scale_(grads, [factor / max(n, eps) for n in norms])
    return norms, None


def check_finite_result(reduced: Tensor, local_error: str | None, rank: int) -> None:
    """After the all-reduce: raise on every rank if some rank sent its NaN sentinel.

    A rank that failed fills its *whole* contribution with NaN, so one element of the
    reduced tensor tells every rank (O(1), no extra collective)."""
    if local_error is not None:
        raise LocalNonFiniteError(local_error)
    if reduced.numel() and not math.isfinite(float(reduced.reshape(-1)[0])):
        raise PeerNonFiniteError(
            f"rank {rank}: the all-reduced SSGD gradient is non-finite because another rank's local gradient "
            "held NaN/inf (that rank's error names the parameter). Every rank stops at this step; lower the "
            "learning rate or check the data, or use nonfinite='skip'.")
