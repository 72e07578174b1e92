"""``'name:key=val,key=val'`` strings: how defences, attacks (and other registered parts) are
named on the command line.

A neutral, core-level text helper with no ML logic: :func:`parse_spec` splits a spec,
:func:`coerce_params` checks its keys against a dataclass's fields and casts the values.
Both registries (:mod:`ssgd.defenses`, :mod:`ssgd.attacks`) build on it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

__all__ = ["parse_spec", "coerce_params", "format_spec"]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``'noise:sigma=0.01,seed=3'`` into ``('noise', {'sigma': '0.01', 'seed': '3'})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty spec {spec!r}; write 'name' or 'name:key=value,...'")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, val = item.partition("=")
            if not eq or not key.strip() or not val.strip():
                raise ValueError(f"bad parameter {item!r} in {spec!r}; write key=value pairs separated by commas, "
                                 "e.g. 'noise:sigma=0.01'")
            if key.strip() in params:
                raise ValueError(f"parameter {key.strip()!r} given twice in {spec!r}")
            params[key.strip()] = val.strip()
    return name.strip(), params


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The inverse of :func:`parse_spec`: ``('noise', {'sigma': 0.01})`` -> ``'noise:sigma=0.01'``."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _cast(kind: str, key: str, raw: Any, owner: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if kind == "bool":
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise ValueError(f"{owner}: parameter {key}={raw!r} is not a valid {kind}") from None


def coerce_params(cls: type, params: dict[str, Any], owner: str) -> dict[str, Any]:
    """Check ``params`` against the dataclass ``cls``'s fields and cast strings to the field types."""
    known = {f.name: f for f in fields(cls) if f.init}
    out = {}
    for key, raw in params.items():
        if key not in known:
            raise ValueError(f"{owner}: unknown parameter {key!r}; known parameters: {sorted(known) or 'none'}")
        t = known[key].type
        kind = t if isinstance(t, str) else getattr(t, "__name__", "str")
        out[key] = _cast(kind, key, raw, owner)
    return out
