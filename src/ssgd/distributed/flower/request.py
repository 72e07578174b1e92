"""The one parsed form of what the server asks a node to do in a train message.

The server may only *request*: every privacy-relevant value a node uses (mode, scope, eps,
batch size, local steps, σ, the metrics that leave) is decided by the node's own policy
(:class:`~.policy.NodePolicy`, from its node config). A request is read from exactly one
place -- the message's ConfigRecord ``"config"`` -- through one named field set
(:data:`REQUEST_FIELDS`), and resolved against the node's policy once, by :class:`SSGDMod`:

* the message holds exactly one ArrayRecord ``"arrays"`` and one ConfigRecord ``"config"``
  and nothing else (another record name -- ``"cfg"`` -- is refused, not ignored);
* every key of ``"config"`` is a known request field with a value of its type (an unknown
  key, a ``_``/``-`` spelling of a known one, a wrong type: refused);
* the **run config** (``flwr run --run-config``, the app's pyproject -- both server-controlled)
  never sets a node's value. A run-config key that names a node setting
  (:data:`NODE_SETTING_KEYS`) is refused; one of the run keys that mirror a request field
  (``mode``, ``scope``, ``batch-size``, ``local-steps``, ``client-lr``, ``dataset``, ``partition``,
  ``alpha``) must agree with the resolved request, else the request is refused; ``data-dir`` and
  ``test-size`` are the server's own (:data:`SERVER_ONLY_KEYS`): the node reads its data from its
  node config's ``dataset`` and ``data-dir`` only, and its share from its node config's
  ``partition``, ``alpha`` and ``partition-seed`` (the run config's ``seed`` is the server's);
* the resolved :class:`NodeRequest` holds every value filled in (a field the server did not
  send takes the node's own value) and is what the ClientApp computes with: the mod hands it
  to the ClientApp through the node's ``Context`` (:func:`put`, :func:`get`), so the two
  cannot disagree. The packaged ClientApp refuses to train without it.

Every refusal is a :class:`~.policy.PolicyError` whose text stays on the node (its log);
what leaves is a fixed string (:mod:`.mod`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from . import keys
from .policy import (ALLOW_EVALUATE, ALLOWED_METRICS, DP_DELTA, MAX_BATCH_SIZE, MAX_CLIENT_LR, MAX_EPSILON, MAX_LOCAL_STEPS,
                     MIN_BATCH_SIZE, MIN_CLIENT_LR, MIN_NOISE_MULTIPLIER, PRIVACY_LEDGER, BATCH_KEY, PARTITION_SEED,
                     NodePolicy, PolicyError)

__all__ = ["NodeRequest", "REQUEST_FIELDS", "NODE_SETTING_KEYS", "RUN_CONFIG_MIRRORS", "SERVER_ONLY_KEYS", "parse_request",
           "put", "get",
           "STATE_KEY", "ARRAYS", "CONFIG", "DELTA", "read_fields", "check_run_config",
           "current_request"]

#: the record names of a train request (the strategy's ``arrayrecord_key`` / ``configrecord_key``)
ARRAYS, CONFIG = "arrays", "config"
#: the record name under which a delta-mode ClientApp replies with its update itself (the packaged one: the
#: direction of its local steps) instead of its new weights w': SSGDMod then normalises it as it is, without
#: subtracting the server's w (a difference rounded against a server-chosen w reveals |g_i|)
DELTA = "delta"

#: every field a request may carry, with its type
REQUEST_FIELDS: dict[str, type] = {
    keys.MODE: str, keys.SCOPE: str, keys.EPS: float, keys.BATCH_SIZE: int, keys.LOCAL_STEPS: int,
    keys.CLIENT_LR: float, keys.SEED: int, keys.ROUND: int, keys.DP_NOISE_MULTIPLIER: float,
    # Flower's DifferentialPrivacyClientSideFixedClipping asks the node's fixedclipping_mod to clip to
    # this norm (more protection, never less); SSGD itself does not use it
    "clipping_norm": float,
}

#: node-config keys and request-only keys: a run config holding one of them is refused
NODE_SETTING_KEYS = (keys.MODE, keys.SCOPE, keys.EPS, keys.DP_NOISE_MULTIPLIER, ALLOWED_METRICS, MIN_BATCH_SIZE,
                     MAX_BATCH_SIZE,
                     MIN_NOISE_MULTIPLIER, ALLOW_EVALUATE, MAX_LOCAL_STEPS, MIN_CLIENT_LR, MAX_CLIENT_LR, MAX_EPSILON,
                     DP_DELTA, PRIVACY_LEDGER, BATCH_KEY, PARTITION_SEED)

#: run-config keys (read by the server) that mirror a request field: they must agree with the request
#: (``dataset``: the server builds its model for it; the node computes on its own node config's ``dataset``;
#: ``partition``/``alpha``: the server checks the split with them; the node's share is its own node config's)
RUN_CONFIG_MIRRORS = {"mode": "mode", "scope": "scope", "batch-size": "batch_size", "local-steps": "local_steps",
                      "client-lr": "client_lr", "dataset": "dataset", "partition": "partition", "alpha": "alpha"}

#: run-config keys a node never reads: ``data-dir`` and ``test-size`` are the server's own (its central
#: evaluation); the node reads its data from its node config's ``dataset`` / ``data-dir`` only
SERVER_ONLY_KEYS = ("data-dir", "test-size")

#: where the resolved request travels from SSGDMod to the ClientApp (the node's own Context.state)
STATE_KEY = "ssgd-request"


@dataclass(frozen=True)
class NodeRequest:
    """A train request resolved against the node's policy: the values the node computes with."""

    mode: str
    scope: str
    eps: float
    batch_size: int
    local_steps: int
    client_lr: float
    seed: int
    round: int
    noise_multiplier: float | None = None
    #: the node's own data (node config ``dataset`` / ``data-dir``), never the run config's
    dataset: str = "mnist"
    data_dir: str = ""
    #: the node's own share (node config ``partition`` / ``alpha`` / ``partition-seed``), never the run config's
    partition: str = "iid"
    alpha: float = 0.5
    partition_seed: int = 0
    #: the node's own smallest batch (node config ``min-batch-size``): a share below it refuses every request
    min_batch_size: int = 1

    def to_record(self):
        from flwr.app import ConfigRecord

        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return ConfigRecord(d)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "NodeRequest":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(record).items() if k in names})


def _typed(key: str, value: Any) -> Any:
    want = REQUEST_FIELDS[key]
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(f"request field {key!r}={value!r} is not an integer")
        return int(value)
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PolicyError(f"request field {key!r}={value!r} is not a finite number")
        return float(value)
    if not isinstance(value, str):
        raise PolicyError(f"request field {key!r}={value!r} is not a string")
    return value


def _norm_key(key: Any) -> str:
    return str(key).strip().lower().replace("_", "-")


def read_fields(msg) -> dict[str, Any]:
    """The typed request fields of ``msg`` (its ConfigRecord ``"config"``); :class:`PolicyError` when the
    message holds other records, an unknown or duplicate field, or a value of the wrong type."""
    content = msg.content
    names = sorted(list(content.array_records) + list(content.config_records) + list(content.metric_records))
    if names != sorted([ARRAYS, CONFIG]) or ARRAYS not in content.array_records or CONFIG not in content.config_records:
        raise PolicyError(f"a train request must hold exactly the records {[ARRAYS, CONFIG]}, got {names[:6]}")
    raw = dict(content.config_records[CONFIG])
    seen: dict[str, str] = {}
    for key in raw:
        if key not in REQUEST_FIELDS:
            raise PolicyError(f"unknown request field {str(key)[:60]!r}; known: {sorted(REQUEST_FIELDS)}")
        n = _norm_key(key)
        if n in seen:
            raise PolicyError(f"duplicate request field {key!r} (also {seen[n]!r})")
        seen[n] = key
    return {k: _typed(k, v) for k, v in raw.items()}


def parse_request(msg, policy: NodePolicy, run_config: Mapping[str, Any] | None = None) -> NodeRequest:
    """The train request of ``msg`` resolved against ``policy``; :class:`PolicyError` when the message
    is not exactly the named field set (:func:`read_fields`), when it asks for less protection than
    the policy allows, or when the run config touches a node setting or disagrees with the request."""
    cfg = read_fields(msg)
    mode = cfg.get(keys.MODE, policy.mode)
    if mode != policy.mode:
        raise PolicyError(f"the server asks {keys.MODE}={mode!r}, this node computes {policy.mode!r} "
                          f"(node config {keys.MODE}); not sent")
    policy.check_request(cfg)  # scope, eps, batch size, local steps
    sigma = cfg.get(keys.DP_NOISE_MULTIPLIER)
    client_lr = policy.check_client_lr(cfg.get(keys.CLIENT_LR, 0.05))
    rnd = cfg.get(keys.ROUND, 0)
    if rnd < 0:
        raise PolicyError(f"request field {keys.ROUND!r}={rnd!r} must be >= 0")
    req = NodeRequest(mode=mode, scope=policy.scope, eps=policy.eps,
                      batch_size=cfg.get(keys.BATCH_SIZE, policy.min_batch_size),
                      local_steps=cfg.get(keys.LOCAL_STEPS, 1), client_lr=client_lr, seed=cfg.get(keys.SEED, 0),
                      round=rnd, noise_multiplier=sigma, dataset=policy.dataset, data_dir=policy.data_dir,
                      partition=policy.partition, alpha=policy.alpha, partition_seed=policy.partition_seed,
                      min_batch_size=policy.min_batch_size)
    check_run_config(run_config or {}, req)
    return req


def check_run_config(run_config: Mapping[str, Any], req: NodeRequest) -> None:
    """Refuse a run config that names a node setting, or whose mirror of a request field disagrees with ``req``."""
    settings = {_norm_key(k) for k in NODE_SETTING_KEYS}
    mirrors = {_norm_key(k): f for k, f in RUN_CONFIG_MIRRORS.items()}
    seen: dict[str, str] = {}
    for key, value in run_config.items():
        n = _norm_key(key)
        if n in seen and n in (settings | set(mirrors)):
            raise PolicyError(f"the run config sets {key!r} twice (also {seen[n]!r})")
        seen[n] = str(key)
        if n in settings:
            raise PolicyError(f"the run config sets the node setting {key!r}; a node takes it only from its own "
                              "node config")
        if n in mirrors:
            want = getattr(req, mirrors[n])
            try:
                same = type(want)(value) == want if not isinstance(value, bool) else False
            except (TypeError, ValueError):
                same = False
            if not same:
                raise PolicyError(f"the run config's {key!r} disagrees with the request this node resolved; not sent")


def put(ctxt, req: NodeRequest) -> None:
    """Hand the resolved request to the ClientApp (the node's own ``Context.state``)."""
    if ctxt is not None and getattr(ctxt, "state", None) is not None:
        ctxt.state[STATE_KEY] = req.to_record()


def drop(ctxt) -> None:
    if ctxt is not None and getattr(ctxt, "state", None) is not None and STATE_KEY in ctxt.state:
        del ctxt.state[STATE_KEY]


def current_request(ctxt) -> NodeRequest:
    """The request :class:`SSGDMod` resolved for this message; :class:`PolicyError` without one
    (the ClientApp runs without SSGDMod)."""
    state = getattr(ctxt, "state", None)
    if state is None or STATE_KEY not in state.config_records:
        raise PolicyError("no resolved request: this ClientApp trains only under SSGDMod (mods=[..., SSGDMod()])")
    return NodeRequest.from_record(state.config_records[STATE_KEY])


get = current_request
