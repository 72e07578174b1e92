r"""The SSGD gradient transform: replace a gradient by its unit vector.

Given gradient tensors :math:`g_1, \dots, g_k` (one per parameter tensor):

``scope="global"``
    :math:`u_i = g_i / \max(\lVert g \rVert_2, \epsilon)` with
    :math:`\lVert g \rVert_2 = \sqrt{\sum_i \lVert g_i \rVert_2^2}` over *all*
    tensors together, so that :math:`\lVert u \rVert_2 = 1`.

``scope="layer"``
    :math:`u_i = g_i / \max(\lVert g_i \rVert_2, \epsilon)`: each tensor is
    its own unit vector.

Numerics (the corners that matter):

* norms are accumulated in float32 whatever the gradient dtype (float64 for
  float64 gradients), so an fp16/bf16 gradient whose sum of squares overflows
  fp16 still normalises correctly;
* a norm whose accumulation overflowed (entries of order 1e20 and more) or may
  have underflowed (norm below ~1e-18) although the tensor is finite is recomputed
  exactly, in float64 with rescaling, so gradients of order 1e30 normalise exactly;
  the joint global norm is combined with :func:`math.hypot` (no overflow);
* a zero gradient stays zero (``0 / eps``): no NaN, no warning;
* a gradient smaller than ``eps`` in norm is divided by ``eps``, not by its norm
  (its image has norm < 1) -- the same convention as optax's
  ``normalize_by_update_norm``;
* fp16/bf16 tensors are scaled in float32 and rounded once (never multiplied by an
  fp16-rounded scale); scales outside ``[1e-20, 1e20]`` are applied in float64;
* a non-finite gradient raises :class:`NonFiniteGradientError`, naming the
  tensor, before anything is modified.

One host synchronisation per call (to read the norms) in the common case.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_EPS",
    "SCOPES",
    "NonFiniteGradientError",
    "check_eps",
    "check_scope",
    "grad_norms",
    "unit",
    "unit_",
    "unit_scales",
]

DEFAULT_EPS = 1e-12
SCOPES = ("global", "layer")

# Scales (and folded lr*scale multipliers) inside this range are applied directly in
# the tensor's float32/float64 dtype; outside it they go through float64.
_SAFE_SCALE = (1e-20, 1e20)
# float32 sums of squares underflow for entries below ~1e-19: norms below this are recomputed.
_TINY_NORM = 2.0**-60


class NonFiniteGradientError(FloatingPointError):
    """A gradient contains NaN or +-inf. ``index`` is its position in the list, ``name`` its name."""

    def __init__(self, index: int, name: str | None = None, shape: tuple[int, ...] | None = None):
        self.index = index
        self.name = name
        what = f"parameter {name!r}" if name else f"tensor #{index}"
        shape_txt = f" (shape {tuple(shape)})" if shape is not None else ""
        super().__init__(
            f"non-finite gradient (NaN or inf) in {what}{shape_txt}; SSGD cannot normalise it. "
            "Lower the learning rate, check the loss for NaN, or pass nonfinite='skip' to skip such steps."
        )

    def __reduce__(self):  # picklable across processes (DDP / Flower workers)
        return (type(self), (self.index, self.name, None))


def check_scope(scope: str) -> str:
    """Return ``scope`` if valid, else raise a ValueError naming it."""
    if scope not in SCOPES:
        raise ValueError(f"Invalid scope: {scope!r}; expected one of {SCOPES}")
    return scope


def check_eps(eps: float) -> float:
    """Return ``eps`` if it is a positive number, else raise a ValueError naming it."""
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"Invalid eps value: {eps!r}; must be a finite number > 0 (default {DEFAULT_EPS})")
    return float(eps)


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    out = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"expected tensors, got {type(t).__name__} at position {i}; "
                "filter out parameters without .grad first (p.grad is None)"
            )
        if t.layout != torch.strided:
            raise ValueError(
                f"sparse gradient ({t.layout}) at position {i}: SSGD does not support sparse gradients; "
                "use a dense embedding (sparse=False) for SSGD-trained parameters"
            )
        if not t.is_floating_point():
            raise TypeError(f"tensor at position {i} has dtype {t.dtype}; gradients must be floating point")
    return out


def _acc_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _exact_norm(t: Tensor) -> float:
    """L2 norm of a finite tensor, in float64 with rescaling (no overflow, no underflow)."""
    amax = float(torch.linalg.vector_norm(t, ord=float("inf"), dtype=torch.float64))
    if amax == 0.0:
        return 0.0
    return amax * float(torch.linalg.vector_norm(t.to(torch.float64) / amax))


_BLOCK = 4096


def _foreach_norms(ts: list[Tensor], acc: torch.dtype | None) -> list[Tensor]:
    """``_foreach_norm``, but on CPU large float32-accumulated tensors are reduced in blocks.

    A CPU reduction accumulates a whole tensor in a few float32 lanes: at 1e7 entries the
    norm is off by ~1e-4 relative. Norms of rows of ``_BLOCK`` entries, then the norm of
    those, keep it near 1e-7 at no extra memory traffic."""
    kw = {} if acc is None else {"dtype": acc}
    if acc == torch.float64 or ts[0].device.type != "cpu" or (acc is None and ts[0].dtype == torch.float64):
        return list(torch._foreach_norm(ts, 2, **kw))
    big = [i for i, t in enumerate(ts) if t.numel() >= 4 * _BLOCK and t.is_contiguous()]
    if not big:
        return list(torch._foreach_norm(ts, 2, **kw))
    out: list[Tensor | None] = [None] * len(ts)
    big_set = set(big)
    small = [i for i in range(len(ts)) if i not in big_set]
    if small:
        for i, n in zip(small, torch._foreach_norm([ts[i] for i in small], 2, **kw)):
            out[i] = n
    for i in big:
        flat = ts[i].view(-1)
        k = flat.numel() // _BLOCK
        rows = torch.linalg.vector_norm(flat[: k * _BLOCK].view(k, _BLOCK), dim=1, **kw)
        tail = flat[k * _BLOCK:]
        parts = torch.cat([rows, tail.to(rows.dtype)]) if tail.numel() else rows
        out[i] = torch.linalg.vector_norm(parts)
    return out  # type: ignore[return-value]


def _norm_list(tensors: Sequence[Tensor]) -> list[float]:
    """Per-tensor L2 norms as Python floats; ``nan`` for a tensor holding NaN/inf.

    Fast path: one ``_foreach_norm`` per dtype class and one host sync.
    """
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) == 1 and dtypes <= {torch.float32, torch.float64}:
        parts = [(list(range(len(tensors))), _foreach_norms(list(tensors), None))]
    else:  # float64 accumulates in float64, everything else in float32
        wide = [i for i, t in enumerate(tensors) if t.dtype == torch.float64]
        narrow = [i for i, t in enumerate(tensors) if t.dtype != torch.float64]
        parts = [(idx, _foreach_norms([tensors[i] for i in idx], acc))
                 for idx, acc in ((wide, torch.float64), (narrow, torch.float32)) if idx]
    out = [0.0] * len(tensors)
    for idx, ns in parts:
        try:
            vals = torch.stack(ns).tolist()
        except RuntimeError:  # norms on several devices
            vals = [float(n) for n in ns]
        if len(parts) == 1:
            out = vals
        else:
            for i, v in zip(idx, vals):
                out[i] = v
    if sum(out) < math.inf and min(out) >= _TINY_NORM:  # all finite, none tiny (NaN fails both)
        return out
    for i, v in enumerate(out):
        if math.isfinite(v) and v >= _TINY_NORM:
            continue
        t = tensors[i]
        if not math.isfinite(v) and not bool(torch.isfinite(t).all()):
            out[i] = math.nan
        else:  # overflow or possible underflow of the accumulation: recompute exactly
            out[i] = _exact_norm(t)
    return out


def grad_norms(tensors: Sequence[Tensor], names: Sequence[str] | None = None) -> Tensor:
    """Per-tensor L2 norms as a float64 vector (on the first tensor's device).

    Accumulated in float32 (float64 for float64 input); overflowed or underflowed
    accumulations are recomputed exactly. Raises :class:`NonFiniteGradientError`
    naming the first tensor that holds NaN/inf.
    """
    ts = _as_list(tensors)
    if not ts:
        return torch.zeros(0, dtype=torch.float64)
    vals = _norm_list(ts)
    for i, v in enumerate(vals):
        if math.isnan(v):
            raise NonFiniteGradientError(i, names[i] if names else None, tuple(ts[i].shape))
    return torch.tensor(vals, dtype=torch.float64, device=ts[0].device)


def _scales(norms: Sequence[float], scope: str, eps: float) -> list[float]:
    if not norms:
        return []
    if scope == "global":
        return [1.0 / max(math.hypot(*norms), eps)] * len(norms)
    return [1.0 / max(n, eps) for n in norms]


def unit_scales(norms: Tensor | Sequence[float], scope: str = "global", eps: float = DEFAULT_EPS) -> list[float]:
    """The multipliers that turn each tensor into (its part of) the unit vector."""
    check_scope(scope)
    check_eps(eps)
    vals = norms.tolist() if isinstance(norms, Tensor) else list(norms)
    return _scales([float(v) for v in vals], scope, eps)


def _safe(s: float) -> bool:
    return _SAFE_SCALE[0] < abs(s) < _SAFE_SCALE[1] or s == 0.0


def _scaled(g: Tensor, s: float, dtype: torch.dtype | None = None) -> Tensor:
    """``g * s`` as a new tensor of ``dtype`` (default ``g.dtype``), rounded once.

    fp16/bf16 are multiplied in float32, scales outside the safe range in float64."""
    dtype = g.dtype if dtype is None else dtype
    if _safe(s):
        if g.dtype in (torch.float32, torch.float64) and g.dtype == dtype:
            return g * s
        hi = torch.float64 if torch.float64 in (g.dtype, dtype) else torch.float32
        return (g.to(hi) * s).to(dtype)
    return (g.to(torch.float64) * s).to(dtype)


def unit_(
    tensors: Tensor | Iterable[Tensor],
    scope: str = "global",
    eps: float = DEFAULT_EPS,
    *,
    names: Sequence[str] | None = None,
) -> Tensor:
    """Normalise ``tensors`` in place to their unit vector; return the norm(s).

    Returns a 0-dim float64 tensor (``scope="global"``) or a float64 vector with one
    norm per tensor (``scope="layer"``), measured *before* normalisation, on the
    first tensor's device. ``None`` entries are not allowed; filter parameters
    without ``.grad`` first. Raises :class:`NonFiniteGradientError` (nothing
    modified) if a tensor holds NaN/inf; ``names`` (one per tensor) make that error
    name the parameter.

    Example::

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = ssgd.unit_(grads)            # grads now have joint norm 1
    """
    check_scope(scope)
    check_eps(eps)
    ts = _as_list(tensors)
    if names is not None and len(names) != len(ts):
        raise ValueError(f"got {len(names)} names for {len(ts)} tensors; pass one name per tensor")
    dev = ts[0].device if ts else torch.device("cpu")
    if not ts:
        return torch.zeros((), dtype=torch.float64) if scope == "global" else torch.zeros(0, dtype=torch.float64)
    norms = _norm_list(ts)
    for i, v in enumerate(norms):
        if math.isnan(v):
            raise NonFiniteGradientError(i, names[i] if names else None, tuple(ts[i].shape))
    scales = _scales(norms, scope, eps)
    fast = [i for i, (t, s) in enumerate(zip(ts, scales))
            if t.dtype in (torch.float32, torch.float64) and _safe(s)]
    if fast:
        if scope == "global" and len({ts[i].device for i in fast}) == 1:
            torch._foreach_mul_([ts[i] for i in fast], scales[0])
        else:
            for i in fast:
                ts[i].mul_(scales[i])
    fast_set = set(fast)
    for i, (t, s) in enumerate(zip(ts, scales)):
        if i not in fast_set:
            t.copy_(_scaled(t, s))
    if scope == "global":
        return torch.tensor(math.hypot(*norms), dtype=torch.float64, device=dev)
    return torch.tensor(norms, dtype=torch.float64, device=dev)


def unit(
    tensors: Tensor | Iterable[Tensor],
    scope: str = "global",
    eps: float = DEFAULT_EPS,
    *,
    names: Sequence[str] | None = None,
) -> list[Tensor]:
    """Out-of-place :func:`unit_`: return new unit-vector tensors, inputs untouched.

    Differentiable when an input requires grad (used by SSGD-aware attacks, which
    push their dummy gradient through the same transform); that path uses plain
    autograd ops with norms accumulated in float32 and does not check for NaN."""
    check_scope(scope)
    check_eps(eps)
    ts = _as_list(tensors)
    if not ts:
        return []
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        norms = [torch.linalg.vector_norm(t, dtype=_acc_dtype(t)) for t in ts]
        if scope == "global":
            total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].dtype) for n in norms]))
            total = total.clamp_min(eps)
            return [(t / total).to(t.dtype) for t in ts]
        return [(t / n.clamp_min(eps)).to(t.dtype) for t, n in zip(ts, norms)]
    out = [t.detach().clone() for t in ts]
    unit_(out, scope, eps, names=names)
    return out
