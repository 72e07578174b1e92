"""A real Flower deployment on loopback: SuperLink + 3 SuperNodes started as processes, the
packaged SSGD app submitted with `flwr run`, one SuperNode SIGKILLed mid-run -- with the
defaults of `ssgd flower up` (min-nodes, round-timeout, straggler-timeout not set: finding 8)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

ROUNDS = 3


@pytest.fixture(autouse=True)
def _needs_binaries():
    for exe in ("flower-superlink", "flower-supernode", "flwr"):
        from ssgd.distributed.flower.deploy import flower_env

        if shutil.which(exe, path=flower_env("/tmp")["PATH"]) is None:
            pytest.skip(f"{exe} not installed")


def _history(out):
    try:
        return json.loads((out / "metrics.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        return []


def test_deployment_three_supernodes_unit_updates_and_a_killed_node(tmp_path):
    from ssgd.distributed.flower import Deployment

    out = tmp_path / "run"
    with Deployment(3, tmp_path / "dep", node_configs=[{"ssgd-mode": "delta"}] * 3) as dep:
        assert all(dep.node_ids) and len(set(dep.node_ids)) == 3
        cfg = dep.run_config({"num-rounds": ROUNDS, "out-dir": str(out), "test-size": 300, "mode": "delta",
                              "server-lr": 1.0, "client-lr": 0.1, "local-steps": 5, "batch-size": 32})
        assert cfg["min-nodes"] == 2 and "round-timeout" not in cfg and "straggler-timeout" not in cfg
        run_id = dep.submit(cfg)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not any(r["round"] == 1 for r in _history(out)):
            time.sleep(0.3)
        assert any(r["round"] == 1 for r in _history(out)), "round 1 did not finish in time"
        killed = dep.node_ids[2]
        dep.kill_node(2)
        assert not dep.supernodes[2].running()
        summary = dep.wait(run_id, out, timeout=400)
    # everything we started is gone
    for p in [dep.superlink, *dep.supernodes]:
        assert p.popen.poll() is not None

    history = _history(out)
    assert summary["status"] == "finished"
    assert [r["round"] for r in history] == list(range(ROUNDS + 1))
    # every update the server received was a unit vector, from a real SuperNode
    norms = [(n, v) for r in history[1:] for n, v in r["norms"]]
    assert norms and all(abs(v - 1.0) < 1e-4 for _, v in norms)
    assert {n for n, _ in norms} <= set(dep.node_ids)
    assert summary["rejected_updates"] == 0
    # round 1 had the node that was later killed; afterwards the others carried on without it
    assert killed in [n for n, _ in history[1]["norms"]]
    for r in history[2:]:
        assert 1 <= r["accepted"] <= 2 and killed not in [n for n, _ in r["norms"]]
    # the global model improved
    assert summary["final_test_acc"] > summary["initial_test_acc"] + 0.1
