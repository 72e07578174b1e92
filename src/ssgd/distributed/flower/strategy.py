r"""A Flower strategy (Message API) that applies SSGD unit updates with a server-side learning rate.

Each sampled node sends a unit vector :math:`u_i` (see :class:`~ssgd.distributed.flower.SSGDMod`).
Every reply is validated first (:func:`~ssgd.distributed.flower.validate_update`); a bad one is
rejected, logged with its node id, and the round goes on with the others. With the
accepted set :math:`A` the global model moves by

.. math::
    \text{fedsgd:}\quad w \leftarrow w - \eta\,\frac{1}{|A|}\sum_{i\in A} u_i, \qquad
    \text{delta:}\quad w \leftarrow w + \eta\,\frac{1}{|A|}\sum_{i\in A} u_i,

so a round moves the model by at most :math:`\eta` (:math:`\eta\sqrt L` with ``scope="layer"``
and :math:`L` tensors). One node's own term is at most :math:`\eta/|A|` (:math:`\eta\sqrt L/|A|`),
but its presence also changes the others' weight from :math:`1/(|A|-1)` to :math:`1/|A|`: a node
pointing against the honest sum moves the result by up to :math:`2\eta/|A|` relative to the
round without it (docs/flower.md has measured numbers).

Every field of every reply is validated inside a guarded section: the arrays
(:func:`~ssgd.distributed.flower.validate_update`), the records (exactly one ArrayRecord, at
most one MetricRecord, no ConfigRecord), every metric (known name, finite scalar of the
right type), and the sender: a reply from a node that was not sampled this round, or a
second reply from the same node, is rejected. A bad reply is logged with its node id and
the round goes on; an exception anywhere in the arithmetic leaves the model unchanged for
that round instead of crashing the server.
Only the trainable parameters are updated; other arrays of the global record (buffers) are
kept as they are.

Nodes are sampled among those connected *now* (Flower's ``sample_nodes`` waits forever for
``min_available_nodes``; this strategy waits at most ``node_wait_timeout`` seconds and then
raises a clear error), so a node that disappears mid-run only shrinks the next rounds.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from flwr.common.constant import SUPERLINK_NODE_ID

from ...report.validate import bounded_text
from ...transform import DEFAULT_EPS, check_scope
from . import keys
from .policy import METRICS
from .validation import UpdateSpec, validate_update

__all__ = ["SSGDStrategy", "NotEnoughNodesError"]

log = logging.getLogger(__name__)

try:  # the strategy is a real Flower strategy when flwr is installed
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg, Result
except ImportError as _e:  # pragma: no cover - flwr is an optional dependency
    raise ImportError("ssgd.distributed.flower needs Flower: pip install 'ssgd[flower]' (flwr>=1.42,<1.43)") from _e


class NotEnoughNodesError(RuntimeError):
    """Fewer than ``min_train_nodes`` nodes connected within ``node_wait_timeout`` seconds."""


class SSGDStrategy(FedAvg):
    """Apply validated unit updates with a server-side learning rate.

    Parameters
    ----------
    mode : "fedsgd" | "delta"
        What the nodes' unit vectors are: gradients (step against them) or local model deltas
        (step along them).
    server_lr : float
        :math:`\\eta`, the step length of one round (> 0).
    scope : "global" | "layer"
        The SSGD scope the nodes use (sent to them; validation checks it).
    strict : bool
        Require :math:`\\lVert u\\rVert = 1 \\pm` ``norm_tol`` (or exactly 0); otherwise only
        :math:`\\le 1 +` ``norm_tol`` (e.g. when a mod after SSGD perturbs the update).
    update_keys : names of the trainable arrays; default: every floating array of the initial record.
    client_config : extra settings sent to every node each round (``local-steps``, ``client-lr``, ...).
    min_train_nodes, fraction_train, fraction_evaluate, min_evaluate_nodes : as in ``FedAvg``.
    node_wait_timeout : seconds to wait for ``min_train_nodes`` connected nodes before giving up.
    straggler_timeout : once ``min_train_nodes`` replies are in, wait at most this many more seconds
        for the rest (0: wait up to the round's ``timeout``). A node that vanished mid-round then
        costs this grace period, not the whole timeout (Flower's SuperLink needs up to ~60 s of
        missed heartbeats before it lists a node as offline).
    seed : seed of the node sampling.
    """

    def __init__(
        self,
        *,
        mode: str = "fedsgd",
        server_lr: float = 0.1,
        scope: str = "global",
        eps: float = DEFAULT_EPS,
        strict: bool = True,
        norm_tol: float = 1e-3,
        update_keys: Sequence[str] | None = None,
        client_config: dict[str, Any] | None = None,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        fraction_evaluate: float = 0.0,
        min_evaluate_nodes: int = 0,
        node_wait_timeout: float = 120.0,
        straggler_timeout: float = 0.0,
        seed: int = 0,
    ) -> None:
        if mode not in keys.MODES:
            raise ValueError(f"Invalid mode={mode!r}; expected one of {keys.MODES}")
        if not (isinstance(server_lr, (int, float)) and server_lr > 0 and np.isfinite(server_lr)):
            raise ValueError(f"Invalid server_lr={server_lr!r}; must be a finite float > 0, e.g. 0.1")
        check_scope(scope)
        if min_train_nodes < 1:
            raise ValueError(f"Invalid min_train_nodes={min_train_nodes}; must be >= 1")
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"Invalid fraction_train={fraction_train}; must be in (0, 1]")
        if node_wait_timeout <= 0:
            raise ValueError(f"Invalid node_wait_timeout={node_wait_timeout}; must be > 0 seconds")
        super().__init__(fraction_train=fraction_train, fraction_evaluate=1.0,
                         min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes,
                         min_available_nodes=min_train_nodes)
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError(f"Invalid fraction_evaluate={fraction_evaluate}; must be in [0, 1] (0 = no node evaluation)")
        self.fraction_evaluate = fraction_evaluate
        self.mode, self.server_lr, self.scope, self.eps = mode, float(server_lr), scope, float(eps)
        self.strict, self.norm_tol = bool(strict), float(norm_tol)
        self.update_keys = tuple(update_keys) if update_keys is not None else None
        self.client_config = dict(client_config or {})
        self.node_wait_timeout = float(node_wait_timeout)
        if straggler_timeout < 0:
            raise ValueError(f"Invalid straggler_timeout={straggler_timeout}; must be >= 0 (0 = wait the full timeout)")
        self.straggler_timeout = float(straggler_timeout)
        self._rng = random.Random(seed)
        self._current: ArrayRecord | None = None
        self._spec: UpdateSpec | None = None
        #: per round: the node ids the train messages went to
        self.sampled: dict[int, set[int]] = {}
        #: per round: the train messages this strategy built (their ids are set when the grid pushes them)
        self.sent: dict[int, list[Message]] = {}
        #: per round: {"accepted": [(node_id, norm)], "rejected": [(node_id, reason)], "failed": [(node_id, reason)]}
        self.rounds: dict[int, dict[str, list]] = {}

    # ------------------------------------------------------------------ sampling / configure
    def summary(self) -> None:
        log.info("SSGDStrategy: mode=%s server_lr=%g scope=%s strict=%s tol=%g", self.mode, self.server_lr,
                 self.scope, self.strict, self.norm_tol)

    def _sample(self, grid, fraction: float, minimum: int) -> list[int]:
        deadline = time.monotonic() + self.node_wait_timeout
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= max(minimum, 1):
                break
            if time.monotonic() > deadline:
                raise NotEnoughNodesError(
                    f"only {len(nodes)} node(s) connected after {self.node_wait_timeout:.0f} s, need "
                    f"min_train_nodes={minimum}; start more SuperNodes or lower min-nodes")
            time.sleep(0.5)
        k = min(len(nodes), max(minimum, int(len(nodes) * fraction)))
        return sorted(self._rng.sample(nodes, k))

    def spec_for(self, arrays: ArrayRecord) -> UpdateSpec:
        names = self.update_keys
        if names is None:
            names = tuple(k for k, a in arrays.items() if np.issubdtype(np.dtype(a.dtype), np.floating))
        shapes = tuple(tuple(int(s) for s in arrays[k].shape) for k in names)
        dtypes = {str(arrays[k].dtype) for k in names}
        if len(dtypes) != 1:
            raise ValueError(f"the trainable arrays mix dtypes {sorted(dtypes)}; use one float dtype")
        return UpdateSpec(names, shapes, dtype=dtypes.pop(), scope=self.scope, strict=self.strict, tol=self.norm_tol)

    @property
    def spec(self) -> UpdateSpec | None:
        """What an update must look like in the current round (``None`` before the first round)."""
        return self._spec

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        self._current = arrays
        self._spec = self.spec_for(arrays)
        nodes = self._sample(grid, self.fraction_train, self.min_train_nodes)
        self.sampled[server_round] = {int(n) for n in nodes}
        cfg = ConfigRecord(dict(config))
        for k, v in self.client_config.items():
            cfg[k] = v
        cfg[keys.MODE] = self.mode
        cfg[keys.SCOPE] = self.scope
        cfg[keys.EPS] = self.eps
        cfg[keys.ROUND] = server_round
        log.info("round %d: sampled %d node(s): %s", server_round, len(nodes), nodes)
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
        messages = [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=n) for n in nodes]
        self.sent[server_round] = messages
        return messages

    def sent_ids(self, server_round: int) -> dict[str, int]:
        """``{message id: destination node}`` of the train messages sent in ``server_round`` (ids are
        set by the grid when it pushes a message)."""
        out = {}
        for m in self.sent.get(server_round, []):
            mid = m.metadata.message_id
            if mid:
                out[mid] = int(m.metadata.dst_node_id)
        return out

    def max_examples(self) -> int | None:
        """The most examples a node may report (``num-examples``): the batch size asked for, times the
        local steps in delta mode; ``None`` when this strategy asks for no batch size."""
        b = self.client_config.get(keys.BATCH_SIZE)
        if isinstance(b, bool) or not isinstance(b, int):
            return None
        steps = self.client_config.get(keys.LOCAL_STEPS, 1) if self.mode == "delta" else 1
        return b * steps if isinstance(steps, int) and not isinstance(steps, bool) else None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid):
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_evaluate, max(self.min_evaluate_nodes, 1))
        cfg = ConfigRecord(dict(config))
        cfg[keys.ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
        return [Message(content=record, message_type=MessageType.EVALUATE, dst_node_id=n) for n in nodes]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """FedAvg's metric averaging, but a malformed evaluate reply never crashes the server."""
        try:
            return super().aggregate_evaluate(server_round, replies)
        except Exception as e:  # e.g. InconsistentMessageReplies from one misbehaving node
            log.warning("round %d: evaluation metrics not aggregated (%s: %s)", server_round, type(e).__name__, e)
            return None

    # ------------------------------------------------------------------ aggregation
    def check_reply(self, server_round: int, msg: Message, seen: set[int]) -> tuple[int | None, str, Any]:
        """Validate one train reply: ``(node id, reason, payload)``; reason ``""`` means accepted, with
        payload ``(arrays, norm, metrics)``; reason ``"error: ..."`` marks an error reply. Never raises."""
        node = None
        try:
            node = int(msg.metadata.src_node_id)
            # every reply, an error reply included, must answer a message this strategy sent to that node in
            # this round: a replayed or foreign error reply is rejected, never counted as this round's failure
            sent = self.sent_ids(server_round)
            reply_to = msg.metadata.reply_to_message_id
            if reply_to not in sent:
                return node, f"a reply to a message not sent in round {server_round}", None
            if msg.has_error() and node == SUPERLINK_NODE_ID:
                # the SuperLink answers (from its own id) for a node it cannot reach: that node's failure
                node = sent[reply_to]
            if sent[reply_to] != node:
                return node, f"a reply from node {node} to a message sent to node {sent[reply_to]}", None
            if msg.has_error():  # carries no update (the SuperLink also sends these for vanished nodes)
                return node, f"error: error reply (code {msg.error.code}): {msg.error.reason}", None
            sampled = self.sampled.get(server_round, set())
            if node not in sampled:
                return node, f"node {node} was not sampled in round {server_round}", None
            if node in seen:
                return node, f"a second reply from node {node} in round {server_round} (one per node)", None
            seen.add(node)
            content = msg.content
            if len(content.config_records):
                return node, f"the reply carries ConfigRecord(s) {sorted(content.config_records)}; none allowed", None
            if len(content.metric_records) > 1:
                return node, f"the reply carries {len(content.metric_records)} MetricRecords; at most one allowed", None
            metrics: dict[str, float] = {}
            for record in content.metric_records.values():
                for k, v in record.items():
                    if k not in METRICS:
                        return node, f"unknown metric {k!r} (known: {', '.join(METRICS)})", None
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        return node, f"metric {k!r}={v!r} is not a finite number", None
                    if k == "num-examples" and (not isinstance(v, int) or v < 1):
                        return node, f"metric 'num-examples'={v!r} is not an integer >= 1", None
                    if k == "num-examples" and self.max_examples() is not None and v > self.max_examples():
                        return node, f"metric 'num-examples'={v!r} is more than the {self.max_examples()} asked for", None
                    if k == "train-loss" and v < 0:
                        return node, f"metric 'train-loss'={v!r} is negative", None
                    metrics[k] = v
            verdict, arrays = validate_update(content, self._spec)
            if not verdict.ok:
                return node, verdict.reason, None
            return node, "", (arrays, verdict.norm, metrics)
        except Exception as e:  # a malformed reply must never crash the server
            return node, f"malformed reply ({type(e).__name__}: {bounded_text(e)})", None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._current is None or self._spec is None:
            raise RuntimeError("aggregate_train called before configure_train")
        book = self.rounds.setdefault(server_round, {"accepted": [], "rejected": [], "failed": []})
        accepted: list[dict[str, np.ndarray]] = []
        losses: list[float] = []
        seen: set[int] = set()
        for msg in replies:
            node, reason, payload = self.check_reply(server_round, msg, seen)
            reason = bounded_text(reason)  # foreign text (a node's error reason, its names): one line, bounded
            if reason.startswith("error: "):
                book["failed"].append((node, reason[len("error: "):]))
                log.warning("round %d: node %s failed: %s", server_round, node, reason[len("error: "):])
                continue
            if reason:
                book["rejected"].append((node, reason))
                log.warning("round %d: rejected the reply of node %s: %s", server_round, node, reason)
                continue
            arrays, norm, metrics = payload
            book["accepted"].append((node, norm))
            accepted.append(arrays)
            if "train-loss" in metrics:  # opt-in on the node (allowed-metrics)
                losses.append(float(metrics["train-loss"]))
        n_ok = len(accepted)
        log.info("round %d: %d accepted, %d rejected, %d failed", server_round, n_ok, len(book["rejected"]),
                 len(book["failed"]))
        metrics = MetricRecord({"accepted": n_ok, "rejected": len(book["rejected"]), "failed": len(book["failed"])})
        if n_ok == 0:
            log.warning("round %d: no valid update; the global model is unchanged", server_round)
            return None, metrics
        try:
            if losses:  # the median over nodes: no single node (and no claimed example count) sets it
                metrics["train-loss"] = float(np.median(losses))
            sign = -1.0 if self.mode == "fedsgd" else 1.0
            step = sign * self.server_lr / n_ok
            new: dict[str, Array] = {}
            update_names = set(self._spec.names)
            for name, arr in self._current.items():
                if name in update_names:
                    w = np.asarray(arr.numpy())
                    total = np.sum([u[name].astype(np.float64) for u in accepted], axis=0)
                    new_w = np.asarray(w + step * total, dtype=w.dtype)
                    if not np.isfinite(new_w).all():
                        raise FloatingPointError(f"the new {name!r} is not finite")
                    new[name] = Array(new_w)
                else:
                    new[name] = arr
        except Exception as e:  # never crash the server on one round's arithmetic
            log.error("round %d: aggregation failed (%s: %s); the global model is unchanged", server_round,
                      type(e).__name__, e)
            return None, metrics
        return ArrayRecord(new), metrics

    # ------------------------------------------------------------------ the loop
    def send_and_receive(self, grid, messages: Iterable[Message], timeout: float) -> list[Message]:
        """Push ``messages`` and collect replies until all arrived, ``timeout`` passed, or -- with a
        ``straggler_timeout`` -- that long after ``min_train_nodes`` replies were in."""
        if self.straggler_timeout <= 0:
            return list(grid.send_and_receive(messages=messages, timeout=timeout))
        pending = {m for m in grid.push_messages(list(messages)) if m}
        replies: list[Message] = []
        end = time.monotonic() + timeout
        quorum_at = None
        while pending and time.monotonic() < end:
            got = list(grid.pull_messages(list(pending)))
            replies.extend(got)
            pending.difference_update({m.metadata.reply_to_message_id for m in got})
            if quorum_at is None and len(replies) >= self.min_train_nodes:
                quorum_at = time.monotonic()
            if not pending or (quorum_at is not None and time.monotonic() - quorum_at >= self.straggler_timeout):
                break
            time.sleep(0.5)
        if pending:
            log.warning("%d node(s) did not reply in time; going on with %d repl(ies)", len(pending), len(replies))
        return replies

    def start(  # noqa: PLR0913 - Flower's signature plus resume hooks
        self,
        grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        start_round: int = 1,
        on_round_end: Callable[[int, ArrayRecord, dict[str, Any]], None] | None = None,
        progress: bool = False,
    ) -> Result:
        """Run rounds ``start_round .. num_rounds`` (``start_round > 1`` resumes a run).

        ``on_round_end(round, arrays, info)`` is called after each round (checkpointing);
        ``timeout`` bounds the wait for replies in each round: a node that vanished is
        simply missing from that round's replies.
        """
        from tqdm.auto import tqdm

        if start_round < 1:
            raise ValueError(f"Invalid start_round={start_round}; must be >= 1")
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        arrays = initial_arrays
        result.arrays = arrays
        if evaluate_fn is not None and start_round == 1:
            res = evaluate_fn(0, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        for rnd in tqdm(range(start_round, num_rounds + 1), desc="flower rounds", disable=not progress, leave=False):
            replies = self.send_and_receive(grid, self.configure_train(rnd, arrays, train_config, grid), timeout)
            new_arrays, train_metrics = self.aggregate_train(rnd, replies)
            if new_arrays is not None:
                arrays = new_arrays
                result.arrays = arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[rnd] = train_metrics
            eval_msgs = list(self.configure_evaluate(rnd, arrays, evaluate_config, grid))
            if eval_msgs:
                agg = self.aggregate_evaluate(rnd, grid.send_and_receive(messages=eval_msgs, timeout=timeout))
                if agg is not None:
                    result.evaluate_metrics_clientapp[rnd] = agg
            info: dict[str, Any] = {"train": dict(train_metrics or {})}
            if evaluate_fn is not None:
                res = evaluate_fn(rnd, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
                    info["eval"] = dict(res)
            if on_round_end is not None:
                on_round_end(rnd, arrays, info)
        return result
