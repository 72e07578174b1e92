"""A node-local DP node keeps its own release budget (red team 19, "still open" row 1).

Before: the node counted nothing; ε was the server's number, and a server that asked for the same
batch again and again averaged the noise away (labels recovered in a probe after 300 releases at
σ = 1). Now the node counts every release itself (Opacus's accountant, its own node config's
budget) and, once the next release would exceed it, answers with one fixed text.

Driven through the packaged ClientApp's train function and the documented DP mods, as a
SuperNode runs them (no deployment).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "batch-size": 32, "mode": "fedsgd", "model": "mlp", "seed": 0}
SIGMA, MAX_EPS, DELTA = 1.0, 10.0, 1e-5


def _budget_releases(sigma: float, max_eps: float, delta: float) -> int:
    """How many releases at sigma fit in (max_eps, delta): the accountant, asked independently."""
    from ssgd.privacy import compute_epsilon

    k = 0
    while compute_epsilon(sigma, 1.0, k + 1, delta) <= max_eps:
        k += 1
    return k


def _app():
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=0.1), ssgd_mod])  # the documented DP node
    app.train()(train)
    return app


def _ask(app, ctx, arrays, i):
    """The server's request number ``i``: always the same batch (same seed, same round, minimum batch size)."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    msg = with_message_id(Message(RecordDict({
        "arrays": record_from_arrays(arrays),
        "config": ConfigRecord({"batch-size": 32, "seed": 0, "server-round": 1, "ssgd-dp-noise-multiplier": SIGMA})}),
        dst_node_id=1001, message_type=MessageType.TRAIN), f"m-{i}")
    return app(msg, ctx)


def _context(node_config, run_config=RUN):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=1001, node_config={"partition-id": 0, "num-partitions": 3, **node_config},
                   state=RecordDict(), run_config=dict(run_config))


def _model():
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import make_model, param_arrays

    return param_arrays(make_model(FlowerRunConfig.from_mapping(RUN)))


def _outcomes(replies):
    from ssgd.distributed.flower.mod import BUDGET_SPENT

    out = []
    for r in replies:
        if r.has_error():
            assert r.error.reason == BUDGET_SPENT, r.error.reason  # the one fixed text, nothing else
            out.append("refused")
        else:
            assert list(r.content.array_records) == ["arrays"] and not r.content.metric_records
            out.append("released")
    return out


def test_a_server_asking_n_times_the_budget_gets_budget_many_releases_then_fixed_refusals():
    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    assert 2 <= k <= 10  # precondition: a small budget (3 releases at sigma = 1)
    app, arrays = _app(), _model()
    ctx = _context({"max-epsilon": MAX_EPS, "dp-delta": DELTA})  # the node's own budget
    replies = [_ask(app, ctx, arrays, i) for i in range(4 * k)]
    assert _outcomes(replies) == ["released"] * k + ["refused"] * (3 * k)
    # the server cannot average more than k noisy copies of the same batch's unit vector: the mean of the
    # releases keeps noise std sigma*Delta/sqrt(k) per entry (Delta = 2), not the ~0 of 4k copies
    released = [np.concatenate([np.asarray(a.numpy()).ravel() for a in r.content["arrays"].values()])
                for r in replies[:k]]
    mean = np.mean(released, axis=0)
    assert np.std(mean) == pytest.approx(2 * SIGMA / np.sqrt(k), rel=0.05)


def test_the_default_node_local_budget_is_on_and_a_failed_step_counts_as_a_release(caplog):
    """No budget key in the node config: the default (10, 1e-5) applies. A step that fails (the server's
    model overflows on the node's data) still releases noise on a zero vector -- counted like any other."""
    from ssgd.privacy import DEFAULT_BUDGET_DELTA, DEFAULT_MAX_EPSILON

    k = _budget_releases(SIGMA, DEFAULT_MAX_EPSILON, DEFAULT_BUDGET_DELTA)
    app, arrays = _app(), _model()
    first_w = next(n for n in arrays if n.endswith("weight"))
    overflow = {n: a.copy() for n, a in arrays.items()}
    overflow[first_w][:, 400] = 1e38  # pixel 400 is bright in many examples: a non-finite step
    ctx = _context({})
    models = [overflow] + [arrays] * (3 * k)
    with caplog.at_level("ERROR"):
        replies = [_ask(app, ctx, m, i) for i, m in enumerate(models)]
    assert "releasing noise on a zero vector" in caplog.text  # the first step did fail
    assert _outcomes(replies) == ["released"] * k + ["refused"] * (2 * k + 1)


def test_run_config_cannot_raise_the_node_budget():
    from ssgd.distributed.flower.mod import PUBLIC_REASONS

    app, arrays = _app(), _model()
    ctx = _context({"max-epsilon": MAX_EPS}, {**RUN, "max-epsilon": 1e9})
    reply = _ask(app, ctx, arrays, 0)
    assert reply.has_error() and reply.error.reason in PUBLIC_REASONS


def test_a_ledger_file_keeps_the_count_across_runs_and_restarts(tmp_path):
    """Context.state lives as long as one run on one SuperNode; a new run (or a restarted SuperNode) gets a
    fresh one. With node config privacy-ledger the count lives in the node's file and is shared."""
    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    ledger = tmp_path / "releases.json"
    node = {"max-epsilon": MAX_EPS, "privacy-ledger": str(ledger)}
    app, arrays = _app(), _model()
    first = [_ask(app, _context(node), arrays, i) for i in range(k - 1)]  # every message: a fresh Context
    second = [_ask(app, _context(node), arrays, 100 + i) for i in range(3)]
    assert _outcomes(first + second) == ["released"] * k + ["refused"] * 2
    stored = json.loads(ledger.read_text())
    assert stored["format"] == "ssgd-release-ledger" and sum(stored["counts"]) == k
    # a damaged ledger refuses every release (fails closed), with a fixed text
    ledger.write_text("{not json")
    reply = _ask(app, _context({"privacy-ledger": str(ledger)}), arrays, 200)
    from ssgd.distributed.flower.mod import REFUSED

    assert reply.has_error() and reply.error.reason == REFUSED


def _run_context(node_config, run_id, node_id, run_config=RUN):
    """The Context a SuperNode builds for a run: the SuperLink (the server) chose ``run_id`` and ``node_id``; the
    state is fresh (flwr 1.42 keeps Context.state per run); the node config is the node owner's."""
    from flwr.app import Context, RecordDict

    return Context(run_id=run_id, node_id=node_id, node_config={"num-partitions": 3, **node_config},
                   state=RecordDict(), run_config=dict(run_config))


def test_a_server_starting_new_runs_does_not_reset_the_default_budget(_private_flwr_home):
    """Red team (2026-12-04): without a ledger the count lived in Context.state, and in flwr 1.42 the SuperLink
    (the adversary) chooses the run ids: five runs of 3 requests each got 15 releases where the budget allows 3.
    Now the node counts in its default ledger, keyed by its own partition-id, never by the run or node id."""
    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    assert k == 3  # the red team's numbers: 5 runs x 3 requests, 3 allowed
    app, arrays = _app(), _model()
    node = {"partition-id": 0, "max-epsilon": MAX_EPS, "dp-delta": DELTA}
    replies = []
    for run in range(5):  # every run: a new run id, a new server-assigned node id, a fresh Context.state
        ctx = _run_context(node, run_id=7000 + run, node_id=1001 + 17 * run)
        replies += [_ask(app, ctx, arrays, 10 * run + i) for i in range(3)]
    assert _outcomes(replies) == ["released"] * k + ["refused"] * (15 - k)
    from ssgd.distributed.flower.privacy import default_ledger_path

    ledger = _private_flwr_home / "ssgd" / "privacy-ledger-0.json"
    assert default_ledger_path({"partition-id": 0}) == ledger
    assert sum(json.loads(ledger.read_text())["counts"]) == k
    # a SuperNode restart (a new process, a new mod object) continues the same count
    assert _outcomes([_ask(_app(), _run_context(node, 9999, 1), arrays, 99)]) == ["refused"]


def test_the_default_ledger_is_keyed_by_the_nodes_partition_id_and_resolved_at_every_release(_private_flwr_home,
                                                                                             tmp_path, monkeypatch):
    """Nodes sharing one Flower home: each partition-id its own budget; no partition-id: one shared budget
    (conservative). The path follows FLWR_HOME at the time of the release (a new home is a new node owner's)."""
    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    app, arrays = _app(), _model()
    budget = {"max-epsilon": MAX_EPS, "dp-delta": DELTA}

    def ask_n(node_config, n, tag):
        return _outcomes([_ask(app, _run_context({**budget, **node_config}, run_id=i + 1, node_id=5), arrays,
                                f"{tag}-{i}") for i in range(n)])

    assert ask_n({"partition-id": 1}, k + 1, "p1") == ["released"] * k + ["refused"]
    assert ask_n({"partition-id": "node-b"}, k, "pb") == ["released"] * k  # another node of the same home
    assert ask_n({}, k - 1, "n1") == ["released"] * (k - 1)  # no partition-id: one shared file ...
    assert ask_n({}, 2, "n2") == ["released", "refused"]  # ... whatever run or node id the server uses
    assert sorted(p.name for p in (_private_flwr_home / "ssgd").glob("*.json")) == [
        "privacy-ledger-1.json", "privacy-ledger-node-b.json", "privacy-ledger.json"]
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "other-home"))  # resolved now, not at import
    assert ask_n({"partition-id": 1}, 1, "h2") == ["released"]
    assert (tmp_path / "other-home" / "ssgd" / "privacy-ledger-1.json").is_file()


@pytest.mark.parametrize("pid", ["../evil", "", ".hidden", -1, True, 1.5, "a" * 65])
def test_a_partition_id_that_cannot_name_the_default_ledger_is_refused(_private_flwr_home, pid):
    from ssgd.distributed.flower.mod import REFUSED

    app, arrays = _app(), _model()
    reply = _ask(app, _run_context({"partition-id": pid}, 1, 1), arrays, 0)
    assert reply.has_error() and reply.error.reason == REFUSED
    assert not list(_private_flwr_home.rglob("*.json")) and not (_private_flwr_home.parent / "evil.json").exists()


def test_privacy_ledger_memory_is_the_node_owners_opt_out_and_the_run_config_cannot_choose_it(_private_flwr_home):
    """``privacy-ledger=memory`` (node config only): the count lives in Context.state and resets on every run the
    server starts -- as documented. The server cannot select it: a run config naming privacy-ledger is refused,
    and the request is still counted in the node's default ledger."""
    from ssgd.distributed.flower.mod import REFUSED

    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    app, arrays = _app(), _model()
    node = {"partition-id": 0, "max-epsilon": MAX_EPS, "privacy-ledger": "memory"}
    out = [_outcomes([_ask(app, _run_context(node, run, 1), arrays, f"{run}-{i}") for i in range(k)])
           for run in (1, 2)]
    assert out == [["released"] * k] * 2  # the documented weakness of the opt-out
    assert not list(_private_flwr_home.rglob("privacy-ledger*"))  # no ledger file (the batch key may live there)
    for value in ("memory", "/tmp/elsewhere.json"):
        reply = _ask(app, _run_context({"partition-id": 0, "max-epsilon": MAX_EPS}, 3, 1,
                                       {**RUN, "privacy-ledger": value}), arrays, "rc")
        assert reply.has_error() and reply.error.reason == REFUSED
    ledger = json.loads((_private_flwr_home / "ssgd" / "privacy-ledger-0.json").read_text())
    assert sum(ledger["counts"]) == 2  # counted before SSGDMod refused the run config: never fewer than released


def test_node_config_budget_keys_are_validated():
    from ssgd.distributed.flower import NodePolicy

    for bad in ({"max-epsilon": 0}, {"max-epsilon": float("inf")}, {"max-epsilon": "ten"}, {"dp-delta": 1.5},
                {"privacy-ledger": 3}):
        with pytest.raises(ValueError, match="max-epsilon|dp-delta|privacy-ledger"):
            NodePolicy.from_node_config(bad)


def test_a_federation_longer_than_the_budget_ends_with_refusals_and_the_servers_epsilon_stops():
    """Through the strategy and an in-process grid: every node releases exactly its budget's count, the
    server's own ε (which counts only what it received) stops there, and later rounds leave the model as it was."""
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import (FaultMod, FlowerRunConfig, InProcessGrid, LocalNoiseMod, PrivateSSGDStrategy,
                                         ssgd_mod)
    from ssgd.distributed.flower.client_app import train
    from ssgd.distributed.flower.mod import BUDGET_SPENT
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import record_from_arrays
    from ssgd.privacy import NodePrivacy, compute_epsilon

    k = _budget_releases(SIGMA, MAX_EPS, DELTA)
    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=0.1), ssgd_mod])
    app.train()(train)
    w0 = param_arrays(make_model(FlowerRunConfig.from_mapping(RUN)))
    strategy = PrivateSSGDStrategy(privacy=NodePrivacy(SIGMA, mode="local", delta=DELTA), mode="fedsgd",
                                   server_lr=0.1, update_keys=list(w0), client_config={"batch-size": 32})
    grid = InProcessGrid(app, 2, RUN, node_configs=[{"max-epsilon": MAX_EPS}] * 2)
    res = strategy.start(grid, record_from_arrays(w0), num_rounds=k + 2)
    assert strategy.releases == {1001: k, 1002: k}
    for r in range(1, k + 3):
        book = strategy.rounds[r]
        if r <= k:
            assert len(book["accepted"]) == 2 and not book["failed"]
        else:
            assert not book["accepted"] and [why for _, why in book["failed"]] == [
                f"error reply (code 6): {BUDGET_SPENT}"] * 2
    assert res.train_metrics_clientapp[k + 2]["epsilon"] == pytest.approx(compute_epsilon(SIGMA, 1.0, k, DELTA))
