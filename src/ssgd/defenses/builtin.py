"""The built-in defences: none, SSGD (global, layer, shards, + noise) and the usual baselines.

========================  =====================================================================
``none``                  the raw gradient
``ssgd-global``           its unit vector over the whole model (:func:`ssgd.unit`, global scope)
``ssgd-layer``            one unit vector per parameter tensor (layer scope)
``ssgd-shards:m=4``       SSGD(m): the batch is split into m shards (nodes); the sum of their
                          unit vectors is shared (:func:`ssgd.shard_unit_grad_` semantics)
``prune:p=90``            top-k magnitude pruning: the smallest p% of entries (over the whole
                          gradient) are set to zero (Zhu et al. 2019's defence)
``noise:sigma=0.01``      additive Gaussian noise of standard deviation sigma
``sign``                  signSGD: the sign of every entry
``fp16``                  the gradient rounded to float16 (and back)
``dp:clip=1,sigma=1``     DP-SGD: per-example gradients clipped to L2 norm ``clip``, summed,
                          Gaussian noise of std ``sigma*clip`` added, divided by the batch size
``ssgd-noise:sigma=0.01`` the (global) unit vector plus Gaussian noise of std sigma: a Gaussian
                          mechanism with L2 sensitivity 2, so it has a DP guarantee
========================  =====================================================================

Noise defences draw from the ``generator`` passed in (or a generator seeded with their
``seed`` parameter), so a run is reproducible. The DP ones (``dp``, ``ssgd-noise``) state their
``noise_multiplier`` (noise std / L2 sensitivity); ε is the privacy layer's job
(:func:`ssgd.privacy.compute_epsilon`, called by the experiments), never computed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..shards import shard_unit_grad_
from ..transform import batched_unit, check_scope, unit
from .base import Defense, register_defense

__all__ = ["NoDefense", "SSGDGlobal", "SSGDLayer", "SSGDShards", "Prune", "Noise", "Sign", "FP16", "DPSGD",
           "SSGDNoise"]


def _gen(generator: torch.Generator | None, seed: int) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _add_noise(grads: list[Tensor], std: float, gen: torch.Generator) -> list[Tensor]:
    return [g + std * torch.randn(g.shape, generator=gen, dtype=g.dtype).to(g.device) for g in grads]


@register_defense
@dataclass
class NoDefense(Defense):
    name = "none"
    keeps_sign = True
    help = "the raw gradient"

    def apply(self, grads, generator=None):
        return [g.clone() for g in grads]


@dataclass
class _SSGDUnit(Defense):
    """The unit vector of the gradient in the class's ``scope`` (:func:`ssgd.unit`)."""

    keeps_sign = True
    scope: ClassVar[str] = "global"

    def apply(self, grads, generator=None):
        return unit(grads, self.scope)


@register_defense
@dataclass
class SSGDGlobal(_SSGDUnit):
    name = "ssgd-global"
    help = "unit vector of the whole gradient"
    scope = "global"


@register_defense
@dataclass
class SSGDLayer(_SSGDUnit):
    name = "ssgd-layer"
    help = "one unit vector per parameter tensor"
    scope = "layer"


@register_defense
@dataclass
class SSGDShards(Defense):
    name = "ssgd-shards"
    keeps_sign = True  # for m = 1; for m > 1 the sum of unit vectors may flip an entry's sign
    help = "sum of the unit vectors of m sub-batch (node) gradients"
    m: int = 4
    scope: str = "global"

    def validate(self):
        if self.m < 1:
            raise ValueError(f"ssgd-shards: m={self.m} must be >= 1")
        try:
            check_scope(self.scope)
        except ValueError:
            raise ValueError(f"ssgd-shards: scope={self.scope!r}; expected 'global' or 'layer'") from None

    def apply(self, grads, generator=None):
        if self.m != 1:
            raise ValueError(f"ssgd-shards with m={self.m} needs the batch, not its summed gradient: call "
                             ".shared_update(model, x, y) (or use m=1, which is ssgd-global)")
        return unit(grads, self.scope)

    def shared_update(self, model, x, y, loss_fn=F.cross_entropy, generator=None):
        if self.m > x.shape[0]:
            raise ValueError(f"ssgd-shards: m={self.m} shards need a batch of >= {self.m} examples, got "
                             f"{x.shape[0]}; lower m")
        params = list(model.parameters())
        saved = [p.grad for p in params]
        try:
            shard_unit_grad_(model, loss_fn, x, y, self.m, scope=self.scope, reduce="sum")
            return [p.grad.detach().clone() for p in params]
        finally:
            for p, g in zip(params, saved):
                p.grad = g


@register_defense
@dataclass
class Prune(Defense):
    name = "prune"
    keeps_sign = True  # kept entries keep their sign, the rest become 0
    help = "zero the smallest p% of entries by magnitude (global top-k)"
    p: float = 90.0

    def validate(self):
        if not 0 <= self.p < 100:
            raise ValueError(f"prune: p={self.p} must be a percentage in [0, 100)")

    def apply(self, grads, generator=None):
        flat = torch.cat([g.flatten().abs().float() for g in grads])
        keep = max(1, int(round(flat.numel() * (1 - self.p / 100))))
        thresh = torch.topk(flat, keep, sorted=True).values[-1]
        return [torch.where(g.abs() >= thresh, g, torch.zeros_like(g)) for g in grads]


@register_defense
@dataclass
class Noise(Defense):
    name = "noise"
    help = "additive Gaussian noise (std sigma)"
    sigma: float = 0.01
    seed: int = 0

    def validate(self):
        if self.sigma < 0:
            raise ValueError(f"noise: sigma={self.sigma} must be >= 0")

    def apply(self, grads, generator=None):
        return _add_noise(grads, self.sigma, _gen(generator, self.seed))


@register_defense
@dataclass
class Sign(Defense):
    name = "sign"
    keeps_sign = True
    help = "signSGD: the sign of each entry"

    def apply(self, grads, generator=None):
        return [torch.sign(g) for g in grads]


@register_defense
@dataclass
class FP16(Defense):
    name = "fp16"
    keeps_sign = True  # rounding never flips a sign (tiny entries may underflow to 0)
    help = "rounded to float16 and back"

    def apply(self, grads, generator=None):
        return [g.to(torch.float16).to(g.dtype) for g in grads]


@register_defense
@dataclass
class DPSGD(Defense):
    name = "dp"
    help = "DP-SGD: per-example clip to C, sum, Gaussian noise sigma*C, divide by batch size"
    clip: float = 1.0
    sigma: float = 1.0
    seed: int = 0

    def validate(self):
        if self.clip <= 0:
            raise ValueError(f"dp: clip={self.clip} must be > 0")
        if self.sigma < 0:
            raise ValueError(f"dp: sigma={self.sigma} must be >= 0")

    def apply(self, grads, generator=None):
        """Without the batch: the whole update is treated as one example (clip, then noise)."""
        return self._finish([self._clip(grads)], 1, generator)

    def _clip(self, grads: list[Tensor], batch_dims: int = 0) -> list[Tensor]:
        """Clip to L2 norm ``clip`` (over all tensors, per leading batch index): ``g * min(1, C/|g|)`` is
        ``C * g / max(|g|, C)``, the library's unit vector with ``eps = C`` (:func:`ssgd.batched_unit`)."""
        units, _ = batched_unit(grads, scope="global", eps=self.clip, batch_dims=batch_dims)
        return [self.clip * u for u in units]

    def _finish(self, clipped: list[list[Tensor]], n: int, generator) -> list[Tensor]:
        total = [sum(gs) for gs in zip(*clipped)]
        noisy = _add_noise(total, self.sigma * self.clip, _gen(generator, self.seed))
        return [g / n for g in noisy]

    def shared_update(self, model: nn.Module, x: Tensor, y: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy, generator=None):
        from torch.func import functional_call, grad, vmap

        names = [n for n, _ in model.named_parameters()]
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = dict(model.named_buffers())

        def one(pd, xi, yi):
            return loss_fn(functional_call(model, (pd, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

        g = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
        with torch.no_grad():
            summed = [c.sum(0) for c in self._clip([g[n] for n in names], batch_dims=1)]
            return self._finish([summed], x.shape[0], generator)

    @property
    def noise_multiplier(self) -> float:
        """Noise std over L2 sensitivity: adding or removing one example moves the clipped sum by at most
        ``clip`` (Opacus's adjacency), so ``sigma``. The privacy layer turns it into ε
        (:func:`ssgd.privacy.compute_epsilon`); a defence only adds the noise."""
        return self.sigma


@register_defense
@dataclass
class SSGDNoise(Defense):
    name = "ssgd-noise"
    help = "unit vector (global) plus Gaussian noise (std sigma); DP with L2 sensitivity 2"
    sigma: float = 0.01
    seed: int = 0

    def validate(self):
        if self.sigma < 0:
            raise ValueError(f"ssgd-noise: sigma={self.sigma} must be >= 0")

    def apply(self, grads, generator=None):
        return _add_noise(unit(grads, "global"), self.sigma, _gen(generator, self.seed))

    @property
    def noise_multiplier(self) -> float:
        """Noise std over L2 sensitivity: changing one example of the batch can turn the unit vector into
        any other, and two unit vectors differ by at most 2, so ``sigma / 2``. The privacy layer turns it
        into ε (:func:`ssgd.privacy.compute_epsilon`)."""
        return self.sigma / 2.0
