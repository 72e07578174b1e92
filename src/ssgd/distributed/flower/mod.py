r"""A Flower client mod that turns a node's outgoing update into its unit vector.

Put it in a ``ClientApp``'s mods; it acts on ``train`` messages only::

    from ssgd.distributed.flower import SSGDMod
    app = ClientApp(mods=[SSGDMod()])

What the ``ClientApp`` returns, and what leaves the node, depends on the mode (read per
call from the incoming ConfigRecord key ``ssgd-mode``, default from the constructor):

``"fedsgd"``
    the ``ClientApp`` replies with a gradient :math:`g`; the node sends :math:`g/\lVert g\rVert`.
``"delta"``
    the ``ClientApp`` replies with its locally trained weights :math:`w'` (an unchanged
    FedAvg-style ``ClientApp`` works); the node sends :math:`(w'-w)/\lVert w'-w\rVert`,
    where :math:`w` is the global model it received -- never :math:`w'` itself, which
    would reveal the modulus.

The normalisation is :func:`ssgd.unit_` (float32 norms, zero stays zero, NaN refused).

**The node decides how it normalises and what leaves it** (:class:`~.policy.NodePolicy`):
scope, eps, the smallest batch and the metrics that may leave come from the mod's
constructor and, over it, the node's own ``node_config``; the server's ``ssgd-scope`` /
``ssgd-eps`` / ``batch-size`` are only requests, refused (error reply naming the setting)
when they ask for less protection. The reply that leaves the node is rebuilt from scratch:
one ``ArrayRecord`` with the unit vector, plus -- only if the node's ``allowed-metrics``
names them -- scalar metrics; nothing else of the ClientApp's reply (no loss, no count, no
config echo) passes. Before sending, the mod checks the vector it built: norm 1 within
``unit_tol`` (per tensor for ``scope="layer"``) or exactly 0, else an error reply.

Like Flower's ``LocalDpMod``, the mod never crashes the node: a malformed request or
reply (not exactly one ArrayRecord, names or shapes that differ from the model it was
sent, non-finite values, a bad setting) becomes an error reply
(``ErrorCode.MOD_FAILED_PRECONDITION``) whose reason says what was wrong.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from ...transform import DEFAULT_EPS, NonFiniteGradientError, unit_
from . import keys
from .policy import NodePolicy, PolicyError, check_outgoing, request_config

__all__ = ["SSGDMod", "ssgd_mod", "error_reply"]

log = logging.getLogger(__name__)


class _ModError(Exception):
    pass


def error_reply(msg, reason: str):
    """The error reply (``ErrorCode.MOD_FAILED_PRECONDITION``) a mod sends instead of an update."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    log.error(reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


class SSGDMod:
    """Client mod: normalise the outgoing update (gradient or model delta) to a unit vector.

    ``mode`` ("fedsgd" | "delta") is the default when a message sets no ``ssgd-mode``. The
    other arguments are this node's policy (:class:`~.policy.NodePolicy`; the node config's
    keys override them): ``scope``, ``eps``, ``allowed_metrics`` (default: none),
    ``min_batch_size`` and ``unit_tol``.
    """

    def __init__(self, mode: str = "fedsgd", scope: str = "global", eps: float = DEFAULT_EPS, *,
                 allowed_metrics: Any = (), min_batch_size: int = 1, unit_tol: float = 1e-3) -> None:
        if mode not in keys.MODES:
            raise ValueError(f"Invalid {keys.MODE}={mode!r}; expected one of {keys.MODES}")
        self.mode = mode
        self.policy = NodePolicy(scope=scope, eps=eps, allowed_metrics=allowed_metrics,
                                 min_batch_size=min_batch_size, unit_tol=unit_tol)

    @property
    def scope(self) -> str:
        return self.policy.scope

    @property
    def eps(self) -> float:
        return self.policy.eps

    def node_policy(self, ctxt) -> NodePolicy:
        """This node's policy: the constructor's, with the node config (``ctxt.node_config``) over it."""
        return NodePolicy.from_node_config(getattr(ctxt, "node_config", None), self.policy)

    def settings(self, msg, ctxt=None) -> tuple[str, NodePolicy]:
        """This call's mode (from the request) and the node's policy, after checking the request against it."""
        policy = self.node_policy(ctxt)
        cfg = request_config(msg)
        mode = cfg.get(keys.MODE, self.mode)
        if mode not in keys.MODES:
            raise ValueError(f"Invalid {keys.MODE}={mode!r}; expected one of {keys.MODES}")
        policy.check_request(cfg)
        return mode, policy

    def __call__(self, msg, ctxt, call_next):
        from flwr.app import MessageType

        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            mode, policy = self.settings(msg, ctxt)
            sent = self._single_record(msg, "request")
            sent_meta = {k: tuple(int(s) for s in a.shape) for k, a in sent.items()}
            sent_arrays = {k: np.asarray(a.numpy()) for k, a in sent.items()} if mode == "delta" else None
        except (_ModError, PolicyError, ValueError, TypeError) as e:
            return error_reply(msg, f"SSGDMod: {e}")

        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        try:
            key = self._single_record_key(out, "reply")
            reply = out.content.array_records[key]
            names = list(reply.keys())
            tensors = []
            for name in names:
                if name not in sent_meta:
                    raise _ModError(f"the reply carries {name!r}, which is not in the model the node was sent")
                a = np.asarray(reply[name].numpy())
                if tuple(a.shape) != sent_meta[name]:
                    raise _ModError(f"the reply's {name!r} has shape {tuple(a.shape)}, the model's is {sent_meta[name]}")
                if not np.issubdtype(a.dtype, np.floating):
                    raise _ModError(f"the reply's {name!r} has dtype {a.dtype}; SSGD updates must be floating point")
                t = torch.from_numpy(np.array(a, copy=True))
                if mode == "delta":
                    t = t - torch.from_numpy(np.asarray(sent_arrays[name], dtype=a.dtype))
                tensors.append(t)
            if not tensors:
                raise _ModError("the reply's ArrayRecord is empty")
            unit_(tensors, scope=policy.scope, eps=policy.eps, names=names)
            sq = [float(torch.sum(t.double() ** 2)) for t in tensors]
            norms = [math.sqrt(sum(sq))] if policy.scope == "global" else [math.sqrt(v) for v in sq]
            if not check_outgoing(norms, policy.unit_tol):
                # no number in the reason: it would travel to the server
                raise _ModError(f"the outgoing update is not a unit vector (scope={policy.scope!r}) nor 0; not sent")
            metrics = {}
            for record in out.content.metric_records.values():
                metrics.update(policy.allowed(record))
        except NonFiniteGradientError as e:
            return error_reply(msg, f"SSGDMod: {e}")
        except (_ModError, ValueError, TypeError) as e:
            return error_reply(msg, f"SSGDMod: {e}")

        from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

        content = RecordDict({key: ArrayRecord({n: Array(t.numpy()) for n, t in zip(names, tensors)})})
        if metrics:
            content["metrics"] = MetricRecord(metrics)
        return Message(content=content, reply_to=msg)

    @staticmethod
    def _single_record_key(msg, what: str) -> str:
        records = msg.content.array_records
        if len(records) != 1:
            raise _ModError(f"SSGDMod expects exactly one ArrayRecord in the {what}, found {len(records)}")
        return next(iter(records))

    def _single_record(self, msg, what: str):
        return msg.content.array_records[self._single_record_key(msg, what)]


#: A ready instance with the default policy (the node config may change it; the mode comes from each request).
ssgd_mod = SSGDMod()
