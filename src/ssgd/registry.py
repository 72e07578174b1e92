"""A registry of named, parameterised parts built from spec strings (``'name:key=val,...'``).

The one home of what the defence and attack registries share (core layer, no ML logic): register a
dataclass by its ``name``, list the names, build one from a spec (:func:`ssgd.specs.parse_spec`, unknown
names list the known ones, parameters checked and cast by :func:`ssgd.specs.coerce_params`, then the
object's own ``validate()``), and write an object back as its spec (:func:`spec_of`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Generic, TypeVar

from .specs import coerce_params, parse_spec

__all__ = ["Registry", "spec_of"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named classes of one kind (``kind`` names it in errors, e.g. ``"attack"``)."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or kind + "s"
        self.classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.name``."""
        self.classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self.classes)

    def build(self, spec: str, **overrides: Any) -> T:
        """The object named by ``spec``; ``overrides`` (not None) win over the spec's parameters."""
        name, params = parse_spec(spec)
        if name not in self.classes:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}")
        cls = self.classes[name]
        params.update({k: v for k, v in overrides.items() if v is not None})
        obj = cls(**coerce_params(cls, params, f"{self.kind} {name!r}"))
        validate = getattr(obj, "validate", None)
        if validate is not None:
            validate()
        return obj


def spec_of(obj: Any) -> str:
    """``'name:key=val,...'`` of a registered dataclass instance (floats as ``%g``)."""
    vals = [f"{f.name}={getattr(obj, f.name):g}" if isinstance(getattr(obj, f.name), float)
            else f"{f.name}={getattr(obj, f.name)}" for f in fields(obj) if f.init]
    return obj.name + (":" + ",".join(vals) if vals else "")
