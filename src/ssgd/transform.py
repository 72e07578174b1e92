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

* norms are accumulated in float32 whatever the gradient dtype, so an fp16/bf16
  gradient whose sum of squares overflows fp16 still normalises correctly; a
  float32 norm that overflows although every entry is finite is recomputed in
  float64 (gradients of order 1e30 normalise exactly);
* a zero gradient stays zero (``0 / eps``): no NaN, no warning;
* a gradient smaller than ``eps`` in norm is divided by ``eps``, not by its norm
  (its image has norm < 1) -- the same convention as optax's
  ``normalize_by_update_norm``;
* a non-finite gradient raises :class:`NonFiniteGradientError`, naming the
  tensor, before anything is modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_EPS",
    "SCOPES",
    "NonFiniteGradientError",
    "check_scope",
    "grad_norms",
    "unit",
    "unit_",
    "unit_scales",
]

DEFAULT_EPS = 1e-12
SCOPES = ("global", "layer")

# Scales outside this range lose precision when applied as a float32 multiplier;
# such tensors are scaled in float64 instead (only reachable with |g| ~ 1e30).
_SAFE_SCALE = (1e-30, 1e30)


class NonFiniteGradientError(FloatingPointError):
    """A gradient contains NaN or +-inf. ``index`` is its position in the list."""

    def __init__(self, index: int, name: str | None = None, shape: tuple[int, ...] | None = None):
        self.index = index
        self.name = name
        what = f"parameter {name!r}" if name else f"tensor #{index}"
        shape_txt = f" (shape {tuple(shape)})" if shape is not None else ""
        super().__init__(
            f"non-finite gradient (NaN or inf) in {what}{shape_txt}; SSGD cannot normalise it. "
            "Lower the learning rate, check the loss for NaN, or pass nonfinite='skip' to skip such steps."
        )


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"Invalid scope: {scope!r}; expected one of {SCOPES}")
    return scope


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        return [tensors]
    out = list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise TypeError(f"expected tensors, got {type(t).__name__} at position {i}")
        if t.is_sparse:
            raise ValueError(
                f"sparse gradient at position {i}: SSGD does not support sparse gradients; "
                "use a dense embedding (sparse=False) for SSGD-trained parameters"
            )
    return out


def grad_norms(tensors: Sequence[Tensor], names: Sequence[str] | None = None) -> Tensor:
    """Per-tensor L2 norms as a float64 vector (on the first tensor's device).

    Computed in float32 (float64 for float64 input); a norm that overflowed although its
    tensor is finite is recomputed in float64. Raises :class:`NonFiniteGradientError`
    if a tensor holds NaN/inf. One host synchronisation.
    """
    if len(tensors) == 0:
        return torch.zeros(0, dtype=torch.float64)
    dev = tensors[0].device
    acc = [torch.float64 if t.dtype == torch.float64 else torch.float32 for t in tensors]
    if all(a == torch.float32 for a in acc) and all(t.device == dev for t in tensors):
        norms32 = torch._foreach_norm(list(tensors), 2, dtype=torch.float32)
    else:
        norms32 = [torch.linalg.vector_norm(t, dtype=a) for t, a in zip(tensors, acc)]
    norms = torch.stack([n.to(device=dev, dtype=torch.float64) for n in norms32])
    if bool(torch.isfinite(norms).all()):
        return norms
    # slow path: find the culprit or recompute overflowed norms in float64
    for i in torch.nonzero(~torch.isfinite(norms)).flatten().tolist():
        t = tensors[i]
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteGradientError(i, names[i] if names else None, tuple(t.shape))
        norms[i] = torch.linalg.vector_norm(t, dtype=torch.float64).to(dev)
    return norms


def unit_scales(norms: Tensor, scope: str = "global", eps: float = DEFAULT_EPS) -> list[float]:
    """The multipliers that turn each tensor into (its part of) the unit vector."""
    check_scope(scope)
    if eps <= 0:
        raise ValueError(f"Invalid eps: {eps}; must be > 0")
    if norms.numel() == 0:
        return []
    if scope == "global":
        total = float(torch.linalg.vector_norm(norms))
        return [1.0 / max(total, eps)] * norms.numel()
    return [1.0 / max(n, eps) for n in norms.tolist()]


def _scale_(t: Tensor, s: float) -> None:
    if t.dtype in (torch.float16, torch.bfloat16) or not (_SAFE_SCALE[0] < s < _SAFE_SCALE[1]):
        hi = torch.float64 if not (_SAFE_SCALE[0] < s < _SAFE_SCALE[1]) else torch.float32
        t.copy_(t.to(hi) * s)
    else:
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
    norm per tensor (``scope="layer"``), measured *before* normalisation. ``None``
    entries are not allowed; filter parameters without ``.grad`` first.

    Example::

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = ssgd.unit_(grads)            # grads now have joint norm 1
    """
    check_scope(scope)
    ts = _as_list(tensors)
    norms = grad_norms(ts, names)
    scales = unit_scales(norms, scope, eps)
    fast = [i for i, (t, s) in enumerate(zip(ts, scales)) if t.dtype in (torch.float32, torch.float64) and _SAFE_SCALE[0] < s < _SAFE_SCALE[1]]
    fast_set = set(fast)
    if fast:
        if scope == "global":
            torch._foreach_mul_([ts[i] for i in fast], scales[0])
        else:
            torch._foreach_mul_([ts[i] for i in fast], [scales[i] for i in fast])
    for i, (t, s) in enumerate(zip(ts, scales)):
        if i not in fast_set:
            _scale_(t, s)
    if scope == "global":
        return torch.linalg.vector_norm(norms) if norms.numel() else torch.zeros((), dtype=torch.float64)
    return norms


def unit(
    tensors: Tensor | Iterable[Tensor],
    scope: str = "global",
    eps: float = DEFAULT_EPS,
    *,
    names: Sequence[str] | None = None,
) -> list[Tensor]:
    """Out-of-place :func:`unit_`: return new unit-vector tensors, inputs untouched.

    Differentiable when the inputs require grad (used by SSGD-aware attacks, which
    push their dummy gradient through the same transform)."""
    check_scope(scope)
    ts = _as_list(tensors)
    if any(t.requires_grad for t in ts):
        # autograd path: plain differentiable ops, norms accumulated in float32
        norms = [torch.linalg.vector_norm(t, dtype=torch.float32) for t in ts]
        if scope == "global":
            total = torch.linalg.vector_norm(torch.stack(norms)).clamp_min(eps)
            return [(t / total).to(t.dtype) for t in ts]
        return [(t / n.clamp_min(eps)).to(t.dtype) for t, n in zip(ts, norms)]
    out = [t.detach().clone() for t in ts]
    unit_(out, scope, eps, names=names)
    return out
