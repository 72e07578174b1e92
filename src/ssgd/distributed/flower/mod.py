r"""A Flower client mod that turns a node's outgoing update into its unit vector.

Put it in a ``ClientApp``'s mods; it acts on ``train`` messages only::

    from ssgd.distributed.flower import SSGDMod
    app = ClientApp(mods=[SSGDMod()])

What the ``ClientApp`` returns, and what leaves the node, depends on the node's mode (its
policy: the constructor's ``mode``, node config ``ssgd-mode``; a request for another is refused):

``"fedsgd"``
    the ``ClientApp`` replies with a gradient :math:`g`; the node sends :math:`g/\lVert g\rVert`.
``"delta"``
    the packaged ``ClientApp`` replies with its update itself (the direction of its local
    steps, under the record :data:`~.request.DELTA`), which the node normalises as it is.
    An unchanged FedAvg-style ``ClientApp`` that replies with its trained weights :math:`w'`
    works too: the node then sends :math:`(w'-w)/\lVert w'-w\rVert`, where :math:`w` is the
    global model it received -- but :math:`w'` is rounded against the server's :math:`w`,
    and a crafted :math:`w` and ``client-lr`` turn that rounding into the norm
    (docs/threat-model.md). Never :math:`w'` itself, which would reveal the modulus.

The normalisation is :func:`ssgd.unit_` (float32 norms, zero stays zero, NaN refused).

**The node decides how it normalises and what leaves it** (:class:`~.policy.NodePolicy`):
mode, scope, eps, the smallest batch, the most local steps and the metrics that may leave
come from the mod's constructor and, over it, the node's own ``node_config``. The server's
message is parsed once (:func:`~.request.parse_request`: one ConfigRecord ``"config"``, named
fields only; a run config that touches these values is refused) and resolved against the
policy; the ClientApp computes with that same resolved request (handed over in the node's
``Context``). The reply that leaves the node is rebuilt from scratch:
one ``ArrayRecord`` with the unit vector, plus -- only if the node's ``allowed-metrics``
names them -- scalar metrics; nothing else of the ClientApp's reply (no loss, no count, no
config echo) passes. Before sending, the mod checks the vector it built: norm 1 within
``unit_tol`` (per tensor for ``scope="layer"``) or exactly 0, else an error reply.

Like Flower's ``LocalDpMod``, the mod never crashes the node: a malformed or refused request,
a raising ClientApp, or a bad reply (not exactly one ArrayRecord, names or shapes that differ
from the model it was sent, non-finite values) becomes an error reply
(``ErrorCode.MOD_FAILED_PRECONDITION``) with one of two **fixed** texts (:data:`REFUSED`:
decided from the request alone, before any data was touched; :data:`NOT_SENT`: everything
after). What went wrong is logged on the node only: a reason naming a parameter or a value
would tell the server something about the data.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ...report.validate import bounded_text
from ...transform import DEFAULT_EPS, NonFiniteGradientError, grad_norms, unit_
from . import keys
from . import request as node_request
from .policy import NodePolicy, check_outgoing

__all__ = ["SSGDMod", "ssgd_mod", "error_reply", "REFUSED", "NOT_SENT", "BUDGET_SPENT", "PUBLIC_REASONS"]

log = logging.getLogger(__name__)

#: the only error texts that leave a node (fixed: no setting name, no value, no number from the data)
REFUSED = "request refused by the node's policy (details in the node's log)"
NOT_SENT = "no update sent (details in the node's log)"
#: node-local DP: the node's own release budget (node config ``max-epsilon``) is spent
BUDGET_SPENT = "this node's privacy budget is spent (details in the node's log)"
PUBLIC_REASONS = (REFUSED, NOT_SENT, BUDGET_SPENT)


class _ModError(Exception):
    pass


def error_reply(msg, public: str, detail: str = ""):
    """The error reply (``ErrorCode.MOD_FAILED_PRECONDITION``) a mod sends instead of an update: the
    fixed text ``public`` (one of :data:`PUBLIC_REASONS`) leaves the node; ``detail`` is logged here only."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    if public not in PUBLIC_REASONS:
        raise ValueError(f"an error reply carries one of the fixed texts {PUBLIC_REASONS}")
    log.error("%s: %s", public, bounded_text(detail, 2000))
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=public), reply_to=msg)


class SSGDMod:
    """Client mod: normalise the outgoing update (gradient or model delta) to a unit vector.

    The arguments are this node's policy (:class:`~.policy.NodePolicy`; the node config's
    keys override them): ``mode`` (what the node computes; a request for another is refused),
    ``scope``, ``eps``, ``allowed_metrics`` (default: none), ``min_batch_size``,
    ``max_local_steps`` and ``unit_tol``.
    """

    def __init__(self, mode: str = "fedsgd", scope: str = "global", eps: float = DEFAULT_EPS, *,
                 allowed_metrics: Any = (), min_batch_size: int = 1, max_local_steps: int = 100,
                 unit_tol: float = 1e-3) -> None:
        if mode not in keys.MODES:
            raise ValueError(f"Invalid {keys.MODE}={mode!r}; expected one of {keys.MODES}")
        self.policy = NodePolicy(scope=scope, eps=eps, allowed_metrics=allowed_metrics, mode=mode,
                                 min_batch_size=min_batch_size, max_local_steps=max_local_steps, unit_tol=unit_tol)

    @property
    def mode(self) -> str:
        return self.policy.mode

    @property
    def scope(self) -> str:
        return self.policy.scope

    @property
    def eps(self) -> float:
        return self.policy.eps

    def node_policy(self, ctxt) -> NodePolicy:
        """This node's policy: the constructor's, with the node config (``ctxt.node_config``) over it."""
        return NodePolicy.from_node_config(getattr(ctxt, "node_config", None), self.policy)

    def settings(self, msg, ctxt=None) -> tuple[node_request.NodeRequest, NodePolicy]:
        """This call's request resolved against the node's policy (:func:`~.request.parse_request`)."""
        policy = self.node_policy(ctxt)
        return node_request.parse_request(msg, policy, getattr(ctxt, "run_config", None)), policy

    def __call__(self, msg, ctxt, call_next):
        from flwr.app import MessageType

        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            req, policy = self.settings(msg, ctxt)
            sent = msg.content.array_records[node_request.ARRAYS]
            sent_meta = {k: tuple(int(s) for s in a.shape) for k, a in sent.items()}
            sent_arrays = {k: np.asarray(a.numpy()) for k, a in sent.items()} if req.mode == "delta" else None
        except Exception as e:  # noqa: BLE001 - read from the request alone: whatever fails, only the fixed text leaves
            return error_reply(msg, REFUSED, f"SSGDMod: {type(e).__name__}: {e}")

        node_request.put(ctxt, req)
        try:
            out = call_next(msg, ctxt)
        except Exception as e:  # the ClientApp raised: its text may carry data; it stays here
            return error_reply(msg, NOT_SENT, f"SSGDMod: the ClientApp raised {type(e).__name__}: {e}")
        finally:
            node_request.drop(ctxt)
        if out.has_error():
            return error_reply(msg, NOT_SENT, f"SSGDMod: the ClientApp replied with an error: {out.error.reason}")
        try:
            key = self._single_record_key(out, "reply")
            reply = out.content.array_records[key]
            # the packaged ClientApp replies with its update itself (record DELTA): normalised as it is; another
            # (FedAvg-style) app replies with w', and the difference w' - w rounds against the server's w
            subtract = req.mode == "delta" and key != node_request.DELTA
            key = node_request.ARRAYS if key == node_request.DELTA else key
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
                if subtract:
                    t = t - torch.from_numpy(np.asarray(sent_arrays[name], dtype=a.dtype))
                tensors.append(t)
            if not tensors:
                raise _ModError("the reply's ArrayRecord is empty")
            unit_(tensors, scope=policy.scope, eps=policy.eps, names=names)
            if not check_outgoing(self.outgoing_norms(tensors, policy.scope), policy.unit_tol):
                raise _ModError(f"the outgoing update is not a unit vector (scope={policy.scope!r}) nor 0; not sent")
            metrics = {}
            for record in out.content.metric_records.values():
                metrics.update(policy.allowed(record))
        except (NonFiniteGradientError, _ModError, ValueError, TypeError) as e:
            return error_reply(msg, NOT_SENT, f"SSGDMod: {e}")

        from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

        content = RecordDict({key: ArrayRecord({n: Array(t.numpy()) for n, t in zip(names, tensors)})})
        if metrics:
            content["metrics"] = MetricRecord(metrics)
        return Message(content=content, reply_to=msg)

    @staticmethod
    def outgoing_norms(tensors, scope: str) -> list[float]:
        """The norms the outgoing check compares with 1: one joint norm (global) or one per tensor
        (layer), from the library's :func:`ssgd.transform.grad_norms`."""
        per = grad_norms(tensors)
        return [float(torch.linalg.vector_norm(per))] if scope == "global" else [float(v) for v in per]

    @staticmethod
    def _single_record_key(msg, what: str) -> str:
        records = msg.content.array_records
        if len(records) != 1:
            raise _ModError(f"SSGDMod expects exactly one ArrayRecord in the {what}, found {len(records)}")
        return next(iter(records))


#: A ready instance with the default policy (the node config may change it).
ssgd_mod = SSGDMod()
