"""Private numerics of the SSGD core: norms, scales and the corners they handle.

One home for what :mod:`ssgd.transform`, :mod:`ssgd.optim`, :mod:`ssgd.shards` and
:mod:`ssgd.distributed` share (the safe-scale range, the underflow threshold, exact norms,
device-side norms). Other packages use the public API (``ssgd.unit_``, ``ssgd.batched_unit``,
``ssgd.grad_norms``, ``ssgd.scale_``), never this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

# Scales (and folded lr*scale multipliers) inside this range are applied directly in
# the tensor's float32/float64 dtype; outside it they go through float64.
SAFE_SCALE = (1e-20, 1e20)
# float32 sums of squares underflow for entries below ~1e-19: norms below this are recomputed.
TINY_NORM = 2.0**-60


def as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
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


def acc_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def exact_norm(t: Tensor) -> float:
    """L2 norm of a finite tensor, in float64 with rescaling (no overflow, no underflow)."""
    amax = float(torch.linalg.vector_norm(t, ord=float("inf"), dtype=torch.float64))
    if amax == 0.0:
        return 0.0
    return amax * float(torch.linalg.vector_norm(t.to(torch.float64) / amax))


_BLOCK = 4096


def foreach_norms(ts: list[Tensor], acc: torch.dtype | None) -> list[Tensor]:
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


def norm_list(tensors: Sequence[Tensor], known: Sequence[Tensor | None] | None = None) -> list[float]:
    """Per-tensor L2 norms as Python floats; ``nan`` for a tensor holding NaN/inf.

    Fast path: one ``_foreach_norm`` per dtype class and one host sync. ``known[i]``, when
    given and not None, is tensor i's fast norm computed earlier (by a norm hook, see
    :func:`fast_norm`); only the others are computed here.
    """
    if known is not None and any(k is not None for k in known):
        missing = [i for i, k in enumerate(known) if k is None]
        fresh = iter(foreach_norms_by_dtype([tensors[i] for i in missing]) if missing else [])
        ns = [k if k is not None else next(fresh) for k in known]
        try:
            out = torch.stack([n.to(torch.float64) for n in ns]).tolist()
        except RuntimeError:  # norms on several devices
            out = [float(n) for n in ns]
        return _fix_corners(tensors, out)
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) == 1 and dtypes <= {torch.float32, torch.float64}:
        parts = [(list(range(len(tensors))), foreach_norms(list(tensors), None))]
    else:  # float64 accumulates in float64, everything else in float32
        wide = [i for i, t in enumerate(tensors) if t.dtype == torch.float64]
        narrow = [i for i, t in enumerate(tensors) if t.dtype != torch.float64]
        parts = [(idx, foreach_norms([tensors[i] for i in idx], acc))
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
    return _fix_corners(tensors, out)


def foreach_norms_by_dtype(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Fast per-tensor norms (float32 accumulation; float64 for float64), as :func:`norm_list` takes them."""
    out: list[Tensor | None] = [None] * len(tensors)
    for acc in (torch.float64, torch.float32):
        idx = [i for i, t in enumerate(tensors) if (t.dtype == torch.float64) == (acc == torch.float64)]
        if idx:
            for i, n in zip(idx, foreach_norms([tensors[i] for i in idx], acc)):
                out[i] = n
    return out  # type: ignore[return-value]


def fast_norm(t: Tensor) -> Tensor:
    """One tensor's fast norm (0-dim, on its device, no host read): what a norm hook caches.

    The same numerics as :func:`foreach_norms_by_dtype` (blocks of 4096 for large float32 CPU
    tensors), with less Python overhead for the small ones."""
    if t.numel() < 4 * _BLOCK or t.device.type != "cpu" or t.dtype == torch.float64:
        return torch.linalg.vector_norm(t, dtype=None if t.dtype in (torch.float32, torch.float64) else torch.float32)
    return foreach_norms_by_dtype([t])[0]


def _fix_corners(tensors: Sequence[Tensor], out: list[float]) -> list[float]:
    if sum(out) < math.inf and min(out) >= TINY_NORM:  # all finite, none tiny (NaN fails both)
        return out
    for i, v in enumerate(out):
        if math.isfinite(v) and v >= TINY_NORM:
            continue
        t = tensors[i]
        if not math.isfinite(v) and not bool(torch.isfinite(t).all()):
            out[i] = math.nan
        else:  # overflow or possible underflow of the accumulation: recompute exactly
            out[i] = exact_norm(t)
    return out


def scales(norms: Sequence[float], scope: str, eps: float) -> list[float]:
    if not norms:
        return []
    if scope == "global":
        return [1.0 / max(math.hypot(*norms), eps)] * len(norms)
    return [1.0 / max(n, eps) for n in norms]


def safe(s: float) -> bool:
    return SAFE_SCALE[0] < abs(s) < SAFE_SCALE[1] or s == 0.0


def scaled(g: Tensor, s: float, dtype: torch.dtype | None = None) -> Tensor:
    """``g * s`` as a new tensor of ``dtype`` (default ``g.dtype``), rounded once.

    fp16/bf16 are multiplied in float32, scales outside the safe range in float64."""
    dtype = g.dtype if dtype is None else dtype
    if safe(s):
        if g.dtype in (torch.float32, torch.float64) and g.dtype == dtype:
            return g * s
        hi = torch.float64 if torch.float64 in (g.dtype, dtype) else torch.float32
        return (g.to(hi) * s).to(dtype)
    return (g.to(torch.float64) * s).to(dtype)


def safe_rows_norm(flat: Tensor) -> Tensor:
    """L2 norm over the last dim of ``flat``, as float64, without overflow or underflow.

    The rows are scaled by a power of two near their largest entry (exact in binary floating
    point, no rounding) before their squares are summed in float32 (float64 for float64 input),
    then scaled back in float64: entries up to the dtype's maximum and down to its smallest
    normal number give the norm to rounding error. Differentiable (the power of two is a
    constant for autograd)."""
    acc = acc_dtype(flat)
    with torch.no_grad():
        if flat.shape[-1] == 0:
            amax = flat.new_zeros(flat.shape[:-1], dtype=acc)
        else:
            lo, hi = torch.aminmax(flat.detach().to(acc) if flat.dtype not in (torch.float32, torch.float64)
                                   else flat.detach(), dim=-1)
            amax = torch.maximum(-lo, hi).to(acc)
        # exponent k with amax = m * 2**k, 0.5 <= m < 1; zero and non-finite rows are not scaled
        k = torch.frexp(torch.where(torch.isfinite(amax) & (amax > 0), amax, torch.ones_like(amax))).exponent
    scaled = torch.ldexp(flat.to(acc) if flat.dtype != acc else flat, -k.unsqueeze(-1).to(acc))
    n = torch.linalg.vector_norm(scaled, dim=-1)
    return torch.ldexp(n.to(torch.float64), k.to(torch.float64))


def safe_hypot(norms: Tensor) -> Tensor:
    """``sqrt(sum(norms**2, -1))`` of float64 norms without overflow (scaled by the largest)."""
    with torch.no_grad():
        m = norms.detach().amax(dim=-1, keepdim=True) if norms.shape[-1] else norms.new_zeros(
            (*norms.shape[:-1], 1))
        m = torch.where(torch.isfinite(m) & (m > 0), m, torch.ones_like(m))
    return m.squeeze(-1) * torch.linalg.vector_norm(norms / m, dim=-1)




def device_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor L2 norms as a float64 vector, computed without any host read.

    Exact in range: float16 is accumulated in float32 (its squares cannot overflow or
    underflow there), float32/bfloat16 in float64 (likewise), float64 by
    :func:`safe_rows_norm` (scaled by a power of two). NaN/inf entries give a non-finite
    norm. On CPU the float64 accumulation of float32 data is slower than a float32 one
    (the price of exactness without a host branch)."""
    ts = list(tensors)
    out: list[Tensor | None] = [None] * len(ts)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(ts):
        groups.setdefault((t.device, t.dtype), []).append(i)
    dev = ts[0].device
    for (d, dtype), idx in groups.items():
        sub = [ts[i] for i in idx]
        if dtype == torch.float64:
            ns = [safe_rows_norm(t.reshape(1, -1))[0] for t in sub]
        else:
            acc = torch.float32 if dtype == torch.float16 else torch.float64
            ns = list(torch._foreach_norm(sub, 2, dtype=acc))
        for i, n in zip(idx, ns):
            out[i] = n.to(device=dev, dtype=torch.float64)
    return torch.stack(out)  # type: ignore[arg-type]
