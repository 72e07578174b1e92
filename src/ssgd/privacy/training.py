"""DP settings and the per-step glue of single-process private training.

:class:`DPConfig` holds what the user chooses (level, σ or target ε, δ, accountant);
:class:`DPTraining` turns it into the sampler, the noise and the accountant for one
training run and exposes three calls for the one training loop (:mod:`ssgd.loop`): :meth:`DPTraining.batch_indices`
(Poisson sampling at example level), :meth:`DPTraining.backward` (writes the noisy
sum of unit vectors into ``.grad`` and counts the step) and :meth:`DPTraining.end_epoch`
(ε so far).

Levels: ``"example"`` (per-example unit vectors + noise on the sum, Poisson-sampled
batches: DP-SGD with normalisation in place of clipping), ``"node"`` (``m`` simulated
nodes (``num_nodes``), node ``j`` owning the examples ``i`` with ``i % m == j``; noise
once on the sum, the secure-aggregation threat model) and ``"node-local"`` (each
node noises its own unit vector; untrusted aggregator).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..transform import check_gamma
from .accountant import (
    PrivacyAccountant,
    check_accountant,
    check_delta,
    check_noise_multiplier,
    check_target_epsilon,
    solve_noise_multiplier,
)
from .example import DEFAULT_GAMMA, PoissonSampler, check_per_example_model, private_unit_grad_
from .node import NodeNoise, NodePrivacy, node_unit_sum_
from .noise import GaussianNoise, derive_seed, sensitivity

__all__ = ["DP_LEVELS", "MIN_NODE_LOCAL_NOISE", "DPConfig", "DPTraining", "check_dp_setup", "check_ddp_config",
           "check_node_local_sigma", "ddp_privacy"]

DP_LEVELS = ("off", "example", "node", "node-local")
# node-local: a node never releases a vector with less noise than this (sigma 0 = un-noised vectors labelled DP)
MIN_NODE_LOCAL_NOISE = 0.1


def check_node_local_sigma(sigma: float, minimum: float = MIN_NODE_LOCAL_NOISE) -> float:
    """Node-local DP: ``sigma`` (given or solved) must reach the node's minimum (ValueError naming both)."""
    if not sigma >= minimum:
        raise ValueError(f"noise_multiplier={sigma!r} is below this node's minimum {minimum:g} for dp='node-local' "
                         f"(it would release vectors with too little noise); give noise_multiplier >= {minimum:g} "
                         "or a finite target_epsilon")
    return sigma


@dataclass
class DPConfig:
    """Differential-privacy settings. Give exactly one of ``noise_multiplier`` and ``target_epsilon``
    (``target_epsilon=inf``: no noise) unless ``level="off"``."""

    level: str = "off"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"

    @property
    def enabled(self) -> bool:
        return self.level != "off"

    def validate(self) -> "DPConfig":
        if self.level not in DP_LEVELS:
            raise ValueError(f"Invalid dp={self.level!r}; expected one of {DP_LEVELS}")
        if not self.enabled:
            if self.noise_multiplier is not None or self.target_epsilon is not None:
                raise ValueError("noise_multiplier/target_epsilon were given but dp='off'; "
                                 f"choose a privacy level dp= one of {DP_LEVELS[1:]}")
            return self
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(f"dp={self.level!r} needs exactly one of noise_multiplier (sigma) or target_epsilon "
                             f"(got noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r})")
        if self.noise_multiplier is not None:
            check_noise_multiplier(self.noise_multiplier)
            if self.level == "node-local":
                check_node_local_sigma(self.noise_multiplier)
        else:
            check_target_epsilon(self.target_epsilon)
            if self.level == "node-local" and math.isinf(self.target_epsilon):
                check_node_local_sigma(0.0)
        check_delta(self.delta)
        check_accountant(self.accountant)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_dp_setup(config: DPConfig, *, optimizer: str, shards: int = 1, nodes: int = 1) -> DPConfig:
    """The DP settings against the run's other settings (ValueError naming the fields, never CLI flags)."""
    config.validate()
    if config.level == "example" and shards != 1:
        raise ValueError(f"shards={shards} does not apply to dp='example' (every example is its own unit vector); "
                         "leave shards at 1, or use dp='node' to simulate nodes")
    if nodes > 1 and config.enabled:
        check_ddp_config(config.level, optimizer)
    return config


class DPTraining:
    """Sampler + noise + accountant for one run (see the module doc).

    Args:
        config: the :class:`DPConfig`.
        model: the model being trained (its trainable tensors fix the layer-scope sensitivity).
        n_train: number of training examples.
        batch_size: expected batch size (example level: sampling rate ``q = 1/ceil(n/B)``,
            Opacus's convention for a loader of ``ceil(n/B)`` batches).
        epochs: planned epochs (to solve σ for a target ε).
        num_nodes: simulated nodes for node level.
        scope: SSGD scope of the unit vectors.
        gamma: example level: each gradient is scaled by ``1/(||g|| + gamma)`` (0: the pure unit vector).
        seed: seeds the sampler and the noise (separate streams, model RNG untouched).
    """

    def __init__(self, config: DPConfig, model: nn.Module, n_train: int, batch_size: int, epochs: int, *,
                 num_nodes: int = 1, scope: str = "global", seed: int | None = 0,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy, gamma: float = DEFAULT_GAMMA):
        self.config = config.validate()
        if not config.enabled:
            raise ValueError("DPTraining needs a privacy level other than 'off'")
        if batch_size < 1 or n_train < 1:
            raise ValueError(f"Invalid batch_size={batch_size} / n_train={n_train}; both must be >= 1")
        self.level = config.level
        self.scope = scope
        self.gamma = check_gamma(gamma)
        self.loss_fn = loss_fn
        self.steps_per_epoch = max(1, math.ceil(n_train / batch_size))
        self.planned_steps = self.steps_per_epoch * max(0, epochs)
        n_tensors = sum(1 for p in model.parameters() if p.requires_grad)
        if self.level == "example":
            if num_nodes != 1:
                raise ValueError(f"num_nodes={num_nodes} does not apply to dp='example' (every example is its own "
                                 "unit vector); use num_nodes=1, or dp='node' to simulate nodes")
            check_per_example_model(model)
            self.sample_rate = 1.0 / self.steps_per_epoch
            self.sampler = PoissonSampler(n_train, self.sample_rate, seed=derive_seed(seed, "dp-sampler"))
            self.expected_batch_size = n_train * self.sample_rate
        else:
            self.sample_rate = 1.0  # every node takes part in every step
            self.sampler = None
            self.expected_batch_size = float(batch_size)
        if config.noise_multiplier is not None:
            sigma = float(config.noise_multiplier)
        else:
            sigma = solve_noise_multiplier(config.target_epsilon, config.delta, self.sample_rate,
                                           self.planned_steps, config.accountant)
        if self.level == "node-local":
            check_node_local_sigma(sigma)
        self.noise_multiplier = sigma
        self.num_nodes = num_nodes
        if self.level == "example":
            self.noise = GaussianNoise(sigma, sensitivity("example", scope, n_tensors),
                                       seed=derive_seed(seed, "dp-noise"))
            self.node_noises: list[NodeNoise] = []
        else:
            mode = "local" if self.level == "node-local" else "aggregate"
            self.noise = None
            self.node_noises = [NodeNoise(sigma, mode=mode, num_nodes=num_nodes, rank=j, split="distributed",
                                          scope=scope, n_tensors=n_tensors, seed=derive_seed(seed, "dp-noise"))
                                for j in range(num_nodes)]
        self.accountant = PrivacyAccountant(sigma, self.sample_rate, config.delta, config.accountant,
                                            level="example" if self.level == "example" else "node")

    def batch_indices(self, default: Tensor) -> Tensor:
        """The indices of the next batch: a Poisson sample (example level) or ``default``; hand them to
        :meth:`backward` (node level: which node owns which example)."""
        return self.sampler.sample().to(default.device) if self.sampler is not None else default

    def backward(self, model: nn.Module, inputs: Tensor, targets: Tensor, indices: Tensor | None) -> Tensor:
        """Write the noisy gradient into ``.grad``, count one release; return the mean loss (detached).

        The gradient path of the one training loop (:func:`ssgd.loop.train_loop`); ``indices`` (the
        batch's example indices) are needed at node level only."""
        if self.level == "example":
            losses, _ = private_unit_grad_(model, self.loss_fn, inputs, targets, self.noise,
                                           expected_batch_size=self.expected_batch_size, scope=self.scope,
                                           gamma=self.gamma)
            loss = losses.mean() if losses.numel() else torch.zeros(())
        else:
            owners = (indices % self.num_nodes).to(inputs.device)
            loss, _ = node_unit_sum_(model, self.loss_fn, inputs, targets, owners, self.node_noises, scope=self.scope)
        self.accountant.step()
        return loss

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """``{"epsilon": ..., "delta": ...}`` after this epoch (also stored in the accountant)."""
        row = self.accountant.end_epoch(epoch)
        return {"epsilon": row["epsilon"], "delta": row["delta"]}

    def summary(self) -> dict[str, Any]:
        out = self.accountant.summary()
        out.update({"dp": self.level, "scope": self.scope, "target_epsilon": self.config.target_epsilon,
                    "expected_batch_size": self.expected_batch_size, "num_nodes": self.num_nodes,
                    "noise_std": (self.noise.std if self.noise is not None
                                  else self.node_noises[0].total_std if self.node_noises else 0.0)})
        return out

    def describe(self) -> str:
        return self.accountant.describe()

    def state_dict(self) -> dict[str, Any]:
        """Accountant history and every random stream (for bit-identical resume)."""
        return {"accountant": self.accountant.state_dict(),
                "sampler": self.sampler.state_dict() if self.sampler is not None else None,
                "noise": self.noise.state_dict() if self.noise is not None else None,
                "node_noises": [nn_.state_dict() for nn_ in self.node_noises]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, checked as hostile input (ValueError, one line): the random streams'
        positions are taken from it, but never what the noise is -- each stream's σ, sensitivity and seed must
        be this run's own (a saved σ of 0 would make a resumed run release noise-free vectors), and the
        accountant must record releases at this run's σ and q (:meth:`PrivacyAccountant.load_state_dict`)."""
        if not isinstance(state, dict):
            raise ValueError("the saved DP state is not a mapping; it was not written by this run")
        own = [self.noise.state_dict()] if self.noise is not None else [n.state_dict() for n in self.node_noises]
        saved = [state.get("noise")] if self.noise is not None else state.get("node_noises")
        if not isinstance(saved, (list, tuple)) or len(saved) != len(own):
            raise ValueError(f"the saved DP state holds no noise stream per node ({len(own)}); it was not written by "
                             "this run")
        for j, (mine, st) in enumerate(zip(own, saved)):
            for k in ("noise_multiplier", "sensitivity", "seed"):
                if not isinstance(st, dict) or type(st.get(k)) is not type(mine[k]) or st.get(k) != mine[k]:
                    got = repr(st.get(k))[:40] if isinstance(st, dict) else type(st).__name__
                    raise ValueError(f"the saved DP noise stream {j} has {k} {got}, this run's is {mine[k]!r}; "
                                     "it was not written by this run")
        self.accountant.load_state_dict(state.get("accountant"))
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if self.noise is not None:
            self.noise.load_state_dict(state["noise"])
        for nn_, st in zip(self.node_noises, saved if self.noise is None else []):
            nn_.load_state_dict(st)


def check_ddp_config(level: str, optimizer: str) -> None:
    """DP with several DDP processes: node level only, through the SSGD hook."""
    if level == "example":
        raise ValueError("dp='example' is single-process only (per-example unit vectors); with nodes > 1 use "
                         "dp='node' (noise once on the sum, split across the nodes) or dp='node-local'")
    if level != "off" and optimizer != "ssgd":
        raise ValueError(f"dp={level!r} with nodes > 1 needs optimizer='ssgd': the noise is calibrated to the unit "
                         f"vectors the SSGD hook all-reduces (got optimizer={optimizer!r})")


def ddp_privacy(config: DPConfig, *, world: int, rank: int, model: nn.Module, rounds: int, scope: str,
                seed: int | None) -> NodePrivacy:
    """This rank's :class:`NodePrivacy` for DDP: dp='node' splits σ over the ranks (σ/√n each,
    secure-aggregation model), dp='node-local' adds the full local noise on every rank."""
    from .node import NodePrivacy

    n_tensors = sum(1 for p in model.parameters() if p.requires_grad)
    priv = NodePrivacy(config.noise_multiplier, target_epsilon=config.target_epsilon, rounds=max(1, rounds),
                       delta=config.delta, accountant=config.accountant,
                       mode="local" if config.level == "node-local" else "aggregate", split="distributed",
                       num_nodes=world, rank=rank, scope=scope, n_tensors=n_tensors,
                       seed=derive_seed(seed, "dp-noise"))
    if config.level == "node-local":
        check_node_local_sigma(priv.noise_multiplier)
    return priv
