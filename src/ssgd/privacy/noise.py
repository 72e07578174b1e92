r"""Gaussian noise calibrated to the sensitivity of unit vectors.

A unit vector has :math:`L_2` norm exactly 1 (at most 1 for a zero or tiny
gradient), so SSGD bounds the sensitivity *by construction* -- no clipping
threshold to tune. With noise multiplier :math:`\sigma` the noise added is
:math:`\mathcal N(0, \sigma^2\Delta^2 I)`, where :math:`\Delta` is

=====================  ==============  ===========================================
what is released       neighbouring    :math:`\Delta` (global scope / layer scope)
=====================  ==============  ===========================================
sum of per-example     add/remove one  1 / :math:`\sqrt{L}`
unit vectors           example
sum of per-node unit   add/remove one  1 / :math:`\sqrt{L}`
vectors (aggregate)    node
one node's unit        replace the     2 / :math:`2\sqrt{L}`
vector (local)         node's data
=====================  ==============  ===========================================

(:math:`L` = number of tensors, each its own unit vector under ``scope="layer"``.)
Add/remove is Opacus's convention, so ``noise_multiplier`` means what it means in
``opacus.PrivacyEngine``; the local model has no "absent" node to compare with, so
any two datasets of the node are neighbours and the difference of two unit vectors
is at most 2.

:class:`GaussianNoise` draws from its own ``torch.Generator``: a seeded run is
reproducible, every call draws fresh noise, and the model's RNG is untouched.
``seed=None`` seeds it from the OS entropy pool. This is not a cryptographically
secure sampler (neither is Opacus without ``secure_mode``); for a deployment that
must withstand an attacker who can predict the PRNG or exploit floating-point
artefacts, use a CSPRNG-backed sampler.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..transform import check_scope
from .accountant import check_noise_multiplier

__all__ = ["LEVELS", "GaussianNoise", "sensitivity", "derive_seed"]

LEVELS = ("example", "node", "node-local")


def sensitivity(level: str = "example", scope: str = "global",
                n_tensors: "int | torch.nn.Module | Iterable[Tensor]" = 1) -> float:
    """:math:`L_2` sensitivity Δ of the released sum of unit vectors (table in the module doc).

    ``n_tensors`` is L, the number of tensors normalised one by one under ``scope="layer"``:
    an int, or a model / an iterable of tensors whose trainable tensors are counted (what the
    layer-scope unit vector is taken over). Global scope ignores it (Δ = 1, or 2 for node-local)."""
    if level not in LEVELS:
        raise ValueError(f"Invalid privacy level {level!r}; expected one of {LEVELS}")
    check_scope(scope)
    if isinstance(n_tensors, torch.nn.Module):
        n_tensors = sum(1 for p in n_tensors.parameters() if p.requires_grad)
    elif not isinstance(n_tensors, (int, float)):
        n_tensors = sum(1 for t in n_tensors if getattr(t, "requires_grad", True))
    if isinstance(n_tensors, bool) or not isinstance(n_tensors, int) or n_tensors < 1:
        raise ValueError(f"Invalid n_tensors={n_tensors!r}; must be an integer >= 1 (the number of tensors, "
                         "each its own unit vector under scope='layer')")
    base = 2.0 if level == "node-local" else 1.0
    return base * (math.sqrt(n_tensors) if scope == "layer" else 1.0)


def derive_seed(seed: int | None, *salt: int | str) -> int:
    """A 63-bit seed from ``seed`` and ``salt`` (e.g. a rank), or from OS entropy if ``seed`` is None."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    import hashlib

    h = hashlib.sha256(repr((int(seed),) + tuple(salt)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class GaussianNoise:
    r"""Adds :math:`\mathcal N(0, (\sigma\Delta)^2)` to every entry, fresh on every call.

    Args:
        noise_multiplier: :math:`\sigma \ge 0` (0 adds nothing).
        sensitivity: :math:`\Delta > 0` (see :func:`sensitivity`).
        seed: seeds this object's own generator (``None``: OS entropy).

    Example::

        noise = GaussianNoise(1.1, sensitivity=1.0, seed=0)
        grads = [p.grad for p in model.parameters()]
        ssgd.unit_(grads)          # norm 1: sensitivity 1
        noise.add_(grads)          # + N(0, 1.1^2) per entry
    """

    def __init__(self, noise_multiplier: float, sensitivity: float = 1.0, *, seed: int | None = None):
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        if not isinstance(sensitivity, (int, float)) or not (sensitivity > 0) or math.isinf(sensitivity):
            raise ValueError(f"Invalid sensitivity={sensitivity!r}; must be a finite number > 0")
        self.sensitivity = float(sensitivity)
        self.seed = derive_seed(seed, "gaussian-noise")
        self._gens: dict[torch.device, torch.Generator] = {}
        self.calls = 0

    @property
    def std(self) -> float:
        r"""Standard deviation of every noise entry, :math:`\sigma\Delta`."""
        return self.noise_multiplier * self.sensitivity

    def _gen(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if device not in self._gens:
            g = torch.Generator(device=device)
            g.manual_seed(derive_seed(self.seed, str(device)))
            self._gens[device] = g
        return self._gens[device]

    def sample(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Tensor:
        """A fresh noise tensor of ``shape`` (drawn in float32 at least, then cast)."""
        device = torch.device(device)
        draw = torch.float64 if dtype == torch.float64 else torch.float32
        z = torch.randn(tuple(shape), generator=self._gen(device), dtype=draw, device=device)
        return (z * self.std).to(dtype)

    @torch.no_grad()
    def add_(self, tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
        """Add fresh noise to ``tensors`` in place; returns them as a list."""
        ts = [tensors] if isinstance(tensors, Tensor) else list(tensors)
        self.calls += 1
        if self.std == 0.0:
            return ts
        for t in ts:
            t.add_(self.sample(t.shape, dtype=t.dtype, device=t.device))
        return ts

    def reseed(self, seed: int) -> None:
        """Restart the noise stream from ``seed`` (every device's generator is derived from it anew)."""
        self.seed = int(seed)
        self._gens = {}

    def state_dict(self) -> dict:
        return {"noise_multiplier": self.noise_multiplier, "sensitivity": self.sensitivity, "seed": self.seed,
                "calls": self.calls, "generators": {str(d): g.get_state() for d, g in self._gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.noise_multiplier = check_noise_multiplier(state["noise_multiplier"])
        self.sensitivity = float(state["sensitivity"])
        self.seed = int(state["seed"])
        self.calls = int(state.get("calls", 0))
        self._gens = {}
        for dev, st in state.get("generators", {}).items():
            self._gen(torch.device(dev)).set_state(st)

    def __repr__(self) -> str:
        return f"GaussianNoise(noise_multiplier={self.noise_multiplier:g}, sensitivity={self.sensitivity:g})"
