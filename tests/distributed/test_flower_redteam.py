"""Red team 19, strongest attack: finding 2 (noise-free oracle under node-local DP) is open again,
through the reply's *dtype*.

LocalNoiseMod's failure path releases noise on ``np.zeros(shape, dtype=<dtype of the model the SERVER
shipped>)``, while the success path noises SSGDMod's vector, whose dtype is the node model's (float32).
A malicious server ships its model as float64 (the packaged ClientApp loads it into its float32 model
without complaint) with a crafted first-layer column for pixel p (weights 1e38): a batch in which pixel p
is bright overflows to a non-finite step -> reply float64; a batch where it is dark -> reply float32.
The dtype is not noised and not a function of anything the accountant covers: one exact bit of the
node's data per round, under sigma = 1 (the same pixel-guessing oracle as finding 2).

Failed on ad11718; passes now: a non-float32 model is refused from the request alone (before any data is
touched), and every release is float32 under the one record name, whatever happened inside.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

RUN = {"num-rounds": 1, "batch-size": 32, "test-size": 100, "mode": "fedsgd", "model": "mlp", "seed": 0}


def _identity():
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def _reply_dtypes(app, arrays, rnd):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.validation import record_from_arrays

    msg = with_message_id(Message(RecordDict({
        "arrays": record_from_arrays(arrays),
        "config": ConfigRecord({"batch-size": 32, "server-round": rnd, "ssgd-dp-noise-multiplier": 1.0})}),
        dst_node_id=1001, message_type=MessageType.TRAIN), f"m-{rnd}")
    ctx = Context(run_id=1, node_id=1001, node_config={"partition-id": 0, "num-partitions": 3},
                  state=RecordDict(), run_config=dict(RUN))
    reply = app(msg, ctx)
    if reply.has_error():  # allowed only as a refusal decided from the request alone (same for any data)
        return {f"error: {reply.error.reason}"}
    [(name, record)] = reply.content.array_records.items()
    return {f"{name}: {a.dtype}" for a in record.values()}


def test_under_node_local_dp_the_reply_dtype_does_not_depend_on_the_data():
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, FlowerRunConfig, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train
    from ssgd.distributed.flower.task import make_model, node_share, param_arrays

    _identity()
    cfg = FlowerRunConfig.from_mapping(RUN)
    arrays = param_arrays(make_model(cfg))
    x, _ = node_share(cfg, 0, 3)
    flat = x.reshape(len(x), -1).numpy()
    assert flat[:, 0].max() == 0 and flat[:, 400].max() > 0.5  # corner always dark; pixel 400 often bright
    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0), ssgd_mod])  # the documented DP node
    app.train()(train)
    first_w = next(k for k in arrays if k.endswith("weight"))

    def crafted(pixel):  # the server's model, shipped as float64
        c = {k: v.astype(np.float64) for k, v in arrays.items()}
        c[first_w][:, pixel] = 1e38
        return c

    dark = _reply_dtypes(app, crafted(0), 1)     # pixel dark in every example: finite step
    bright = _reply_dtypes(app, crafted(400), 2)  # pixel bright in the batch: non-finite step
    assert dark == bright, (f"the DP reply's dtype is a noise-free function of the node's data: "
                            f"dark pixel -> {dark}, bright pixel -> {bright}")


def test_a_float64_model_is_refused_and_a_float32_one_is_noised_in_float32():
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, FlowerRunConfig, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train
    from ssgd.distributed.flower.task import make_model, param_arrays

    _identity()
    arrays = param_arrays(make_model(FlowerRunConfig.from_mapping(RUN)))
    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0), ssgd_mod])
    app.train()(train)
    as64 = {k: v.astype(np.float64) for k, v in arrays.items()}
    [refused] = _reply_dtypes(app, as64, 1)
    assert refused.startswith("error")
    assert _reply_dtypes(app, {k: v.astype(np.float32) for k, v in arrays.items()}, 2) == {"arrays: float32"}


# Red team 19, finding 2: the run config's partition keys must not push a node below its min-batch-size.
# found offline (probes/scan_part2.py): Dirichlet alpha=0.01, seed=17, 3 partitions -> node 2 holds 1 example
RUN_PART = {"num-rounds": 1, "batch-size": 32, "test-size": 100, "mode": "fedsgd", "model": "mlp",
            "partition": "dirichlet", "alpha": 0.01, "seed": 17}
# since the node's share is its own node config's, the node owner chose this split (a run config naming another
# partition is refused outright): the min-batch-size refusal must still hold for a node's own tiny share
NODE = {"partition-id": 2, "num-partitions": 3, "min-batch-size": 32, "partition": "dirichlet", "alpha": 0.01,
        "partition-seed": 17}


def _identity_partition():
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def test_run_config_partition_cannot_push_a_node_below_its_min_batch_size():
    import torch
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.task import make_model, node_share, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays

    _identity_partition()
    cfg = FlowerRunConfig.from_mapping(RUN_PART)
    x, y = node_share(cfg, NODE["partition-id"], NODE["num-partitions"])
    assert 0 < len(y) < NODE["min-batch-size"], "precondition: the server's partition leaves the node a tiny share"
    arrays = param_arrays(make_model(cfg))
    msg = with_message_id(Message(RecordDict({"arrays": record_from_arrays(arrays),
                                              "config": ConfigRecord({"batch-size": 32, "server-round": 1})}),
                                  dst_node_id=1001, message_type=MessageType.TRAIN), "m-1")
    ctx = Context(run_id=1, node_id=1001, node_config=dict(NODE), state=RecordDict(), run_config=dict(RUN_PART))
    reply = app(msg, ctx)
    if reply.has_error():
        from ssgd.distributed.flower.mod import PUBLIC_REASONS

        assert reply.error.reason in PUBLIC_REASONS  # one of the fixed texts
        return  # the node refused: the attack held
    u = {k: np.asarray(a.numpy()) for k, a in next(iter(reply.content.array_records.values())).items()}
    last_bias = [k for k in u if k.endswith("bias")][-1]
    negative = np.flatnonzero(u[last_bias] < 0)
    # a batch-1 cross-entropy gradient has exactly one negative last-layer bias entry: the label
    leaked = len(y) == 1 and negative.tolist() == [int(y[0])]
    pytest.fail(f"node with min-batch-size=32 sent a unit gradient computed on {len(y)} example(s) "
                f"(run config partition=dirichlet alpha=0.01 seed=17); label read from the bias: "
                f"{negative.tolist()} (true {y.tolist()}), leaked={leaked}")
