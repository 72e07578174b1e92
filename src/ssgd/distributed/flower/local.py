"""An in-process ``Grid``: N nodes that run a real ``ClientApp`` (mods included) in this process.

For many-node experiments and fast tests of the very code a SuperNode runs, without a
SuperLink. It mimics what a deployment does with misbehaviour: a ``ClientApp`` exception
becomes an error reply (``CLIENT_APP_RAISED_EXCEPTION``), a node marked dead with
:meth:`InProcessGrid.kill` just never answers (as a vanished SuperNode), and each node
receives its own copy of the message (nothing is shared between nodes).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid

__all__ = ["InProcessGrid", "with_message_id"]

log = logging.getLogger(__name__)


def with_message_id(msg: Message, message_id: str, *, content: RecordDict | None = None) -> Message:
    """A copy of ``msg`` (optionally with other ``content``) carrying ``message_id``, as a SuperLink
    stamps every message it forwards; built through Flower's public ``Metadata``/``Message`` constructors."""
    md = msg.metadata
    meta = Metadata(run_id=md.run_id, message_id=message_id, src_node_id=md.src_node_id, dst_node_id=md.dst_node_id,
                    reply_to_message_id=md.reply_to_message_id, group_id=md.group_id, created_at=md.created_at,
                    ttl=md.ttl, message_type=md.message_type, src_task_id=md.src_task_id, dst_task_id=md.dst_task_id)
    return Message(content=msg.content if content is None else content, metadata=meta)


class InProcessGrid(Grid):
    """``num_nodes`` nodes, each with node config ``{"partition-id": i, "num-partitions": N,
    "batch-key": "in-process-node-<i>"}`` plus ``node_configs[i]`` (e.g. ``{"fault": "nan"}``), all running
    ``client_app``. The fixed ``batch-key`` (the experimenter owns every node; ``node_configs`` may set another)
    makes in-process runs (``ssgd flower local``) reproducible; it is no secret from this process's server."""

    def __init__(self, client_app, num_nodes: int, run_config: Mapping[str, Any],
                 node_configs: Sequence[Mapping[str, Any]] | None = None, first_node_id: int = 1001) -> None:
        if num_nodes < 1:
            raise ValueError(f"Invalid num_nodes={num_nodes}; must be >= 1")
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"node_configs has {len(node_configs)} entries for num_nodes={num_nodes}")
        self.client_app = client_app
        self._run = Run.create_empty(run_id=1)
        # Flower stamps every new Message with the identity of the task running in this
        # process (a ServerApp process sets it at start-up); in-process we are that task.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.contexts: dict[int, Context] = {}
        for i in range(num_nodes):
            node_id = first_node_id + i
            # a fixed batch-key per node (the experimenter owns every node here): reproducible runs and resumes; a
            # SuperNode without one draws its batches from a random key in its Flower home (flower/secret.py)
            node_cfg = {"partition-id": i, "num-partitions": num_nodes, "batch-key": f"in-process-node-{i}"}
            node_cfg.update(dict(node_configs[i]) if node_configs is not None else {})
            self.contexts[node_id] = Context(run_id=1, node_id=node_id, node_config=node_cfg, state=RecordDict(),
                                             run_config=dict(run_config))
        self.dead: set[int] = set()
        self._outbox: dict[str, Message] = {}
        self._counter = 0

    # -- fault injection
    def kill(self, node_id: int) -> None:
        """The node disappears: it is no longer listed and never replies."""
        self.dead.add(node_id)

    # -- Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.dead]

    def _deliver(self, msg: Message, message_id: str) -> Message | None:
        node = msg.metadata.dst_node_id
        if node in self.dead or node not in self.contexts:
            return None
        mine = with_message_id(msg, message_id, content=copy.deepcopy(msg.content))
        try:
            return self.client_app(mine, self.contexts[node])
        except Exception as e:  # what a SuperNode does with a raising ClientApp
            log.warning("node %d: ClientApp raised %s: %s", node, type(e).__name__, e)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(e).__name__}: {e}"),
                           reply_to=mine)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self._counter += 1
            mid = f"local-{self._counter}"
            msg.metadata.__dict__["_message_id"] = mid  # as Flower's grids do when they push a message
            reply = self._deliver(msg, mid)
            if reply is not None:
                self._outbox[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._outbox.pop(m) for m in list(message_ids) if m in self._outbox]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))
