"""Server-side checks of one incoming SSGD update, before it can touch the global model.

An update is accepted only when it is exactly what an honest SSGD node can send: one
``ArrayRecord`` whose names are the model's trainable parameters, with their shapes and
dtype, every entry finite, and a norm that a unit vector can have -- ``|u| ~ 1`` (or
exactly 0: an all-zero gradient stays zero under SSGD) when ``strict``, ``|u| <= 1 + tol``
otherwise. With ``scope="layer"`` the norm test applies to each tensor on its own.

The check never raises on a malformed update: it returns a :class:`Verdict` whose
``reason`` names the first problem found, so that one misbehaving node cannot crash the
server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ...transform import check_scope, grad_norms

__all__ = ["UpdateSpec", "Verdict", "validate_update", "arrays_from_record", "record_from_arrays"]


@dataclass(frozen=True)
class UpdateSpec:
    """What an update must look like: ordered names, shapes and the numpy dtype name."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    scope: str = "global"
    strict: bool = True
    tol: float = 1e-3
    #: when set (global scope only), replaces the unit-norm test by ``|u| <= norm_bound``
    #: (e.g. for locally noised unit vectors, see ssgd.distributed.flower.privacy)
    norm_bound: float | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"UpdateSpec: {len(self.names)} names but {len(self.shapes)} shapes")
        check_scope(self.scope)
        if not 0 < self.tol < 1:
            raise ValueError(f"Invalid norm tolerance tol={self.tol}; must be in (0, 1), e.g. 1e-3")
        if self.norm_bound is not None and (not math.isfinite(self.norm_bound) or self.norm_bound <= 0
                                            or self.scope != "global"):
            raise ValueError(f"Invalid norm_bound={self.norm_bound!r}; must be a finite float > 0, scope='global'")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **kw) -> "UpdateSpec":
        dtypes = {str(np.asarray(a).dtype) for a in arrays.values()}
        if len(dtypes) > 1:
            raise ValueError(f"UpdateSpec: the reference arrays mix dtypes {sorted(dtypes)}; cast them to one float dtype")
        dtype = dtypes.pop() if dtypes else "float32"
        return cls(tuple(arrays), tuple(tuple(np.shape(a)) for a in arrays.values()), dtype=dtype, **kw)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    norm: float = float("nan")  # the update's global L2 norm (float64), when it could be computed


def arrays_from_record(record) -> dict[str, np.ndarray]:
    """An ``ArrayRecord`` as ``{name: numpy array}`` (raises on undecodable entries)."""
    return {k: np.asarray(v.numpy()) for k, v in record.items()}


def record_from_arrays(arrays: Mapping[str, np.ndarray]):
    """``{name: numpy array}`` as a Flower ``ArrayRecord`` (order kept)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _norm_ok(n: float, spec: UpdateSpec) -> bool:
    if n == 0.0:
        return True
    if spec.norm_bound is not None:
        return n <= spec.norm_bound
    if spec.strict:
        return abs(n - 1.0) <= spec.tol
    return n <= 1.0 + spec.tol


def validate_update(content, spec: UpdateSpec) -> tuple[Verdict, dict[str, np.ndarray] | None]:
    """Check a reply's ``RecordDict`` (or a plain ``{name: array}`` mapping) against ``spec``.

    Returns ``(verdict, arrays)``; ``arrays`` (float64-free, the spec's dtype) only when accepted.
    """
    try:
        arrays_records = getattr(content, "array_records", None)
        if arrays_records is not None:
            if len(arrays_records) != 1:
                return Verdict(False, f"expected exactly one ArrayRecord in the reply, found {len(arrays_records)}"), None
            record = next(iter(arrays_records.values()))
            meta = {k: (str(a.dtype), tuple(int(s) for s in a.shape), a.stype) for k, a in record.items()}
        else:
            record = content
            meta = {k: (str(np.asarray(a).dtype), tuple(np.shape(a)), "numpy.ndarray") for k, a in record.items()}
        names = tuple(meta)
        if set(names) != set(spec.names):
            missing = sorted(set(spec.names) - set(names))[:3]
            extra = sorted(set(names) - set(spec.names))[:3]
            return Verdict(False, f"parameter names do not match the model (missing {missing}, unexpected {extra})"), None
        for name, shape in zip(spec.names, spec.shapes):
            dtype, got_shape, stype = meta[name]
            if got_shape != tuple(shape):
                return Verdict(False, f"shape of {name!r} is {got_shape}, the model has {tuple(shape)}"), None
            if dtype != spec.dtype:
                return Verdict(False, f"dtype of {name!r} is {dtype}, expected {spec.dtype}"), None
            if stype != "numpy.ndarray":
                return Verdict(False, f"{name!r} has serialisation type {stype!r}, expected 'numpy.ndarray'"), None
        arrays = {k: (np.asarray(record[k].numpy()) if arrays_records is not None else np.asarray(record[k]))
                  for k in spec.names}
        for name, a in arrays.items():
            if a.shape != dict(zip(spec.names, spec.shapes))[name] or str(a.dtype) != spec.dtype:
                return Verdict(False, f"{name!r} decodes to {a.dtype}{a.shape}, not its declared metadata"), None
            if not np.isfinite(a).all():
                return Verdict(False, f"non-finite values (NaN/inf) in {name!r}"), None
        # the library's one norm rule (ssgd.transform.grad_norms), as on the node
        per = grad_norms([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays.values()]).tolist()
        sq = [v * v for v in per]
        total = math.sqrt(sum(sq))
        if spec.scope == "global":
            if not _norm_ok(total, spec):
                want = "1" if spec.strict else "<= 1"
                if spec.norm_bound is not None:
                    return Verdict(False, f"update norm {total:.6g} exceeds the bound {spec.norm_bound:.6g}", total), None
                return Verdict(False, f"update norm {total:.6g} is not that of a unit vector (want {want} +- {spec.tol})",
                               total), None
        else:
            for name, s in zip(spec.names, sq):
                if not _norm_ok(math.sqrt(s), spec):
                    return Verdict(False, f"layer {name!r} has norm {math.sqrt(s):.6g}; scope='layer' needs each "
                                          f"tensor to be a unit vector (+- {spec.tol})", total), None
        return Verdict(True, "", total), arrays
    except Exception as e:  # a malformed payload must never crash the server
        return Verdict(False, f"undecodable update ({type(e).__name__}: {e})"), None
