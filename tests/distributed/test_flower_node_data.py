"""What a node computes on is the node's decision (red team 19, still-open row 2).

Before: the packaged ClientApp took ``dataset`` and ``data-dir`` from the run config (server-controlled):
the server chose the node's data and a path on the node that the ClientApp read (and cached to). Now both
come from the node config; a run config naming another dataset is refused before any data is touched, and
the run config's ``data-dir`` (and ``test-size``) are the server's own, never read by a node.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "batch-size": 8, "mode": "fedsgd", "model": "mlp", "seed": 0}


def _train(run_config, node_config, dataset="mnist"):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    arrays = param_arrays(make_model(FlowerRunConfig.from_mapping({**RUN, "dataset": dataset})))
    msg = with_message_id(Message(RecordDict({"arrays": record_from_arrays(arrays),
                                              "config": ConfigRecord({"batch-size": 8, "server-round": 1})}),
                                  dst_node_id=1001, message_type=MessageType.TRAIN), "m-1")
    ctx = Context(run_id=1, node_id=1001, node_config={"partition-id": 0, "num-partitions": 3, **node_config},
                  state=RecordDict(), run_config=dict(run_config))
    return app(msg, ctx)


def _unit(reply):
    assert not reply.has_error(), reply.error.reason
    a = [np.asarray(v.numpy(), dtype=np.float64) for v in reply.content["arrays"].values()]
    return float(np.sqrt(sum((x * x).sum() for x in a)))


def test_a_run_config_naming_another_dataset_is_refused():
    from ssgd.distributed.flower.mod import REFUSED

    reply = _train({**RUN, "dataset": "digits"}, {})  # the node's own dataset: mnist (default)
    assert reply.has_error() and reply.error.reason == REFUSED


def test_the_run_configs_data_dir_is_never_read_by_a_node(tmp_path):
    """The server's data-dir (a path on the node before) is ignored: the node computes on its own data."""
    evil = tmp_path / "server-chosen"
    reply = _train({**RUN, "data-dir": str(evil), "test-size": 7}, {})
    assert _unit(reply) == pytest.approx(1.0, abs=1e-3)
    assert not evil.exists()


def test_the_node_configs_dataset_and_data_dir_are_what_the_node_reads(tmp_path):
    from ssgd.distributed.flower.mod import NOT_SENT

    missing = tmp_path / "no-mnist-here"
    reply = _train(RUN, {"data-dir": str(missing)})  # the node's own folder: it is read (and lacks the files)
    assert reply.has_error() and reply.error.reason == NOT_SENT
    # a node whose own dataset is digits computes on digits (its model has digits' 64 inputs)
    reply = _train({**RUN, "dataset": "digits"}, {"dataset": "digits"}, dataset="digits")
    assert _unit(reply) == pytest.approx(1.0, abs=1e-3)
    shapes = [tuple(v.shape) for v in reply.content["arrays"].values()]
    assert shapes[0][1] == 64
