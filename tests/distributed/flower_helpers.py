"""Shared helpers for the Flower tests: messages as a SuperNode would receive them."""

from __future__ import annotations

import numpy as np


def identity() -> None:
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def record(arrays: dict[str, np.ndarray]):
    from ssgd.distributed.flower.validation import record_from_arrays

    return record_from_arrays(arrays)


def request(arrays: dict[str, np.ndarray], config: dict | None = None, message_type: str = "train", node: int = 7):
    """A server -> node message carrying ``arrays`` and ``config``."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from ssgd.distributed.flower.local import with_message_id

    identity()
    msg = Message(RecordDict({"arrays": record(arrays), "config": ConfigRecord(dict(config or {}))}), node,
                  message_type)
    return with_message_id(msg, "m-1")


def node_context(node_config: dict | None = None, node_id: int = 7):
    """The Context a SuperNode hands its ClientApp and mods (its node config is the node's own policy)."""
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=node_id, node_config=dict(node_config or {}), state=RecordDict(), run_config={})


def reply_with(arrays_list: list[dict[str, np.ndarray]], metrics: dict | None = None):
    """A ClientApp stand-in that replies with the given ArrayRecords (zero, one or several)."""
    from flwr.app import Message, MetricRecord, RecordDict

    def call_next(msg, ctxt):
        content = {f"arrays{i or ''}": record(a) for i, a in enumerate(arrays_list)}
        content["metrics"] = MetricRecord(dict(metrics or {"num-examples": 1}))
        return Message(RecordDict(content), reply_to=msg)

    return call_next


def reply_message(to, arrays: dict[str, np.ndarray] | None, *, error: str | None = None):
    from flwr.app import Error, Message, MetricRecord, RecordDict

    if error is not None:
        return Message(Error(code=2, reason=error), reply_to=to)
    return Message(RecordDict({"arrays": record(arrays), "metrics": MetricRecord({"num-examples": 1})}), reply_to=to)


def model_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
            "fc.bias": rng.standard_normal(4).astype(np.float32)}


def norm(arrays: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays.values())))


def pushed(msg, message_id: str):
    """``msg`` as a grid leaves it after pushing: its message id set in place (Flower's grids do this)."""
    msg.metadata.__dict__["_message_id"] = message_id
    return msg
