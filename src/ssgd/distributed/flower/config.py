"""The run configuration of the SSGD Flower app (``[tool.flwr.app.config]`` / ``--run-config``).

Every key has a default here, so an app directory may set only what it changes. Values
are validated once, on the server and on every node, with errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ...transform import SCOPES
from . import keys

__all__ = ["FlowerRunConfig"]


@dataclass
class FlowerRunConfig:
    num_rounds: int = 10
    mode: str = "fedsgd"            # fedsgd | delta
    scope: str = "global"           # global | layer
    server_lr: float = 0.5          # step length of one round
    local_steps: int = 5            # delta mode: local SGD steps per round
    client_lr: float = 0.05         # delta mode: local SGD learning rate
    batch_size: int = 64
    dataset: str = "mnist"
    data_dir: str = ""              # "" = the dataset's default location
    model: str = "mlp"
    partition: str = "iid"          # iid | dirichlet
    alpha: float = 0.5              # Dirichlet concentration
    seed: int = 0
    strict: bool = True             # require |u| = 1 +- norm_tol
    norm_tol: float = 1e-3
    fraction_train: float = 1.0
    min_nodes: int = 1              # wait for this many nodes before a round
    round_timeout: float = 60.0     # seconds to wait for replies in a round
    node_wait_timeout: float = 120.0
    straggler_timeout: float = 0.0  # after min-nodes replies, wait at most this long for the rest (0 = off)
    out_dir: str = ""               # run folder on the server ("" = runs/flower-<time>)
    resume: bool = True             # continue from out_dir/checkpoint.pt if present
    test_size: int = 0              # 0 = the whole test split for the server's evaluation

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
        if self.scope not in SCOPES:
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

        if self.model not in MODELS:
            bad("model", f"expected one of {sorted(MODELS)}")
        if self.dataset not in DATASETS:
            bad("dataset", f"expected one of {sorted(DATASETS)}")
        if self.partition not in ("iid", "dirichlet"):
            bad("partition", "expected 'iid' or 'dirichlet'")
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
