"""What a node lets leave it: its own privacy settings, which no server message can lower.

A node's privacy-relevant settings come from the node itself -- the mod's constructor and,
over it, the SuperNode's ``--node-config`` (Flower's ``Context.node_config``) -- never
from the train message the server sends:

=========================  =======================  ==============================================
node config key            default                  what it controls
=========================  =======================  ==============================================
``ssgd-scope``             ``"global"``             the SSGD scope the node normalises with
``ssgd-eps``               ``1e-12``                the transform's eps (a larger one would send
                                                    ``g/(|g|+eps)``, i.e. a scaled raw gradient)
``allowed-metrics``        ``""`` (none)            comma-separated metrics that may leave the
                                                    node (``num-examples``, ``train-loss``)
``min-batch-size``         ``1``                    smallest batch the node computes a gradient on
                                                    (a share below it refuses every request)
``max-batch-size``         ``8192``                 largest batch a request may ask for (its memory;
                                                    batches are drawn with replacement)
``min-noise-multiplier``   none (required by        the smallest σ the node adds with
                           ``LocalNoiseMod``)       :class:`~ssgd.distributed.flower.LocalNoiseMod`
``allow-evaluate``         ``false``                whether the packaged ClientApp answers
                                                    evaluate messages (loss/accuracy of its data)
``ssgd-mode``              ``"fedsgd"``             what the node computes: one batch's gradient
                                                    (``fedsgd``) or the delta of local steps
``max-local-steps``        ``100``                  most local SGD steps a request may ask for
``min-client-lr``          ``1e-4``                 the range of the local learning rate a
``max-client-lr``          ``10``                   request may ask for (delta mode; outside: refused)
``max-epsilon``            ``10``                   node-local DP: the most ε this node spends over
                                                    all its releases, counted by the node itself
                                                    (:class:`~ssgd.privacy.ReleaseBudget`); once the
                                                    next release would exceed it, it refuses
``dp-delta``               ``1e-5``                 the δ at which ``max-epsilon`` is counted
``privacy-ledger``         ``""`` (the node's       the locked file where the node counts its
                           default ledger file,     releases, across all runs and restarts.
                           below)                   ``memory``: the node owner's opt-out, the
                                                    node's Context.state, which **resets on every
                                                    run the server starts** (docs/threat-model.md)
``batch-key``              ``""`` (a random key    the node's secret that picks its batches (with
                           in its Flower home)      the server's seed and round): the server can
                                                    neither replay nor choose which examples a
                                                    batch holds (:mod:`.secret`)
``dataset``                ``"mnist"``              the data the packaged ClientApp computes on
                                                    (a run config naming another is refused)
``data-dir``               ``""``                   where the node reads that data (``""``: the
                                                    dataset's default location); never the run config's
``partition``              ``"iid"``                how the training split is divided between the
                                                    nodes (``iid`` | ``dirichlet``): which examples
                                                    are this node's share (a run config naming
                                                    another is refused)
``alpha``                  ``0.5``                  the Dirichlet concentration of that split
                                                    (a run config naming another is refused)
``partition-seed``         ``0``                    the seed of that split; the run config's
                                                    ``seed`` never chooses the node's share
=========================  =======================  ==============================================

The node's **default ledger** (``privacy-ledger`` unset or ``""``) is
``<flwr home>/ssgd/privacy-ledger-<partition-id>.json``: Flower's home of the process that runs the
ClientApp (``$FLWR_HOME``, else ``~/.flwr``), resolved at every release, keyed by the node config's
``partition-id`` -- the node owner's index, which tells apart the nodes that share one home -- and
never by ``Context.node_id`` or ``run_id``, which the SuperLink assigns (a server that starts a new
run must not get a new budget). Without ``partition-id``: ``privacy-ledger.json``, one budget for
every such node of that home. The run config cannot set ``privacy-ledger`` (refused, like every
node setting), and no request field names it.

The server still *sends* its view (``ssgd-scope``, ``ssgd-eps``, ``batch-size``,
``ssgd-dp-noise-multiplier``) so that a mismatch is caught: a request asking for less
protection than the node's policy -- another scope, a larger eps, a smaller batch, a
smaller σ -- is refused with an error reply that names the setting
(:class:`PolicyError`); nothing computed on the node's data is sent then.

What each metric reveals (hence opt-in): ``train-loss`` at batch size 1 with softmax
cross-entropy gives the gradient norm back exactly, :math:`\\lVert g\\rVert =
(e^{-\\ell}-1)/u_{b}[y]` from the unit vector's last-layer bias (and at larger batches it
still constrains it); ``num-examples`` reveals the size of the node's batch or data share.
See docs/threat-model.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ...privacy.node import DEFAULT_BUDGET_DELTA, DEFAULT_MAX_EPSILON, ReleaseBudget
from ...transform import DEFAULT_EPS, check_eps, check_nonnegative, check_scope
from . import keys

__all__ = ["NodePolicy", "PolicyError", "METRICS", "ALLOWED_METRICS", "MIN_BATCH_SIZE", "MAX_BATCH_SIZE", "MIN_NOISE_MULTIPLIER",
           "ALLOW_EVALUATE", "MAX_LOCAL_STEPS", "MIN_CLIENT_LR", "MAX_CLIENT_LR", "MAX_EPSILON", "DP_DELTA", "PRIVACY_LEDGER", "PRIVACY_LEDGER_MEMORY", "BATCH_KEY",
           "PARTITION_ID", "DATASET", "DATA_DIR", "PARTITION", "ALPHA", "PARTITION_SEED",
           "check_outgoing"]

#: node-config keys (besides keys.SCOPE and keys.EPS, which the node config may set as well)
ALLOWED_METRICS = "allowed-metrics"
MIN_BATCH_SIZE = "min-batch-size"
MAX_BATCH_SIZE = "max-batch-size"
MIN_NOISE_MULTIPLIER = "min-noise-multiplier"
ALLOW_EVALUATE = "allow-evaluate"
MAX_LOCAL_STEPS = "max-local-steps"
MIN_CLIENT_LR = "min-client-lr"
MAX_CLIENT_LR = "max-client-lr"
MAX_EPSILON = "max-epsilon"
#: node config: the node's secret key for drawing its batches (``""``: a random key file under its Flower home)
BATCH_KEY = "batch-key"
DP_DELTA = "dp-delta"
PRIVACY_LEDGER = "privacy-ledger"
#: ``privacy-ledger`` value of a node owner who opts out of the ledger file: the count lives in the node's
#: Context.state, which **resets on every run the server starts** (and on a SuperNode restart)
PRIVACY_LEDGER_MEMORY = "memory"
#: the node owner's index of this node (``ssgd flower up/local`` set it): which data share the packaged ClientApp
#: reads, and the name of the node's default ledger file (never Context.node_id: the SuperLink assigns that)
PARTITION_ID = "partition-id"
DATASET = "dataset"
DATA_DIR = "data-dir"
#: node config: which examples are this node's share (the split of the training data, its Dirichlet alpha and seed)
PARTITION = "partition"
ALPHA = "alpha"
PARTITION_SEED = "partition-seed"

#: the metrics the packaged ClientApp can report (each opt-in, see the module doc)
METRICS = ("num-examples", "train-loss")


class PolicyError(ValueError):
    """A server request asks for less protection than the node's policy allows (names the setting)."""


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Invalid {key}={value!r}; must be a finite number")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"Invalid node config {key}={value!r}; expected true or false")


def _metrics(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        names = [str(v) for v in value]
    else:
        raise ValueError(f"Invalid {ALLOWED_METRICS}={value!r}; expected a comma-separated list of {METRICS}")
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"Invalid {ALLOWED_METRICS}: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return frozenset(names)


@dataclass(frozen=True)
class NodePolicy:
    """One node's privacy settings (see the module doc); validated on construction."""

    scope: str = "global"
    eps: float = DEFAULT_EPS
    allowed_metrics: frozenset = frozenset()
    min_batch_size: int = 1
    max_batch_size: int = 8192
    min_noise_multiplier: float | None = None
    allow_evaluate: bool = False
    #: the outgoing vector must have norm 1 +- unit_tol (per tensor for scope="layer"), or be exactly 0
    unit_tol: float = 1e-3
    mode: str = "fedsgd"
    max_local_steps: int = 100
    min_client_lr: float = 1e-4
    max_client_lr: float = 10.0
    max_epsilon: float = DEFAULT_MAX_EPSILON
    dp_delta: float = DEFAULT_BUDGET_DELTA
    privacy_ledger: str = ""
    #: the node's secret batch key (node config ``batch-key``; ``""``: a random one kept under its Flower home)
    batch_key: str = ""
    dataset: str = "mnist"
    data_dir: str = ""
    #: the node's share of the training data: the split, its Dirichlet alpha and its seed (never the run config's)
    partition: str = "iid"
    alpha: float = 0.5
    partition_seed: int = 0

    def __post_init__(self) -> None:
        try:
            check_scope(self.scope)
        except ValueError as e:
            raise ValueError(f"node setting {keys.SCOPE}: {e}") from None
        try:
            eps = check_eps(self.eps)
        except ValueError as e:
            raise ValueError(f"node setting {keys.EPS}: {e}") from None
        if not eps <= 1e-3:
            raise ValueError(f"Invalid {keys.EPS}={self.eps!r}; must be in (0, 1e-3] (default {DEFAULT_EPS}): a "
                             "larger eps sends g/(|g|+eps), a scaled raw gradient")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "allowed_metrics", _metrics(self.allowed_metrics))
        if isinstance(self.min_batch_size, bool) or not isinstance(self.min_batch_size, int) or self.min_batch_size < 1:
            raise ValueError(f"Invalid {MIN_BATCH_SIZE}={self.min_batch_size!r}; must be an integer >= 1")
        if (isinstance(self.max_batch_size, bool) or not isinstance(self.max_batch_size, int)
                or self.max_batch_size < self.min_batch_size):
            raise ValueError(f"Invalid {MAX_BATCH_SIZE}={self.max_batch_size!r}; must be an integer >= "
                             f"{MIN_BATCH_SIZE} ({self.min_batch_size})")
        if self.min_noise_multiplier is not None:
            sigma = _number(MIN_NOISE_MULTIPLIER, self.min_noise_multiplier)
            if sigma <= 0:
                raise ValueError(f"Invalid {MIN_NOISE_MULTIPLIER}={self.min_noise_multiplier!r}; must be > 0 "
                                 "(a node that adds no noise gets no differential privacy)")
            object.__setattr__(self, "min_noise_multiplier", sigma)
        object.__setattr__(self, "allow_evaluate", _bool(ALLOW_EVALUATE, self.allow_evaluate))
        if not (isinstance(self.unit_tol, (int, float)) and 0 < self.unit_tol < 1):
            raise ValueError(f"Invalid unit_tol={self.unit_tol!r}; must be in (0, 1), e.g. 1e-3")
        if self.mode not in keys.MODES:
            raise ValueError(f"Invalid node config {keys.MODE}={self.mode!r}; expected one of {keys.MODES}")
        if (isinstance(self.max_local_steps, bool) or not isinstance(self.max_local_steps, int)
                or self.max_local_steps < 1):
            raise ValueError(f"Invalid {MAX_LOCAL_STEPS}={self.max_local_steps!r}; must be an integer >= 1")
        for key, field in ((MIN_CLIENT_LR, "min_client_lr"), (MAX_CLIENT_LR, "max_client_lr")):
            object.__setattr__(self, field, _number(key, getattr(self, field)))
        if not 0 < self.min_client_lr <= self.max_client_lr:
            raise ValueError(f"Invalid node config {MIN_CLIENT_LR}={self.min_client_lr!r} / {MAX_CLIENT_LR}="
                             f"{self.max_client_lr!r}; need 0 < {MIN_CLIENT_LR} <= {MAX_CLIENT_LR}")
        for key, field in ((MAX_EPSILON, "max_epsilon"), (DP_DELTA, "dp_delta")):
            object.__setattr__(self, field, _number(key, getattr(self, field)))
        try:
            ReleaseBudget(self.max_epsilon, self.dp_delta)
        except ValueError as e:
            raise ValueError(f"Invalid node config {MAX_EPSILON}/{DP_DELTA}: {e}") from None
        for key, field in ((PRIVACY_LEDGER, "privacy_ledger"), (DATA_DIR, "data_dir"), (DATASET, "dataset"),
                           (BATCH_KEY, "batch_key")):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"Invalid node config {key}={getattr(self, field)!r}; expected a string")
        from ...data import DATASETS

        if self.dataset not in DATASETS:
            raise ValueError(f"Invalid node config {DATASET}={self.dataset!r}; expected one of {sorted(DATASETS)}")
        if self.partition not in keys.PARTITIONS:
            raise ValueError(f"Invalid node config {PARTITION}={self.partition!r}; expected one of {keys.PARTITIONS}")
        alpha = _number(ALPHA, self.alpha)
        if not alpha > 0:
            raise ValueError(f"Invalid node config {ALPHA}={self.alpha!r}; must be > 0 (e.g. 0.5)")
        object.__setattr__(self, "alpha", alpha)
        if (isinstance(self.partition_seed, bool) or not isinstance(self.partition_seed, int)
                or self.partition_seed < 0):
            raise ValueError(f"Invalid node config {PARTITION_SEED}={self.partition_seed!r}; must be an integer >= 0")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any] | None, base: "NodePolicy | None" = None) -> "NodePolicy":
        """``base`` (the mod's constructor settings) with the node config's keys over it."""
        base = base or cls()
        nc = dict(node_config or {})
        kw: dict[str, Any] = {}
        for key, field in ((keys.SCOPE, "scope"), (keys.EPS, "eps"), (ALLOWED_METRICS, "allowed_metrics"),
                           (MIN_BATCH_SIZE, "min_batch_size"), (MAX_BATCH_SIZE, "max_batch_size"),
                           (MIN_NOISE_MULTIPLIER, "min_noise_multiplier"),
                           (ALLOW_EVALUATE, "allow_evaluate"), (keys.MODE, "mode"),
                           (MAX_LOCAL_STEPS, "max_local_steps"), (MIN_CLIENT_LR, "min_client_lr"),
                           (MAX_CLIENT_LR, "max_client_lr"), (MAX_EPSILON, "max_epsilon"),
                           (DP_DELTA, "dp_delta"), (PRIVACY_LEDGER, "privacy_ledger"), (DATASET, "dataset"),
                           (DATA_DIR, "data_dir"), (BATCH_KEY, "batch_key"), (PARTITION, "partition"),
                           (ALPHA, "alpha"), (PARTITION_SEED, "partition_seed")):
            if key in nc:
                kw[field] = nc[key]
        return dataclasses.replace(base, **kw) if kw else base

    # ------------------------------------------------------------------ requests
    def check_request(self, cfg: Mapping[str, Any]) -> None:
        """Refuse (:class:`PolicyError`) a request (typed request fields, see :mod:`.request`) asking
        for less protection than this policy: another scope, a larger eps, a smaller batch, more
        local steps than the node allows."""
        if keys.SCOPE in cfg:
            try:
                scope = check_scope(cfg[keys.SCOPE])
            except ValueError as e:
                raise PolicyError(str(e)) from None
            if scope != self.scope:
                raise PolicyError(f"the server asks {keys.SCOPE}={scope!r}, this node's policy is "
                                  f"{self.scope!r} (node config {keys.SCOPE}); not sent")
        if keys.EPS in cfg:
            try:
                eps = check_eps(cfg[keys.EPS])
            except ValueError as e:
                raise PolicyError(str(e)) from None
            if eps > self.eps:
                raise PolicyError(f"the server asks {keys.EPS}={eps:g}, above this node's {self.eps:g} (node config "
                                  f"{keys.EPS}): a larger eps sends a scaled raw gradient; not sent")
        if keys.BATCH_SIZE in cfg:
            b = cfg[keys.BATCH_SIZE]
            if isinstance(b, bool) or not isinstance(b, int) or not self.min_batch_size <= b <= self.max_batch_size:
                raise PolicyError(f"the server asks {keys.BATCH_SIZE}={b!r}, outside this node's "
                                  f"[{self.min_batch_size}, {self.max_batch_size}] (node config {MIN_BATCH_SIZE}, "
                                  f"{MAX_BATCH_SIZE}); not sent")
        if keys.LOCAL_STEPS in cfg:
            s = cfg[keys.LOCAL_STEPS]
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= self.max_local_steps:
                raise PolicyError(f"the server asks {keys.LOCAL_STEPS}={s!r}, outside this node's [1, "
                                  f"{self.max_local_steps}] (node config {MAX_LOCAL_STEPS}); not sent")

    def check_client_lr(self, lr: Any) -> float:
        """The local learning rate a request asks for, if it is within this node's range (a tiny one would
        hold the local steps' weights at the server's w through rounding, a huge one overflow them)."""
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise PolicyError(f"request field {keys.CLIENT_LR!r}={lr!r} is not a finite number")
        if not self.min_client_lr <= lr <= self.max_client_lr:
            raise PolicyError(f"the server asks {keys.CLIENT_LR}={lr:g}, outside this node's [{self.min_client_lr:g}, "
                              f"{self.max_client_lr:g}] (node config {MIN_CLIENT_LR}, {MAX_CLIENT_LR}); not sent")
        return float(lr)

    def check_noise_multiplier(self, sigma: Any) -> float:
        """The σ a request asks for, if this node accepts it (its minimum must be set and met)."""
        if self.min_noise_multiplier is None:
            raise PolicyError(f"this node has no minimum noise multiplier: set node config {MIN_NOISE_MULTIPLIER} "
                              "or LocalNoiseMod(min_noise_multiplier=...) (> 0); not sent")
        if sigma is None:
            raise PolicyError(f"no noise multiplier: the request has no {keys.DP_NOISE_MULTIPLIER!r} and "
                              "LocalNoiseMod(noise_multiplier=...) was not set; not sent")
        try:
            s = check_nonnegative(keys.DP_NOISE_MULTIPLIER, sigma)
        except ValueError as e:
            raise PolicyError(str(e)) from None
        if s < self.min_noise_multiplier:
            raise PolicyError(f"the server asks {keys.DP_NOISE_MULTIPLIER}={s:g}, below this node's minimum "
                              f"{self.min_noise_multiplier:g} (node config {MIN_NOISE_MULTIPLIER}); not sent")
        if s > ReleaseBudget.MAX_NOISE_MULTIPLIER:
            raise PolicyError(f"the server asks {keys.DP_NOISE_MULTIPLIER}={s:g}, above the largest a node accepts "
                              f"({ReleaseBudget.MAX_NOISE_MULTIPLIER:g}); not sent")
        return s

    def allowed(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``metrics`` this node lets leave (scalars of allowed names only)."""
        return {k: v for k, v in metrics.items() if k in self.allowed_metrics
                and isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_outgoing(norms: list[float], tol: float) -> bool:
    """True when every norm (one global norm, or one per tensor) is exactly 0 or 1 +- ``tol``."""
    return all(n == 0.0 or abs(n - 1.0) <= tol for n in norms)
