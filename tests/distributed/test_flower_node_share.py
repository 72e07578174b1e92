"""Which examples a node computes on is the node's decision (threat model, "Still open" row, now closed).

Before: the packaged ClientApp split the training data by the run config's ``partition``, ``alpha`` and
``seed`` (server-controlled), so the server chose which of the node's examples each unit vector was
computed on. Now the split is the node config's ``partition`` / ``alpha`` / ``partition-seed``; a run
config naming another partition or alpha (or any partition-seed) is refused before any data is touched,
and the run config's ``seed`` (the server's) no longer changes the node's share.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "batch-size": 8, "mode": "fedsgd", "model": "mlp", "seed": 0}
NODE = {"partition-id": 1, "num-partitions": 3, "batch-key": "fixed-owner-key"}


def _train(run_config, node_config):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    arrays = param_arrays(make_model(FlowerRunConfig.from_mapping(RUN)))  # the same model for every call
    msg = with_message_id(Message(RecordDict({"arrays": record_from_arrays(arrays),
                                              "config": ConfigRecord({"batch-size": 8, "server-round": 1,
                                                                      "seed": 3})}),
                                  dst_node_id=1001, message_type=MessageType.TRAIN), "m-1")
    ctx = Context(run_id=1, node_id=1001, node_config={**NODE, **node_config}, state=RecordDict(),
                  run_config=dict(run_config))
    return app(msg, ctx)


def _unit(reply) -> np.ndarray:
    assert not reply.has_error(), reply.error.reason
    return np.concatenate([np.asarray(v.numpy(), dtype=np.float64).ravel()
                           for v in reply.content["arrays"].values()])


@pytest.mark.parametrize("run_extra, node", [
    ({"partition": "dirichlet", "alpha": 0.5}, {}),                          # node: iid (default)
    ({"partition": "dirichlet", "alpha": 0.05}, {"partition": "dirichlet"}),  # node: alpha 0.5 (default)
    ({"partition": "iid"}, {"partition": "dirichlet", "alpha": 0.3}),
    ({"partition-seed": 5}, {}),                                              # a node setting: never the run's
])
def test_a_run_config_naming_another_share_is_refused(run_extra, node):
    from ssgd.distributed.flower.mod import REFUSED

    reply = _train({**RUN, **run_extra}, node)
    assert reply.has_error() and reply.error.reason == REFUSED


def test_the_run_configs_seed_does_not_choose_the_nodes_share():
    """Same request, same node: the server's run seed changes nothing the node sends; the node's own
    partition-seed does change its share (so the node config is what is read)."""
    base = _unit(_train(RUN, {}))
    assert np.linalg.norm(base) == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(_unit(_train({**RUN, "seed": 12345}, {})), base)
    assert not np.allclose(_unit(_train(RUN, {"partition-seed": 12345})), base)


def test_a_node_computes_on_its_own_dirichlet_share():
    run = {**RUN, "partition": "dirichlet", "alpha": 0.3}
    mine = _unit(_train(run, {"partition": "dirichlet", "alpha": 0.3}))
    assert np.linalg.norm(mine) == pytest.approx(1.0, abs=1e-3)
    assert not np.allclose(mine, _unit(_train(RUN, {})))  # another share than the iid default


@pytest.mark.parametrize("key, value", [("partition", "shards"), ("alpha", 0.0), ("alpha", float("nan")),
                                        ("alpha", "0.5"), ("partition-seed", -1), ("partition-seed", 1.5)])
def test_a_bad_node_partition_setting_is_one_clear_line(key, value):
    from ssgd.distributed.flower import NodePolicy

    with pytest.raises(ValueError, match=f"{key}=") as e:
        NodePolicy.from_node_config({key: value})
    assert "\n" not in str(e.value)
