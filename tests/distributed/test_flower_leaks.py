"""Leak audit: everything a node sends in one round, per Flower path, against docs/threat-model.md.

Each test builds the train message the real strategy sends, hands it to the real ClientApp
(mods included) as a SuperNode would, and captures the whole reply: its records (arrays,
metrics, configs), its metadata and, for refusals, the error text. Only what the threat model
lists may be there. The batch-1 norm recovery of issue 9 (finding 2) --
``|g| = (exp(-loss) - 1) / u_bias[y]`` with ``y = argmin u_bias`` -- is run against every reply:
it works when a node opts in to ``train-loss`` (the old default), and fails on every default path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "batch-size": 1, "test-size": 100, "mode": "fedsgd", "model": "mlp", "seed": 0}
BIAS = "net.5.bias"  # the mlp's last-layer bias
#: docs/threat-model.md, "What leaves a node": the reply's metadata fields (transport, not data)
METADATA = {"run_id", "message_id", "src_node_id", "dst_node_id", "reply_to_message_id", "group_id", "created_at",
            "ttl", "message_type", "src_task_id", "dst_task_id", "delivered_at"}
THREAT_MODEL = Path(__file__).resolve().parents[2] / "docs" / "threat-model.md"


def _context(node_config=None, run=None):
    from flwr.app import Context, RecordDict

    nc = {"partition-id": 0, "num-partitions": 3, **(node_config or {})}
    return Context(run_id=1, node_id=1001, node_config=nc, state=RecordDict(), run_config=dict(run or RUN))


def _train_message(strategy, run=None):
    """The train message ``strategy`` sends to node 1001 in round 1, as the node receives it."""
    from flwr.app import ConfigRecord

    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    cfg = FlowerRunConfig.from_mapping(run or RUN)

    class Grid:
        def get_node_ids(self):
            return [1001]

    [msg] = strategy.configure_train(1, record_from_arrays(param_arrays(make_model(cfg))),
                                     ConfigRecord({"batch-size": cfg.batch_size, "seed": cfg.seed}), Grid())
    return with_message_id(msg, "round-1-node-1001")


def _strategy(kind, run=None):
    from ssgd.distributed.flower import PrivateSSGDStrategy, SSGDStrategy
    from ssgd.privacy import NodePrivacy

    mode = (run or RUN)["mode"]
    if kind == "plain":
        return SSGDStrategy(mode=mode)
    if kind == "central":
        return PrivateSSGDStrategy(privacy=NodePrivacy(1.0, split="central", seed=0), mode=mode)
    return PrivateSSGDStrategy(privacy=NodePrivacy(1.0, mode="local", seed=0), mode=mode)


def _local_dp_app():
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0), ssgd_mod])
    app.train()(train)
    return app


def _everything(reply) -> dict:
    """All a reply carries, by kind."""
    content = reply.content
    return {
        "records": sorted(content.keys()),
        "arrays": {k: {n: np.asarray(a.numpy()) for n, a in r.items()} for k, r in content.array_records.items()},
        "metrics": {k: dict(r) for k, r in content.metric_records.items()},
        "configs": {k: dict(r) for k, r in content.config_records.items()},
        "metadata": {n for n in dir(reply.metadata) if not n.startswith("_")},
    }


def recover_norm(reply) -> float | None:
    """The server's attack: the gradient norm from the reply's train-loss and unit bias (None: impossible)."""
    metrics = {}
    for record in reply.content.metric_records.values():
        metrics.update(record)
    if "train-loss" not in metrics:
        return None
    u = np.asarray(next(iter(reply.content.array_records.values()))[BIAS].numpy(), dtype=np.float64)
    y = int(np.argmin(u))
    return (np.exp(-float(metrics["train-loss"])) - 1.0) / u[y]


def _true_norm(msg, ctx) -> float:
    from ssgd.distributed.flower import NodePolicy
    from ssgd.distributed.flower import request as node_request
    from ssgd.distributed.flower.client_app import train

    node_request.put(ctx, node_request.parse_request(msg, NodePolicy.from_node_config(ctx.node_config), ctx.run_config))
    raw = train(msg, ctx)  # the ClientApp's own function, before any mod: what the node computed
    arrays = next(iter(raw.content.array_records.values()))
    return float(np.sqrt(sum(float(np.sum(np.asarray(a.numpy(), dtype=np.float64) ** 2)) for a in arrays.values())))


def _assert_only_documented(reply, *, unit: bool, names):
    got = _everything(reply)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert got["records"] == ["arrays"], got["records"]          # one ArrayRecord, nothing else
    assert got["metrics"] == {} and got["configs"] == {}          # no loss, no count, no config echo
    [(_, arrays)] = got["arrays"].items()
    assert list(arrays) == list(names)                             # exactly the trainable parameters
    assert all(a.dtype == np.float32 for a in arrays.values())
    total = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays.values()))
    if unit:
        assert total == pytest.approx(1.0, abs=1e-5)
    else:  # node-local DP: u + N(0, (2 sigma)^2 I), far from a unit vector
        assert total > 10
    assert got["metadata"] <= METADATA, got["metadata"] - METADATA
    assert recover_norm(reply) is None                             # the batch-1 norm recovery fails


def _names():
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import make_model

    return [n for n, _ in make_model(FlowerRunConfig.from_mapping(RUN)).named_parameters()]


def test_the_norm_recovery_works_when_a_node_sends_its_loss():
    """Positive control: the attack is real. The old default (train-loss in every reply) gave |g| away."""
    from ssgd.distributed.flower.client_app import app

    ctx = _context({"allowed-metrics": "train-loss,num-examples"})  # what every node sent before the fix
    msg = _train_message(_strategy("plain"))
    reply = app(msg, ctx)
    recovered = recover_norm(reply)
    truth = _true_norm(_train_message(_strategy("plain")), ctx)
    assert recovered is not None and recovered == pytest.approx(truth, rel=1e-4)


@pytest.mark.parametrize("path", ["fedsgd", "fedavg", "server-dp"])
def test_default_node_sends_only_the_unit_vector(path):
    from ssgd.distributed.flower.client_app import app

    run = {**RUN, "mode": "delta" if path == "fedavg" else "fedsgd"}
    msg = _train_message(_strategy("central" if path == "server-dp" else "plain", run), run)
    reply = app(msg, _context({"ssgd-mode": run["mode"]}, run=run))
    _assert_only_documented(reply, unit=True, names=_names())


def test_node_local_dp_sends_only_the_noisy_vector_even_with_metrics_allowed():
    """Under DP a node releases only what the accountant covers: its own opt-in metrics stay home."""
    msg = _train_message(_strategy("local"))
    reply = _local_dp_app()(msg, _context({"allowed-metrics": "train-loss,num-examples"}))
    _assert_only_documented(reply, unit=False, names=_names())


def test_a_refused_request_sends_only_a_fixed_text():
    from ssgd.distributed.flower import keys
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.mod import REFUSED

    msg = _train_message(_strategy("plain"))
    msg.content["config"][keys.EPS] = 1e6  # a server asking for a scaled raw gradient
    reply = app(msg, _context())
    assert reply.has_error() and reply.error.reason == REFUSED  # no setting name, no value
    assert not reply.has_content()


def test_a_default_node_does_not_evaluate_for_the_server():
    """Evaluate replies carry the loss/accuracy of the node's data on a model the server chose: opt-in."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from ssgd.distributed.flower import FlowerRunConfig, InProcessGrid
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    arrays = record_from_arrays(param_arrays(make_model(FlowerRunConfig.from_mapping(RUN))))
    for allow, leaves in ((False, False), (True, True)):
        grid = InProcessGrid(app, 1, RUN, node_configs=[{"allow-evaluate": allow}])
        msg = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({})}), dst_node_id=grid.get_node_ids()[0],
                      message_type=MessageType.EVALUATE)
        [reply] = grid.send_and_receive([msg])
        assert reply.has_error() != leaves
        if not leaves:
            from ssgd.distributed.flower.mod import REFUSED

            assert reply.error.reason == REFUSED


def test_every_node_setting_the_threat_model_documents_is_one_the_node_honours():
    """The node-config table of docs/threat-model.md against NodePolicy: a documented key that the node
    ignored (or a policy key missing from the table) would make the documented guarantee false."""
    import re

    from ssgd.distributed.flower import NodePolicy

    text = THREAT_MODEL.read_text()
    table = text.split("## The node's own settings (Flower)")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.M))
    probe = {"ssgd-scope": "layer", "ssgd-eps": 1e-6, "allowed-metrics": "train-loss", "min-batch-size": 7,
             "max-batch-size": 100, "min-client-lr": 1e-3, "max-client-lr": 1.0, "min-noise-multiplier": 2.5, "allow-evaluate": True, "ssgd-mode": "delta", "max-local-steps": 3,
             "max-epsilon": 4.0, "dp-delta": 1e-6, "privacy-ledger": "/tmp/ledger.json", "dataset": "digits",
             "data-dir": "/data", "batch-key": "owner-key", "partition": "dirichlet", "alpha": 0.3,
             "partition-seed": 7}
    assert documented == set(probe), documented ^ set(probe)
    default = NodePolicy()
    for key, value in probe.items():
        assert NodePolicy.from_node_config({key: value}) != default, f"node config {key} changes nothing"


def test_every_error_a_default_node_sends_is_one_of_the_fixed_texts():
    """Audit of error replies (issue 19, finding 2): whatever the server sends -- a refused setting, another
    record, a model that makes the step non-finite, arrays of another model -- the only text that leaves
    is one of the two fixed strings (no parameter name, no value)."""
    from flwr.app import ConfigRecord

    from ssgd.distributed.flower import keys
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.mod import PUBLIC_REASONS
    from ssgd.distributed.flower.validation import record_from_arrays

    def hostile():
        m = _train_message(_strategy("plain"))
        m.content["config"][keys.EPS] = 1e6
        yield m
        m = _train_message(_strategy("plain"))
        m.content["cfg"] = ConfigRecord({"ssgd-mode": "delta"})
        yield m
        m = _train_message(_strategy("plain"))
        arrays = {k: np.asarray(a.numpy()).copy() for k, a in m.content["arrays"].items()}
        first = next(iter(arrays))
        arrays[first][:] = np.inf  # the step is non-finite
        m.content["arrays"] = record_from_arrays(arrays)
        yield m
        m = _train_message(_strategy("plain"))
        arrays = {k + "_x": np.asarray(a.numpy()) for k, a in m.content["arrays"].items()}
        m.content["arrays"] = record_from_arrays(arrays)  # another model's names
        yield m

    reasons = []
    for msg in hostile():
        reply = app(msg, _context())
        assert reply.has_error() and not reply.has_content()
        reasons.append(reply.error.reason)
    assert set(reasons) <= set(PUBLIC_REASONS) and len(set(reasons)) == 2, reasons
