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

:func:`unit_`/:func:`unit`/:func:`grad_norms` read the norms on the host once per call (to
raise before modifying anything); :func:`batched_unit` never does (differentiable, for B
stacked gradients), and :class:`ssgd.SSGD`'s device path (``capturable``) never does either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._numerics import acc_dtype as _acc_dtype
from ._numerics import as_list as _as_list
from ._numerics import norm_list as _norm_list
from ._numerics import safe_hypot as _safe_hypot
from ._numerics import safe_rows_norm as _safe_rows_norm
from ._numerics import scaled as _scaled
from ._numerics import scales as _scales
from ._numerics import safe as _safe

__all__ = [
    "DEFAULT_EPS",
    "NONFINITE_POLICIES",
    "SCOPES",
    "NonFiniteGradientError",
    "batched_unit",
    "check_eps",
    "check_gamma",
    "check_nonfinite",
    "check_scope",
    "grad_norms",
    "scale_",
    "unit",
    "unit_",
    "unit_scales",
]

DEFAULT_EPS = 1e-12
SCOPES = ("global", "layer")
NONFINITE_POLICIES = ("raise", "skip")

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
    """Return ``eps`` as a float if it is a finite number > 0, else raise a ValueError naming it.

    The one rule for every ``eps`` in the package (optimizer, wrapper, shards, DDP hook,
    all-reduce, privacy): ``eps = inf`` would turn every gradient into zero, so it is refused."""
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"Invalid eps value: {eps!r}; must be a finite number > 0 (default {DEFAULT_EPS})")
    return float(eps)


def check_nonfinite(nonfinite: str) -> str:
    """Return ``nonfinite`` if it is a known policy (``"raise"`` or ``"skip"``), else raise a ValueError."""
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"Invalid nonfinite policy: {nonfinite!r}; expected one of {NONFINITE_POLICIES} "
                         "('raise' stops with an error naming the parameter, 'skip' skips the step)")
    return nonfinite


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


def unit_scales(norms: Tensor | Sequence[float], scope: str = "global", eps: float = DEFAULT_EPS) -> list[float]:
    """The multipliers that turn each tensor into (its part of) the unit vector."""
    check_scope(scope)
    check_eps(eps)
    vals = norms.tolist() if isinstance(norms, Tensor) else list(norms)
    return _scales([float(v) for v in vals], scope, eps)


def scale_(tensors: Sequence[Tensor], scales: Sequence[float]) -> None:
    """``t *= s`` in place for each pair, rounding once.

    float32/float64 tensors with a scale inside ``[1e-20, 1e20]`` (or 0) are multiplied
    directly (one ``torch._foreach_mul_`` when possible); fp16/bf16 are scaled in float32,
    and extreme scales in float64, then rounded once to the tensor's dtype. The building
    block of :func:`unit_` for callers that computed the norms themselves (the DDP hook)."""
    ts = _as_list(tensors)
    ss = [float(s) for s in scales]
    if len(ss) != len(ts):
        raise ValueError(f"got {len(ss)} scales for {len(ts)} tensors; pass one scale per tensor")
    fast_t, fast_s = [], []
    for t, s in zip(ts, ss):
        if t.dtype in (torch.float32, torch.float64) and _safe(s):
            fast_t.append(t)
            fast_s.append(s)
        else:
            t.copy_(_scaled(t, s))
    if not fast_t:
        return
    if len({t.device for t in fast_t}) == 1:
        if len(set(fast_s)) == 1:
            torch._foreach_mul_(fast_t, fast_s[0])
        else:
            torch._foreach_mul_(fast_t, fast_s)
    else:
        for t, s in zip(fast_t, fast_s):
            t.mul_(s)


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


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` as a float if it is a finite number >= 0, else a ValueError naming it and the fix."""
    if isinstance(gamma, bool) or not (isinstance(gamma, (int, float)) and 0.0 <= gamma < math.inf):
        raise ValueError(f"Invalid gamma={gamma!r}; must be a finite number >= 0 "
                         "(0: unit vectors; > 0: automatic clipping g / (||g|| + gamma), e.g. 0.01)")
    return float(gamma)


def batched_unit(
    tensors: Sequence[Tensor],
    *,
    scope: str = "global",
    eps: float = DEFAULT_EPS,
    batch_dims: int = 1,
    gamma: float = 0.0,
) -> tuple[list[Tensor], Tensor]:
    r"""Unit vectors of B stacked gradients at once; returns ``(units, norms)``.

    Each tensor's first ``batch_dims`` dimensions index independent gradients (all tensors
    share that batch shape); the rest is one parameter tensor's shape. For each batch index
    ``b`` this is :func:`unit` of ``[t[b] for t in tensors]``:

    * ``scope="global"``: ``u_i[b] = t_i[b] / (max(‖t[b]‖, eps) + gamma)`` with the norm over all
      tensors; ``norms`` has the batch shape;
    * ``scope="layer"``: ``u_i[b] = t_i[b] / (max(‖t_i[b]‖, eps) + gamma)``; ``norms`` has shape
      ``batch_shape + (L,)`` with ``L = len(tensors)``.

    ``gamma = 0`` (default) gives unit vectors (norm 1; below ``eps`` the norm is < 1, a zero
    gradient stays zero). ``gamma > 0`` gives Automatic Clipping's ``g / (‖g‖ + gamma)`` (Bu et
    al., 2023): norm < 1, so the sensitivity is the same as the unit vector's.

    Numerics as :func:`unit`: norms are taken on rows scaled by an exact power of two and
    combined in float64 (no overflow for entries up to the dtype's maximum, no underflow down
    to its smallest normal number), half-precision inputs are divided in float32 and rounded
    once, units keep each input's dtype. ``norms`` is float32 (float64 if an input is float64).
    The division happens in float32 for float32 and half inputs, so a norm beyond float32's
    range (entries within ~sqrt(numel) of its maximum, 3.4e38) needs float64 inputs.
    Differentiable (the attacks backpropagate through it), no host synchronisation, and *no
    NaN check*: a non-finite row gives a non-finite norm and non-finite units, so check
    ``torch.isfinite(norms)`` where that matters.

    Example (per-example unit gradients from ``torch.func``)::

        units, norms = ssgd.batched_unit([g[n] for n in names], scope="layer")
    """
    check_scope(scope)
    eps = check_eps(eps)
    gamma = check_gamma(gamma)
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"Invalid batch_dims={batch_dims!r}; must be an int >= 0 (the number of leading "
                         "dimensions that index independent gradients)")
    ts = _as_list(tensors)
    if not ts:
        raise ValueError("batched_unit needs at least one tensor")
    for i, t in enumerate(ts):
        if t.ndim < batch_dims:
            raise ValueError(f"tensor at position {i} has {t.ndim} dims, fewer than batch_dims={batch_dims}")
    batch_shape = ts[0].shape[:batch_dims]
    for i, t in enumerate(ts):
        if t.shape[:batch_dims] != batch_shape:
            raise ValueError(f"tensor at position {i} has batch shape {tuple(t.shape[:batch_dims])}, tensor 0 has "
                             f"{tuple(batch_shape)}; every tensor must share its first batch_dims={batch_dims} dims")
    out_dtype = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    per = torch.stack([_safe_rows_norm(t.reshape(*batch_shape, -1)) for t in ts], dim=-1)  # batch + (L,)
    norms = _safe_hypot(per) if scope == "global" else per
    denom = norms.clamp_min(eps)
    if gamma:
        denom = denom + gamma
    units = []
    for j, t in enumerate(ts):
        d = denom if scope == "global" else denom[..., j]
        d = d.reshape(*batch_shape, *([1] * (t.ndim - batch_dims)))
        if t.dtype == torch.float64:
            units.append(t / d)
        else:  # float32 arithmetic, rounded once to the input's dtype
            units.append((t.to(torch.float32) / d.to(torch.float32)).to(t.dtype))
    return units, norms.to(out_dtype)
