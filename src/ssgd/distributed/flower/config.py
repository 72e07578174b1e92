"""The run configuration of the SSGD Flower app (``[tool.flwr.app.config]`` / ``--run-config``).

Every key has a default here, so an app directory may set only what it changes. Values
are validated once, on the server and on every node, with errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ...transform import SCOPES, check_scope
from . import keys

__all__ = ["FlowerRunConfig", "ROUND_TIMEOUT", "default_min_nodes", "FLOWER_MODELS"]

#: the models a federation may train: updates carry trainable parameters only, so a model with
#: buffers (BatchNorm running statistics) would be silently wrong; each of these has none (tested)
FLOWER_MODELS = ("convnet", "lenet", "mlp", "tanh-cnn")


#: seconds the server waits for replies in a round (the one default: run config, CLI and template)
ROUND_TIMEOUT = 120.0


def default_min_nodes(num_nodes: int) -> int:
    """``ssgd flower up``'s default ``min-nodes``: half of the started SuperNodes, rounded up
    (2 of 3, 2 of 4, 3 of 5; 1 of 2), so that the run survives losing any one node and any
    minority (``min-nodes`` = all would stop at the first loss)."""
    return max(1, (num_nodes + 1) // 2)


def _f(default: Any, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class FlowerRunConfig:
    num_rounds: int = _f(10, "federated rounds")
    mode: str = _f("fedsgd", "fedsgd (unit gradients) | delta (unit model deltas of local steps)")
    scope: str = _f("global", "global | layer (must match every node's own ssgd-scope)")
    server_lr: float = _f(0.5, "step length of one round")
    local_steps: int = _f(5, "delta mode: local SGD steps per round")
    client_lr: float = _f(0.05, "delta mode: local SGD learning rate")
    batch_size: int = _f(64, "batch size on each node (a node refuses one below its min-batch-size)")
    dataset: str = _f("mnist", "dataset (mnist is embedded)")
    data_dir: str = _f("", "\"\" = the dataset's default location")
    model: str = _f("mlp", " | ".join(FLOWER_MODELS) + " (models without BatchNorm)")
    partition: str = _f("iid", "iid | dirichlet (with alpha)")
    alpha: float = _f(0.5, "Dirichlet concentration")
    seed: int = _f(0, "seed")
    strict: bool = _f(True, "reject updates whose norm is not 1 +- norm-tol")
    norm_tol: float = _f(1e-3, "tolerance of the unit-norm check")
    fraction_train: float = _f(1.0, "fraction of the connected nodes sampled per round")
    min_nodes: int = _f(1, "nodes needed before a round starts (ssgd flower up: half of them, rounded up)")
    round_timeout: float = _f(ROUND_TIMEOUT, "seconds to wait for replies in a round")
    node_wait_timeout: float = _f(120.0, "seconds to wait for min-nodes connected nodes")
    straggler_timeout: float = _f(0.0, "after min-nodes replies, wait at most this long (0 = off)")
    out_dir: str = _f("", "run folder on the server (\"\" = runs/flower-<time>)")
    resume: bool = _f(True, "continue from out-dir/checkpoint.pt (refused if it is another experiment's)")
    overwrite: bool = _f(False, "replace the results in out-dir when there is no checkpoint to resume")
    test_size: int = _f(0, "0 = the whole test split for the central evaluation")

    @classmethod
    def run_config_keys(cls) -> tuple[str, ...]:
        """Every run-config key, Flower style ('-' separated)."""
        return tuple(f.name.replace("_", "-") for f in dataclasses.fields(cls))

    @classmethod
    def help(cls) -> dict[str, str]:
        """One line of help per run-config key."""
        return {f.name.replace("_", "-"): f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "FlowerRunConfig":
        """Build from a run config; keys may use '-' (Flower style) or '_'."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                continue  # other keys belong to the user's app
            default = fields[name].default
            try:
                if isinstance(default, bool):
                    if isinstance(value, str):
                        if value.lower() not in ("true", "false", "1", "0"):
                            raise ValueError
                        value = value.lower() in ("true", "1")
                    value = bool(value)
                elif isinstance(default, int):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise ValueError(f"Invalid run config {key}={value!r}; expected a {type(default).__name__} "
                                 f"(default {default!r})") from None
            kw[name] = value
        return cls(**kw).validate()

    def validate(self) -> "FlowerRunConfig":
        def bad(key: str, why: str):
            raise ValueError(f"Invalid run config {key.replace('_', '-')}={getattr(self, key)!r}; {why}")

        if self.num_rounds < 1:
            bad("num_rounds", "must be >= 1")
        if self.mode not in keys.MODES:
            bad("mode", f"expected one of {keys.MODES}")
        try:
            check_scope(self.scope)
        except ValueError:
            bad("scope", f"expected one of {SCOPES}")
        for name in ("server_lr", "client_lr", "norm_tol", "round_timeout", "node_wait_timeout", "alpha"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        if self.local_steps < 1:
            bad("local_steps", "must be >= 1")
        if self.batch_size < 1:
            bad("batch_size", "must be >= 1")
        from ...data import DATASETS
        from ...models import MODELS

        if self.model not in FLOWER_MODELS or self.model not in MODELS:
            bad("model", f"expected one of {list(m for m in FLOWER_MODELS if m in MODELS)} (models without BatchNorm: "
                         "Flower updates carry trainable parameters only)")
        if self.dataset not in DATASETS:
            bad("dataset", f"expected one of {sorted(DATASETS)}")
        if self.partition not in keys.PARTITIONS:
            bad("partition", f"expected one of {keys.PARTITIONS}")
        if not 0 < self.fraction_train <= 1:
            bad("fraction_train", "must be in (0, 1]")
        if self.min_nodes < 1:
            bad("min_nodes", "must be >= 1")
        if self.straggler_timeout < 0:
            bad("straggler_timeout", "must be >= 0 (0 = wait the full round-timeout)")
        if self.test_size < 0:
            bad("test_size", "must be >= 0 (0 = whole test split)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_run_config(self) -> dict[str, Any]:
        """As Flower run-config keys ('-' separated)."""
        return {k.replace("_", "-"): v for k, v in self.to_dict().items()}
