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

Scope (``ssgd-scope``: ``"global"`` or ``"layer"``) and ``ssgd-eps`` are read the same way.
The normalisation is :func:`ssgd.unit_` (float32 norms, zero stays zero, NaN refused).

Like Flower's ``LocalDpMod``, the mod never crashes the node: a malformed request or
reply (not exactly one ArrayRecord, names or shapes that differ from the model it was
sent, non-finite values, a bad setting) becomes an error reply
(``ErrorCode.MOD_FAILED_PRECONDITION``) whose reason says what was wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ...transform import DEFAULT_EPS, SCOPES, NonFiniteGradientError, unit_
from . import keys

__all__ = ["SSGDMod", "ssgd_mod"]

log = logging.getLogger(__name__)


class _ModError(Exception):
    pass


def _config_of(msg) -> dict[str, Any]:
    records = msg.content.config_records
    if "config" in records:
        return dict(records["config"])
    if len(records) == 1:
        return dict(next(iter(records.values())))
    return {}


class SSGDMod:
    """Client mod: normalise the outgoing update (gradient or model delta) to a unit vector.

    Parameters are the defaults used when a message's ConfigRecord does not set them:
    ``mode`` ("fedsgd" | "delta"), ``scope`` ("global" | "layer"), ``eps`` (> 0).
    """

    def __init__(self, mode: str = "fedsgd", scope: str = "global", eps: float = DEFAULT_EPS) -> None:
        self.mode, self.scope, self.eps = self._check(mode, scope, eps)

    @staticmethod
    def _check(mode: Any, scope: Any, eps: Any) -> tuple[str, str, float]:
        if mode not in keys.MODES:
            raise ValueError(f"Invalid {keys.MODE}={mode!r}; expected one of {keys.MODES}")
        if scope not in SCOPES:
            raise ValueError(f"Invalid {keys.SCOPE}={scope!r}; expected one of {SCOPES}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"Invalid {keys.EPS}={eps!r}; must be a float > 0, e.g. 1e-12")
        return mode, scope, float(eps)

    def settings(self, msg) -> tuple[str, str, float]:
        """This call's (mode, scope, eps): the message's ConfigRecord over the defaults."""
        cfg = _config_of(msg)
        return self._check(cfg.get(keys.MODE, self.mode), cfg.get(keys.SCOPE, self.scope),
                           cfg.get(keys.EPS, self.eps))

    def __call__(self, msg, ctxt, call_next):
        from flwr.app import MessageType

        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            mode, scope, eps = self.settings(msg)
            sent = self._single_record(msg, "request")
            sent_meta = {k: tuple(int(s) for s in a.shape) for k, a in sent.items()}
            sent_arrays = {k: np.asarray(a.numpy()) for k, a in sent.items()} if mode == "delta" else None
        except (_ModError, ValueError, TypeError) as e:
            return self._error(msg, str(e))

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
            unit_(tensors, scope=scope, eps=eps, names=names)
        except NonFiniteGradientError as e:
            return self._error(msg, f"SSGDMod: {e}")
        except (_ModError, ValueError, TypeError) as e:
            return self._error(msg, f"SSGDMod: {e}")

        from flwr.app import Array, ArrayRecord

        out.content[key] = ArrayRecord({n: Array(t.numpy()) for n, t in zip(names, tensors)})
        return out

    @staticmethod
    def _single_record_key(msg, what: str) -> str:
        records = msg.content.array_records
        if len(records) != 1:
            raise _ModError(f"SSGDMod expects exactly one ArrayRecord in the {what}, found {len(records)}")
        return next(iter(records))

    def _single_record(self, msg, what: str):
        return msg.content.array_records[self._single_record_key(msg, what)]

    @staticmethod
    def _error(msg, reason: str):
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode

        log.error(reason)
        return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


#: A ready instance with the defaults (mode and scope still come from each message's config).
ssgd_mod = SSGDMod()
