r"""Node-level DP on Flower: :class:`PrivateSSGDStrategy` adds calibrated noise once to the sum of the unit updates.

:class:`ssgd.distributed.flower.SSGDStrategy` accepts only updates that *are* unit vectors
(norm :math:`1 \pm` ``norm_tol``, or 0) and moves the global model by
:math:`\pm\eta/n\sum_j u_j`. The sum of the accepted updates therefore has sensitivity
:math:`\Delta = 1 + \mathrm{tol}` (add/remove one node), enforced by the server itself --
a misbehaving node cannot send more. This strategy adds :math:`\mathcal N(0, \sigma^2\Delta^2 I)`
to that sum (the server is the trusted aggregator -- the ``aggregate`` threat model with
``split="central"``; see :mod:`ssgd.privacy.node`), counts one release per round in an
Opacus accountant and reports ε in every round's metrics (``epsilon``, ``delta``).

Threat model: the server sees each node's unit vector (it validates them), so the
guarantee is against everyone downstream of the server -- other nodes, whoever receives the
global models -- not against the server. For protection against the server itself, the
nodes must add the noise (local model) or use secure aggregation; the strict unit-norm
validation of :class:`SSGDStrategy` rejects locally noised vectors (a noisy vector cannot
be told from a poisoned one), so the local model needs a validation bound for noisy norms.

Accounting: sampling rate 1 (no amplification is claimed: Flower samples a fixed-size
subset of nodes, not a Poisson sample), one step per round that released an update (a
round with no accepted update leaves the model unchanged and releases nothing). The
number of accepted nodes is visible in the update's scale, as the server knows who took part.

Usage::

    from ssgd.privacy import NodePrivacy
    from ssgd.privacy.flower import PrivateSSGDStrategy

    privacy = NodePrivacy(target_epsilon=8.0, rounds=50, delta=1e-5, split="central")
    strategy = PrivateSSGDStrategy(privacy=privacy, mode="fedsgd", server_lr=0.1)
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import torch

from ..distributed.flower.strategy import SSGDStrategy
from .node import NodePrivacy

__all__ = ["PrivateSSGDStrategy"]

log = logging.getLogger(__name__)


class PrivateSSGDStrategy(SSGDStrategy):
    """:class:`SSGDStrategy` plus Gaussian noise on the sum of the unit updates and an ε per round.

    Args:
        privacy: a :class:`ssgd.privacy.NodePrivacy` with ``mode="aggregate"``,
            ``split="central"`` (the server adds all of the noise).
        **kwargs: everything :class:`SSGDStrategy` takes.
    """

    def __init__(self, *, privacy: NodePrivacy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(privacy, NodePrivacy):
            raise TypeError(f"privacy must be an ssgd.privacy.NodePrivacy, got {type(privacy).__name__}")
        if privacy.noise.mode != "aggregate" or privacy.noise.split != "central" or privacy.noise.share != 1.0:
            raise ValueError("PrivateSSGDStrategy adds the noise on the server: use NodePrivacy(mode='aggregate', "
                             f"split='central', rank=0) (got mode={privacy.noise.mode!r}, "
                             f"split={privacy.noise.split!r}, rank={privacy.noise.rank})")
        self.privacy = privacy

    @property
    def sensitivity(self) -> float:
        """Largest norm an accepted update can have: 1 + norm_tol."""
        return 1.0 + self.norm_tol

    def aggregate_train(self, server_round: int, replies: Iterable[Any]):
        spec = self._spec
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics  # nothing released this round
        n_ok = len(self.rounds[server_round]["accepted"])
        sign = -1.0 if self.mode == "fedsgd" else 1.0
        scale = sign * self.server_lr / n_ok * self.sensitivity  # the noise joins the sum before the 1/n
        from flwr.app import Array, ArrayRecord

        names = set(spec.names)
        new = {}
        for name, arr in arrays.items():
            if name in names:
                w = np.asarray(arr.numpy())
                z = torch.zeros(w.shape, dtype=torch.float64)
                self.privacy.add_([z], scale=scale)
                new[name] = Array(np.asarray(w + z.numpy(), dtype=w.dtype))
            else:
                new[name] = arr
        self.privacy.step()
        eps = self.privacy.epsilon()
        if metrics is not None:
            metrics["epsilon"] = float(eps)
            metrics["delta"] = float(self.privacy.accountant.delta)
        log.info("round %d: noise sigma=%g on the sum of %d unit updates; epsilon=%.4g at delta=%g per node",
                 server_round, self.privacy.noise_multiplier, n_ok, eps, self.privacy.accountant.delta)
        return ArrayRecord(new), metrics
