"""The defence interface and its registry.

A defence maps the gradient a node would share to what it actually shares:
``defense(grads: list[Tensor]) -> list[Tensor]`` (``model.parameters()`` order). Some
defences need the node's data, not only its summed gradient -- SSGD(m) sums the unit
vectors of m sub-batch gradients, DP-SGD clips per-example gradients -- so every defence
also offers :meth:`Defense.shared_update` ``(model, x, y)`` which computes the shared
tensors from the batch; for the others it is ``defense(gradient of the batch)``.

Defences are selected by spec strings ``'name'`` or ``'name:key=val,...'``
(:func:`get_defense`), e.g. ``'ssgd-shards:m=4'``, ``'dp:clip=1,sigma=1'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..registry import Registry, spec_of

__all__ = ["DEFENSES", "Defense", "get_defense", "list_defenses", "register_defense", "batch_gradient"]

_REGISTRY: Registry["Defense"] = Registry("defence", "defences")
DEFENSES: dict[str, type["Defense"]] = _REGISTRY.classes
register_defense = _REGISTRY.register
list_defenses = _REGISTRY.names


def batch_gradient(model: nn.Module, x: Tensor, y: Tensor,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> list[Tensor]:
    """The plain gradient of the mean loss over the batch, in ``model.parameters()`` order."""
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss_fn(model(x), y), params)
    return [g.detach() for g in grads]


@dataclass
class Defense:
    """Base class. Subclasses set ``name``, ``keeps_sign`` and implement :meth:`apply`."""

    name: ClassVar[str] = ""
    keeps_sign: ClassVar[bool] = False  # does every shared entry keep the sign of the raw gradient (or become 0)?
    help: ClassVar[str] = ""

    def apply(self, grads: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
        raise NotImplementedError

    def __call__(self, grads: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
        grads = list(grads)
        if not grads:
            raise ValueError(f"defence {self.spec}: empty gradient list")
        with torch.no_grad():
            return self.apply([g.detach() for g in grads], generator)

    def shared_update(self, model: nn.Module, x: Tensor, y: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                      generator: torch.Generator | None = None) -> list[Tensor]:
        """What a node holding batch ``(x, y)`` shares under this defence."""
        return self(batch_gradient(model, x, y, loss_fn), generator)

    @property
    def spec(self) -> str:
        return spec_of(self)

    def __str__(self) -> str:
        return self.spec


def get_defense(spec: "str | Defense") -> Defense:
    """Build a defence from ``'name'`` or ``'name:key=val,...'``; unknown names list the known ones."""
    if isinstance(spec, Defense):
        return spec
    return _REGISTRY.build(spec)
