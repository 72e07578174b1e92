"""The attack interface and its registry.

``attack.reconstruct(model, shared, meta) -> Reconstruction``: ``shared`` is the list of
shared tensors in ``model.parameters()`` order (whatever the defence let through), ``meta``
(:class:`AttackMeta`) says the data shape, batch size, number of classes and, when the
attacker knows them, the labels. :meth:`Attack.reconstruct_batch` runs many independent
targets at once (stacked, see :mod:`ssgd.attacks.engine`); ``reconstruct`` is the batch of one.

Attacks are selected by spec strings (:func:`get_attack`): ``'dlg'``,
``'inverting:iters=2000,restarts=4'``, ``'dlg-unit:scope=layer'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..registry import Registry, spec_of

__all__ = ["ATTACKS", "Attack", "AttackMeta", "Reconstruction", "get_attack", "list_attacks", "register_attack"]

_REGISTRY: Registry["Attack"] = Registry("attack")
ATTACKS: dict[str, type["Attack"]] = _REGISTRY.classes
register_attack = _REGISTRY.register
list_attacks = _REGISTRY.names


@dataclass
class AttackMeta:
    """What the attacker knows besides the shared tensors."""

    shape: tuple[int, int, int]
    batch_size: int
    num_classes: int
    labels: Tensor | None = None  # the true labels when the threat model grants them, else None
    seed: int = 0
    mean_image: Tensor | None = None  # the attacker's prior mean image (C, H, W), for init=mean
    public_images: Tensor | None = None  # public images of the same kind (N, C, H, W): the aware attacks' prior

    def validate(self) -> "AttackMeta":
        if len(tuple(self.shape)) != 3:
            raise ValueError(f"meta.shape must be (C, H, W), got {self.shape}")
        if self.batch_size < 1:
            raise ValueError(f"meta.batch_size={self.batch_size} must be >= 1")
        if self.num_classes < 2:
            raise ValueError(f"meta.num_classes={self.num_classes} must be >= 2")
        if self.labels is not None and self.labels.numel() != self.batch_size:
            raise ValueError(f"meta.labels has {self.labels.numel()} entries, batch_size is {self.batch_size}")
        if self.mean_image is not None and tuple(self.mean_image.shape) != tuple(self.shape):
            raise ValueError(f"meta.mean_image has shape {tuple(self.mean_image.shape)}, expected {tuple(self.shape)}")
        if self.public_images is not None and (self.public_images.ndim != 4 or self.public_images.shape[0] < 2
                                               or tuple(self.public_images.shape[1:]) != tuple(self.shape)):
            raise ValueError(f"meta.public_images has shape {tuple(self.public_images.shape)}, expected "
                             f"(N >= 2, {', '.join(map(str, self.shape))})")
        return self


@dataclass
class Reconstruction:
    """An attack's output for one target: ``images`` ``(B, C, H, W)`` (unordered w.r.t. the
    originals: score with :func:`ssgd.metrics.score_batch`), ``labels`` ``(B,)`` or None.

    Its budget: ``iterations`` actually run (per restart), ``restarts`` run (the best by the
    attack's own objective is returned, never by the ground truth) and the ``init`` used."""

    images: Tensor
    labels: Tensor | None
    loss: float
    seconds: float
    iterations: int = 0
    restarts: int = 1
    init: str = ""
    attack: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Attack:
    """Base class: subclasses set ``name`` and implement :meth:`_run` on stacked targets."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    progress: ClassVar[bool] = False

    def reconstruct(self, model: nn.Module, shared: list[Tensor], meta: AttackMeta) -> Reconstruction:
        return self.reconstruct_batch(model, [shared], [meta])[0]

    def reconstruct_batch(self, model: nn.Module, shared: list[list[Tensor]], metas: list[AttackMeta],
                          progress: bool = False) -> list[Reconstruction]:
        """Attack ``len(shared)`` independent targets at once (one stacked optimisation)."""
        if len(shared) != len(metas) or not shared:
            raise ValueError(f"need one meta per shared update: got {len(shared)} updates and {len(metas)} metas")
        m0 = metas[0].validate()
        for m in metas[1:]:
            m.validate()
            if (tuple(m.shape), m.batch_size, m.num_classes, m.labels is None) != (
                    tuple(m0.shape), m0.batch_size, m0.num_classes, m0.labels is None):
                raise ValueError("stacked targets must share shape, batch size, classes and label knowledge; "
                                 "group them first")
        params = list(model.parameters())
        for k, s in enumerate(shared):
            if len(s) != len(params):
                raise ValueError(f"shared update #{k} has {len(s)} tensors but the model has {len(params)} "
                                 "parameters; pass one tensor per parameter, in model.parameters() order")
            for i, (t, p) in enumerate(zip(s, params)):
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"shared update #{k}, tensor {i}: shape {tuple(t.shape)} != parameter shape "
                                     f"{tuple(p.shape)}")
        was = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(m0.seed)
                out = self._run(model, shared, metas, progress)
        finally:
            model.train(was)
        dt = (time.perf_counter() - t0) / len(shared)
        for r in out:
            r.seconds = dt
            r.attack = self.spec
        return out

    def _run(self, model, shared, metas, progress) -> list[Reconstruction]:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        return spec_of(self)

    def __str__(self) -> str:
        return self.spec


def get_attack(spec: "str | Attack", **overrides) -> Attack:
    """Build an attack from ``'name'`` or ``'name:key=val,...'``; ``overrides`` win over the spec."""
    if isinstance(spec, Attack):
        return spec
    return _REGISTRY.build(spec, **overrides)
