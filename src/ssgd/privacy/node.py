r"""Node-level privacy: every node shares the unit vector of its gradient, plus noise.

Two threat models, two places for the noise (``noise_multiplier`` :math:`\sigma`):

``mode="aggregate"`` -- *noise once on the sum* (secure aggregation or a trusted aggregator).
    Nobody sees a single node's vector, only :math:`\sum_j u_j + \mathcal N(0, \sigma^2\Delta^2 I)`
    with :math:`\Delta = 1` (add/remove one node; :math:`\sqrt L` for layer scope).
    The guarantee is (ε, δ)-DP *per node* against everyone who sees the sum -- the
    server, the other nodes, whoever receives the model. The noise is either added by
    the trusted aggregator (``split="central"``: one party, e.g. rank 0 or the Flower
    server, adds all of it) or split across the ``n`` nodes under secure aggregation
    (``split="distributed"``: every node adds :math:`\mathcal N(0, \sigma^2\Delta^2/n)`,
    so the sum carries exactly :math:`\sigma\Delta`). The split assumes every node is
    honest and present: nodes that drop out or collude (and subtract their own share)
    reduce the noise, and the guarantee degrades accordingly.

``mode="local"`` -- *each node noises its own vector* (untrusted aggregator).
    The server sees every :math:`u_j + \mathcal N(0, \sigma^2\Delta^2 I)` with
    :math:`\Delta = 2` (any two datasets of a node are neighbours; two unit vectors
    differ by at most 2). The guarantee is per node against the server itself, with
    no trust in anyone; it costs :math:`\sqrt n` times more noise on the sum than
    ``aggregate`` for the same ε.

Accounting (both modes): one release per round, sampling rate 1 when every node
takes part in every round. No amplification by sub-sampling is claimed for node
selection unless the nodes are Poisson-sampled (Flower and DDP select nodes
deterministically or as a fixed-size subset, which the accountants do not cover).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..transform import DEFAULT_EPS, check_scope, unit_
from .noise import GaussianNoise, derive_seed, sensitivity

__all__ = ["NODE_MODES", "NodeNoise", "NodePrivacy", "node_unit_sum_", "ReleaseBudget", "BudgetSpentError",
           "DEFAULT_MAX_EPSILON", "DEFAULT_BUDGET_DELTA"]

NODE_MODES = ("aggregate", "local")

#: the default release budget of a node that noises its own vectors (node-local DP): (ε, δ) = (10, 1e-5)
DEFAULT_MAX_EPSILON = 10.0
DEFAULT_BUDGET_DELTA = 1e-5


class NodeNoise:
    r"""The noise one node adds to its unit vector before sharing it (see the module doc).

    Args:
        noise_multiplier: :math:`\sigma \ge 0`.
        mode: ``"aggregate"`` (secure aggregation / trusted aggregator) or ``"local"``.
        num_nodes: number of nodes whose vectors are summed (for ``split="distributed"``).
        rank: this node's index (seeds its generator: every node draws different noise).
        split: for ``mode="aggregate"``: ``"distributed"`` (each node adds σΔ/√n) or
            ``"central"`` (only ``rank == 0`` -- or the server -- adds σΔ).
        scope, n_tensors: the SSGD scope and tensor count (layer scope: Δ grows by √L).
        seed: base seed (``None``: OS entropy).

    ``add_(tensors)`` adds this node's share, fresh on each call. ``level`` is the
    :func:`sensitivity` level (``"node"`` or ``"node-local"``) and ``std`` the
    standard deviation this node adds; ``total_std`` is that of the noise in the sum.
    """

    def __init__(self, noise_multiplier: float, *, mode: str = "aggregate", num_nodes: int = 1, rank: int = 0,
                 split: str = "distributed", scope: str = "global", n_tensors: int = 1, seed: int | None = None):
        if mode not in NODE_MODES:
            raise ValueError(f"Invalid mode={mode!r}; expected one of {NODE_MODES} "
                             "('aggregate': noise once on the sum under secure aggregation; "
                             "'local': each node noises its own vector)")
        if split not in ("distributed", "central"):
            raise ValueError(f"Invalid split={split!r}; expected 'distributed' or 'central'")
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"Invalid num_nodes={num_nodes!r}; must be an integer >= 1")
        if not isinstance(rank, int) or not (0 <= rank < num_nodes):
            raise ValueError(f"Invalid rank={rank!r}; must satisfy 0 <= rank < num_nodes={num_nodes}")
        check_scope(scope)
        self.mode, self.split, self.num_nodes, self.rank = mode, split, num_nodes, rank
        self.level = "node-local" if mode == "local" else "node"
        delta = sensitivity(self.level, scope, n_tensors)
        if mode == "local" or split == "central":
            share = 1.0 if (mode == "local" or rank == 0) else 0.0
        else:
            share = 1.0 / math.sqrt(num_nodes)
        # every node needs its own stream: identical noise on n nodes would add up coherently
        self._noise = GaussianNoise(noise_multiplier, delta, seed=None if seed is None else derive_seed(seed, "rank", rank))
        self.share = share
        self.noise_multiplier = self._noise.noise_multiplier
        self.sensitivity = delta

    @property
    def std(self) -> float:
        """Standard deviation of the noise this node adds per entry."""
        return self._noise.std * self.share

    @property
    def total_std(self) -> float:
        """Standard deviation per entry of the noise in the aggregated sum (all nodes honest)."""
        if self.mode == "local":
            return self._noise.std * math.sqrt(self.num_nodes)
        return self._noise.std

    @torch.no_grad()
    def add_(self, tensors: Tensor | Iterable[Tensor], scale: float = 1.0) -> list[Tensor]:
        """Add this node's noise share, fresh, in place. ``scale`` multiplies the noise: pass the
        factor the unit vector was already multiplied by (e.g. ``1/m`` when the all-reduce averages)."""
        ts = [tensors] if isinstance(tensors, Tensor) else list(tensors)
        if self.std == 0.0:
            return ts
        for t in ts:
            t.add_(self._noise.sample(t.shape, dtype=t.dtype, device=t.device) * (self.share * scale))
        return ts

    def __call__(self, tensors, scale: float = 1.0):
        return self.add_(tensors, scale)

    def reseed(self, *salt) -> None:
        """Restart this node's noise stream at a point derived from its first seed and ``salt``
        (e.g. the epoch), so a resumed run draws the same noise as an uninterrupted one."""
        if not hasattr(self, "_base_seed"):
            self._base_seed = self._noise.seed
        self._noise.reseed(derive_seed(self._base_seed, "reseed", *salt))

    def state_dict(self) -> dict:
        """The noise stream's state (for bit-identical resume)."""
        return self._noise.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._noise.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"NodeNoise(noise_multiplier={self.noise_multiplier:g}, mode={self.mode!r}, split={self.split!r}, "
                f"num_nodes={self.num_nodes}, rank={self.rank}, std={self.std:g})")


def node_unit_sum_(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor,
                   owners: Tensor, noises: list[NodeNoise], *, scope: str = "global",
                   eps: float = DEFAULT_EPS) -> tuple[Tensor, Tensor]:
    r"""Simulate ``n = len(noises)`` nodes in one process and write :math:`\sum_j (u_j + \xi_j)` into ``.grad``.

    ``owners[i]`` is the node that owns example ``i``; node ``j``'s gradient is taken
    on its own examples only, normalised (``scope``), and ``noises[j]`` adds its share.
    A node with no example in this batch contributes only its noise. Returns
    ``(loss, norms)``: the batch's mean loss and each node's gradient norm (NaN if empty).
    """
    if inputs.shape[0] != targets.shape[0] or owners.shape[0] != inputs.shape[0]:
        raise ValueError(f"inputs, targets and owners disagree on batch size: "
                         f"{inputs.shape[0]}, {targets.shape[0]}, {owners.shape[0]}")
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = torch.full((len(noises),), float("nan"), dtype=torch.float64)
    loss_sum, count = 0.0, 0
    for j, noise in enumerate(noises):
        sel = torch.nonzero(owners == j).flatten()
        if sel.numel() > 0:
            loss = loss_fn(model(inputs[sel]), targets[sel])
            gs = torch.autograd.grad(loss, params, allow_unused=True)
            gs = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
            n = unit_(gs, scope, eps)
            norms[j] = float(n) if n.ndim == 0 else float(n.norm())
            loss_sum += float(loss.detach()) * sel.numel()
            count += sel.numel()
        else:
            gs = [torch.zeros_like(p) for p in params]
        noise.add_(gs)
        with torch.no_grad():
            torch._foreach_add_(total, gs)
    for p, t in zip(params, total):
        p.grad = t
    return torch.tensor(loss_sum / max(count, 1)), norms


class NodePrivacy:
    r"""Node-level privacy for one party of a real multi-node run: its :class:`NodeNoise` and an accountant.

    The extension point the engines use: the DDP hook calls :meth:`add_` on each rank's
    unit-vector buffers before the all-reduce (``split="distributed"``: every rank adds
    its :math:`\sigma/\sqrt n` share); the Flower strategy calls :meth:`add_` once on the
    sum of the accepted unit vectors (``split="central"``, ``num_nodes=1``: the server is
    the trusted aggregator). Call :meth:`step` once per round / optimizer step and
    :meth:`end_epoch` (or :meth:`epsilon`) to report ε per node.

    Give ``noise_multiplier``, or ``target_epsilon`` with ``rounds`` (the planned number
    of releases) to solve σ with Opacus. Sampling rate 1: every node takes part in every
    round (no amplification is claimed for node selection).
    """

    def __init__(self, noise_multiplier: float | None = None, *, target_epsilon: float | None = None,
                 rounds: int | None = None, delta: float = 1e-5, accountant: str = "rdp", mode: str = "aggregate",
                 split: str = "distributed", num_nodes: int = 1, rank: int = 0, scope: str = "global",
                 n_tensors: int = 1, seed: int | None = None):
        from .accountant import PrivacyAccountant, solve_noise_multiplier

        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("NodePrivacy needs exactly one of noise_multiplier (sigma) or target_epsilon "
                             f"(got noise_multiplier={noise_multiplier!r}, target_epsilon={target_epsilon!r})")
        if noise_multiplier is None:
            if not isinstance(rounds, int) or rounds < 1:
                raise ValueError(f"target_epsilon needs the planned number of rounds/steps: rounds={rounds!r} "
                                 "must be an integer >= 1")
            noise_multiplier = solve_noise_multiplier(target_epsilon, delta, 1.0, rounds, accountant)
        self.noise = NodeNoise(noise_multiplier, mode=mode, num_nodes=num_nodes, rank=rank, split=split, scope=scope,
                               n_tensors=n_tensors, seed=seed)
        self.noise_multiplier = self.noise.noise_multiplier
        self.accountant = PrivacyAccountant(self.noise_multiplier, 1.0, delta, accountant, level="node")
        self.target_epsilon = target_epsilon

    def add_(self, tensors, scale: float = 1.0):
        return self.noise.add_(tensors, scale)

    def reseed(self, *salt) -> None:
        """Restart this node's noise stream at a point derived from its seed and ``salt`` (e.g. the
        epoch), so a resumed run draws the same noise as an uninterrupted one."""
        self.noise.reseed(*salt)

    def state_dict(self) -> dict:
        return {"accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.accountant.load_state_dict(state["accountant"])

    def step(self, n: int = 1) -> None:
        self.accountant.step(n)

    def epsilon(self) -> float:
        return self.accountant.epsilon()

    def end_epoch(self, epoch: int) -> dict[str, float]:
        row = self.accountant.end_epoch(epoch)
        return {"epsilon": row["epsilon"], "delta": row["delta"]}

    def summary(self) -> dict:
        out = self.accountant.summary()
        out.update({"mode": self.noise.mode, "split": self.noise.split, "num_nodes": self.noise.num_nodes,
                    "noise_std_this_node": self.noise.std, "noise_std_sum": self.noise.total_std,
                    "target_epsilon": self.target_epsilon})
        return out


class BudgetSpentError(ValueError):
    """One more release would take a node past its own (ε, δ) budget."""


class ReleaseBudget:
    r"""A node's own privacy budget: every release it makes, counted by itself, and a cap.

    Under node-local DP the server, the adversary, must not be the one who counts: a server
    that asks for the same batch again and again averages the noise away unless the *node*
    stops answering. Each release is one Gaussian mechanism with noise multiplier σ on a
    unit vector (sampling rate 1); ε is Opacus's accountant (:class:`~.accountant.PrivacyAccountant`)
    over the node's whole release history at the node's δ. :meth:`charge` records one more
    release at σ when the total stays within ``max_epsilon`` and raises
    :class:`BudgetSpentError` otherwise (the history is left as it was). A charge depends on
    the history and σ only, never on the data.

    The history is a list of ``(σ, count)`` groups, one per distinct σ (releases compose
    commutatively), so that a charge costs O(distinct σ) accountant steps, never O(releases)
    (:meth:`to_dict` / :meth:`from_dict`, checked field by field: it is read back from the node's
    state or ledger file; a count above :attr:`MAX_RELEASES` is refused).
    """

    def __init__(self, max_epsilon: float = DEFAULT_MAX_EPSILON, delta: float = DEFAULT_BUDGET_DELTA, *,
                 releases: Iterable[tuple[float, int]] = (), accountant: str = "rdp") -> None:
        from .accountant import check_accountant, check_delta

        if (isinstance(max_epsilon, bool) or not isinstance(max_epsilon, (int, float))
                or not math.isfinite(max_epsilon) or max_epsilon <= 0):
            raise ValueError(f"Invalid max_epsilon={max_epsilon!r}; must be a finite number > 0 (the most "
                             f"epsilon this node spends, e.g. {DEFAULT_MAX_EPSILON:g})")
        self.max_epsilon = float(max_epsilon)
        self.delta = check_delta(delta)
        self.accountant = check_accountant(accountant)
        self.releases: list[tuple[float, int]] = []
        for sigma, n in releases:
            self._add(sigma, n)

    #: most releases a history may hold (far beyond any budget: at sigma = 100, epsilon 10 allows ~10^5): a
    #: stored count above it is refused in one line instead of being replayed
    MAX_RELEASES = 10**9
    #: most distinct noise multipliers a history may hold (releases at one sigma are one group)
    MAX_GROUPS = 10_000
    #: largest noise multiplier a history may hold or a charge may ask (far beyond any useful sigma; above it the
    #: accountant's sigma**2 overflows near 1e154): refused in one line, never an OverflowError
    MAX_NOISE_MULTIPLIER = 1e6

    @classmethod
    def check_sigma(cls, sigma: Any) -> float:
        """σ checked as a release's noise multiplier: finite, >= 0 and at most :attr:`MAX_NOISE_MULTIPLIER`."""
        from .accountant import check_noise_multiplier

        sigma = check_noise_multiplier(sigma)
        if not sigma <= cls.MAX_NOISE_MULTIPLIER:
            raise ValueError(f"Invalid noise multiplier {sigma!r}; must be at most {cls.MAX_NOISE_MULTIPLIER:g} "
                             "(beyond it the vector is pure noise, and the accountant overflows)")
        return sigma

    def _add(self, sigma: Any, n: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.MAX_RELEASES:
            raise ValueError(f"Invalid release count {n!r}; must be an integer in [1, {self.MAX_RELEASES}]")
        sigma = self.check_sigma(sigma)
        if self.count + n > self.MAX_RELEASES:
            raise ValueError(f"a release history of more than {self.MAX_RELEASES} releases; not a history this node "
                             "wrote")
        # releases compose commutatively: one group per sigma keeps a charge O(distinct sigmas), not O(releases)
        for i, (s, m) in enumerate(self.releases):
            if s == sigma:
                self.releases[i] = (s, m + n)
                break
        else:
            if len(self.releases) >= self.MAX_GROUPS:
                raise ValueError(f"a release history of more than {self.MAX_GROUPS} distinct noise multipliers")
            self.releases.append((sigma, n))

    @property
    def count(self) -> int:
        """Releases made so far."""
        return sum(n for _, n in self.releases)

    def epsilon(self, extra: float | None = None) -> float:
        """ε of the releases so far (plus one more at σ = ``extra``) at this budget's δ."""
        from .accountant import PrivacyAccountant

        history = list(self.releases) + ([(self.check_sigma(extra), 1)] if extra is not None else [])
        if not history:
            return 0.0
        acc = PrivacyAccountant(history[0][0], 1.0, self.delta, self.accountant, level="node")
        for sigma, n in history:
            acc.step(n, noise_multiplier=sigma)
        return acc.epsilon()

    def charge(self, sigma: float) -> float:
        """Record one release at σ and return the ε spent after it; :class:`BudgetSpentError` (nothing
        recorded) when that ε would exceed ``max_epsilon``."""
        eps = self.epsilon(sigma)
        if not eps <= self.max_epsilon:
            raise BudgetSpentError(f"one more release at sigma={sigma:g} would spend epsilon={eps:.4g} > this "
                                   f"node's max-epsilon={self.max_epsilon:g} (delta={self.delta:g}) after "
                                   f"{self.count} release(s)")
        self._add(sigma, 1)
        return eps

    def to_dict(self) -> dict[str, list]:
        return {"sigmas": [float(s) for s, _ in self.releases], "counts": [int(n) for _, n in self.releases]}

    @classmethod
    def from_dict(cls, data: Any, max_epsilon: float = DEFAULT_MAX_EPSILON, delta: float = DEFAULT_BUDGET_DELTA,
                  **kw: Any) -> "ReleaseBudget":
        """The budget of a stored history (``{"sigmas": [...], "counts": [...]}``, or empty for none);
        ValueError on anything else."""
        if data is None or (hasattr(data, "__len__") and len(data) == 0):
            return cls(max_epsilon, delta, **kw)
        try:
            sigmas, counts = list(data["sigmas"]), list(data["counts"])
        except (TypeError, KeyError):
            raise ValueError("a release history must hold the lists 'sigmas' and 'counts'") from None
        if len(sigmas) != len(counts) or len(sigmas) > cls.MAX_GROUPS:
            raise ValueError(f"a release history's 'sigmas' and 'counts' differ in length ({len(sigmas)}, "
                             f"{len(counts)}) or are too long")
        return cls(max_epsilon, delta, releases=zip(sigmas, counts), **kw)
