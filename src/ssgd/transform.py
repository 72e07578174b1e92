r"""The SSGD gradient transform: replace a gradient by its unit vector. The one home of the rule.

Given gradient tensors :math:`g_1, \dots, g_k` (one per parameter tensor):

``scope="global"``
    :math:`u_i = g_i / \max(\lVert g \rVert_2, \epsilon)` with
    :math:`\lVert g \rVert_2 = \sqrt{\sum_i \lVert g_i \rVert_2^2}` over *all*
    tensors together, so that :math:`\lVert u \rVert_2 = 1`.

``scope="layer"``
    :math:`u_i = g_i / \max(\lVert g_i \rVert_2, \epsilon)`: each tensor is
    its own unit vector.

Every caller computes it here: :class:`ssgd.SSGD` (:func:`grad_norms` and
:func:`unit_denominator`, the division folded into torch's fused SGD kernel),
:class:`ssgd.SSGDWrapper`, the DDP hook and :func:`ssgd.distributed.allreduce_unit_`
(:func:`unit_`), SSGD(m) and per-example privacy (:func:`batched_unit`).

Numerics, as :func:`torch.nn.utils.clip_grad_norm_`:

* per-tensor norms come from ``torch._foreach_norm`` (one kernel per device and dtype),
  accumulated in float32 for float16/bfloat16/float32 and in float64 for float64; the
  joint norm is the norm of those norms;
* a norm that overflows that accumulation (float32 entries beyond ~1e19) is non-finite, and
  is handled like a NaN/inf gradient (:class:`NonFiniteGradientError`, or the optimizer's
  ``nonfinite`` policy);
* a zero gradient stays zero (``0 / eps``); a gradient smaller than ``eps`` in norm is divided
  by ``eps`` (its image has norm < 1). float32 squares underflow below ~1e-19, which matters
  only if ``eps`` is smaller still (the default 1e-12 is not);
* float16/bfloat16 tensors are divided in float32 and rounded once;
* on the CPU, torch's float32 reduction of a tensor with millions of entries carries a
  relative error of about 1e-5 (1e-3 at 25M entries): the image's norm is 1 to that precision.

:func:`unit_`/:func:`unit` read the norms on the host once (to raise, naming the tensor,
before anything is modified); :func:`grad_norms`, :func:`unit_denominator` and
:func:`batched_unit` never read the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

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
    "divide_",
    "grad_norms",
    "group_by_device_and_dtype",
    "nonfinite_positions",
    "unit",
    "unit_",
    "unit_denominator",
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


def check_nonnegative(name: str, value: Any, hint: str = "") -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (not a bool), else a ValueError naming
    ``name`` and the fix (``hint``). The one rule for gamma, noise multipliers and other such scalars."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value < math.inf):
        raise ValueError(f"Invalid {name}={value!r}; must be a finite number >= 0" + (f" ({hint})" if hint else ""))
    return float(value)


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` as a float if it is a finite number >= 0, else a ValueError naming it and the fix."""
    return check_nonnegative("gamma", gamma, "0: unit vectors; > 0: automatic clipping g / (||g|| + gamma), e.g. 0.01")



def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    out = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise TypeError(f"expected tensors, got {type(t).__name__} at position {i}; "
                            "filter out parameters without .grad first (p.grad is None)")
        if t.layout != torch.strided:
            raise ValueError(f"sparse gradient ({t.layout}) at position {i}: SSGD does not support sparse gradients; "
                             "use a dense embedding (sparse=False) for SSGD-trained parameters")
        if not t.is_floating_point():
            raise TypeError(f"tensor at position {i} has dtype {t.dtype}; gradients must be floating point")
    return out


_WIDE = (torch.float32, torch.float64)  # accumulated in their own dtype; the rest in float32


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of a norm: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def group_by_device_and_dtype(ts: Sequence[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Positions of ``ts`` by (device, dtype), ascending: one multi-tensor kernel each (torch's
    own grouping, in C++, what its optimizers use)."""
    groups = _group_tensors_by_device_and_dtype([list(ts)], with_indices=True)
    return {key: idx for key, (_, idx) in groups.items()}


def grad_norms(tensors: Sequence[Tensor],
               groups: dict[tuple[torch.device, torch.dtype], list[int]] | None = None) -> Tensor:
    """Per-tensor L2 norms, a vector on the first tensor's device; no host read.

    float32 (float64 if a tensor is float64); one ``torch._foreach_norm`` per device and
    dtype (``groups``: :func:`group_by_device_and_dtype` of ``tensors``, if the caller has it).
    A tensor holding NaN/inf, or whose norm overflows, gets a non-finite norm."""
    ts = tensors if isinstance(tensors, list) else list(tensors)
    if not ts:
        return torch.zeros(0)
    buckets = group_by_device_and_dtype(ts) if groups is None else groups
    if len(buckets) == 1:  # the usual case: one device and dtype, the list as it is
        ((_, dtype),) = buckets
        return torch.stack(torch._foreach_norm(ts) if dtype in _WIDE else
                           torch._foreach_norm(ts, 2, dtype=torch.float32))
    dev = ts[0].device
    out = torch.float64 if any(dtype == torch.float64 for _, dtype in buckets) else torch.float32
    norms: list[Tensor] = [ts[0]] * len(ts)
    for (_, dtype), idx in buckets.items():
        part = torch._foreach_norm([ts[i] for i in idx], 2, dtype=None if dtype in _WIDE else torch.float32)
        for i, n in zip(idx, torch.stack(part).to(dev, out).unbind(0)):
            norms[i] = n
    return torch.stack(norms)


def unit_denominator(norms: Tensor, scope: str, eps: float) -> Tensor:
    r"""``max(‖g‖, eps)`` from per-tensor norms (last dim): one per row for ``scope="global"`` (the
    norm of all tensors together), one per tensor for ``"layer"``. ``u = g / unit_denominator(...)``."""
    n = torch.linalg.vector_norm(norms, dim=-1) if scope == "global" else norms
    return n.clamp_min(eps)


def nonfinite_positions(norms: Tensor, denom: Tensor) -> tuple[list[float], list[int]]:
    """The norms as floats (one host read) and the positions of the non-finite ones -- the largest
    norm's if only the joint norm (``denom``) overflowed. What raises, or skips, on the host."""
    vals = torch.cat([norms.reshape(-1), denom.reshape(-1)]).tolist()
    norms_f, rest = vals[:norms.numel()], vals[norms.numel():]
    bad = [i for i, n in enumerate(norms_f) if not math.isfinite(n)]
    if not bad and not all(math.isfinite(d) for d in rest):
        bad = [max(range(len(norms_f)), key=norms_f.__getitem__)]
    return norms_f, bad


def divide_(tensors: Sequence[Tensor], denom: Tensor) -> None:
    """``t /= d`` in place: ``denom`` is 0-dim (one for all) or one per tensor. float16/bfloat16 are
    divided in float32 and rounded once; the rest with one ``torch._foreach_div_`` per device and dtype."""
    ts = list(tensors)
    per = denom.unbind(0) if denom.ndim else None
    for (dev, dtype), idx in group_by_device_and_dtype(ts).items():
        group = [ts[i] for i in idx]
        if dtype in (torch.float32, torch.float64):
            if per is None:
                torch._foreach_div_(group, denom.to(dev, dtype))
            else:
                torch._foreach_div_(group, [per[i].to(dev, dtype) for i in idx])
            continue
        for i, t in zip(idx, group):
            t.copy_(t.float().div_((denom if per is None else per[i]).to(dev, torch.float32)))


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
    modified) if a tensor holds NaN/inf or its norm overflows; ``names`` (one per tensor)
    make that error name the parameter. One host read (to raise before modifying).

    Example::

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = ssgd.unit_(grads)            # grads now have joint norm 1
    """
    check_scope(scope)
    check_eps(eps)
    ts = _as_list(tensors)
    if names is not None and len(names) != len(ts):
        raise ValueError(f"got {len(names)} names for {len(ts)} tensors; pass one name per tensor")
    if not ts:
        return torch.zeros((), dtype=torch.float64) if scope == "global" else torch.zeros(0, dtype=torch.float64)
    with torch.no_grad():
        norms = grad_norms(ts)
        denom = unit_denominator(norms, scope, eps)
        _, bad = nonfinite_positions(norms, denom)
        if bad:
            i = bad[0]
            raise NonFiniteGradientError(i, names[i] if names else None, tuple(ts[i].shape))
        divide_(ts, denom)
    return (torch.linalg.vector_norm(norms) if scope == "global" else norms).double()


def unit(
    tensors: Tensor | Iterable[Tensor],
    scope: str = "global",
    eps: float = DEFAULT_EPS,
    *,
    names: Sequence[str] | None = None,
) -> list[Tensor]:
    """Out-of-place :func:`unit_`: return new unit-vector tensors, inputs untouched.

    Differentiable when an input requires grad (used by SSGD-aware attacks, which push their
    dummy gradient through the same transform); that path does not check for NaN."""
    check_scope(scope)
    check_eps(eps)
    ts = _as_list(tensors)
    if not ts:
        return []
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        acc = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
        norms = torch.stack([torch.linalg.vector_norm(t, dtype=_acc(t.dtype)).to(acc) for t in ts])
        denom = unit_denominator(norms, scope, eps)
        return [(t.to(_acc(t.dtype)) / (denom if scope == "global" else denom[i])).to(t.dtype)
                for i, t in enumerate(ts)]
    out = [t.detach().clone() for t in ts]
    unit_(out, scope, eps, names=names)
    return out


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

    Numerics as :func:`unit_` (float32 accumulation, float64 for float64; half precision divided
    in float32 and rounded once; units keep each input's dtype). ``norms`` is float32 (float64 if
    an input is float64). Differentiable (the attacks backpropagate through it), no host
    synchronisation, and *no NaN check*: a non-finite or overflowing row gives a non-finite
    norm, so check ``torch.isfinite(norms)`` where that matters.

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
    out = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    per = torch.stack([torch.linalg.vector_norm(t.reshape(*batch_shape, -1), dim=-1, dtype=_acc(t.dtype)).to(out)
                       for t in ts], dim=-1)  # batch + (L,)
    denom = unit_denominator(per, scope, eps)
    if gamma:
        denom = denom + gamma
    units = []
    for j, t in enumerate(ts):
        d = denom if scope == "global" else denom[..., j]
        d = d.reshape(*batch_shape, *([1] * (t.ndim - batch_dims)))
        units.append((t.to(_acc(t.dtype)) / d.to(_acc(t.dtype))).to(t.dtype))
    norms = torch.linalg.vector_norm(per, dim=-1) if scope == "global" else per
    return units, norms
