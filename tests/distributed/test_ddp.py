"""torch.distributed SSGD: the DDP hook, allreduce_unit_, multi-process training, the launcher.

The multi-process checks share one spawn of 3 gloo processes (``ddp_results``); world
size 2 runs on a subgroup of it. ``ssgd train --nodes 2`` and the launcher's failure path
each start one real ``torchrun``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import ssgd
from ssgd.transform import grad_norms
from ssgd.experiments.train import TrainConfig, train
from ssgd.report import load_checkpoint

import ddp_workers as W  # tests/distributed is on sys.path (pytest prepend import mode)

HERE = Path(__file__).resolve().parent


def _mean_unit(locals_, scope, reduce="mean"):
    units = [ssgd.unit(g, scope) for g in locals_]
    tot = [sum(u[i] for u in units) for i in range(len(units[0]))]
    return [t / len(units) for t in tot] if reduce == "mean" else tot


def _assert_close(actual, expected, atol=2e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, atol=atol, rtol=1e-5)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return W.spawn(W.run_all, W.WORLD, out, "rank"), out


# ---------------------------------------------------------------- fast checks (no processes)


def test_register_rejects_bad_arguments():
    from ssgd.distributed import register

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="scope"):
        register(model, scope="bucket")
    with pytest.raises(ValueError, match="reduce"):
        register(model, reduce="max")
    with pytest.raises(ValueError, match="nonfinite"):
        register(model, nonfinite="ignore")
    with pytest.raises(ValueError, match="eps"):
        register(model, eps=0.0)
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        register(model)


def test_allreduce_unit_needs_a_process_group():
    from ssgd.distributed import allreduce_unit_

    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="init_process_group"):
        allreduce_unit_(model.parameters())
    with pytest.raises(ValueError, match="scope"):
        allreduce_unit_(model.parameters(), scope="row")


@pytest.mark.slow
def test_package_import_is_light_and_flower_free(ddp_results):
    # recorded in a fresh spawned interpreter (this one may have imported flwr for other tests)
    res, _ = ddp_results
    imp = res[0]["import"]
    assert imp["lazy"] and not imp["flwr_after_import"] and not imp["flwr_after_use"]
    assert set(imp["all"]) >= {"allreduce_unit_", "register", "launch_training", "NodeFailureError"}


def test_check_config_rejects_what_multi_node_cannot_do():
    from ssgd.experiments.ddp_train import check_config

    with pytest.raises(ValueError, match="--shards"):
        check_config(TrainConfig(shards=2), 2)
    with pytest.raises(ValueError, match="batch_size"):
        check_config(TrainConfig(batch_size=2), 3)
    with pytest.raises(ValueError, match="nodes"):
        check_config(TrainConfig(), 0)
    check_config(TrainConfig(shards=2), 1)  # one node: --shards is the single-process SSGD(m)


def test_normalise_local_never_sends_a_nonfinite_sentinel():
    from ssgd.distributed._common import normalise_local_

    names = ["a", "b", "c"]
    for scope in ("global", "layer"):
        for policy in ("raise", "skip"):
            g = [torch.randn(5), torch.tensor([1.0, math.nan]), torch.full((3,), 2.0)]
            norms, err = normalise_local_(g, names.__getitem__, scope, 1e-12, 0.5, policy, rank=3)
            assert all(torch.isfinite(t).all() for t in g)  # what would leave the rank
            assert math.isnan(norms[1]) and (err is not None) == (policy == "raise")
            if policy == "raise":
                assert "rank 3" in err and "'b'" in err
            if policy == "raise" or scope == "global":  # the whole contribution is zeros
                assert all(torch.equal(t, torch.zeros_like(t)) for t in g)
            else:  # layer skip: only the bad tensor is dropped, the others are factor * unit vectors
                assert torch.equal(g[1], torch.zeros(2)) and float(g[2].norm()) == pytest.approx(0.5)
    g = [torch.full((4,), 3.0), torch.full((1,), 4.0)]
    norms, err = normalise_local_(g, names.__getitem__, "global", 1e-12, 1.0, "raise", 0)
    assert err is None and norms == pytest.approx([6.0, 4.0])
    assert math.hypot(*(float(t.norm()) for t in g)) == pytest.approx(1.0)


def test_launcher_takes_its_entry_point_from_the_caller(tmp_path):
    import inspect

    from ssgd.distributed import launch

    assert inspect.signature(launch.launch_training).parameters["module"].default is inspect.Parameter.empty
    assert "ssgd.experiments" not in inspect.getsource(launch)  # the lower layer names no upper module
    with pytest.raises(TypeError, match="module"):
        launch.launch_training({}, tmp_path, 1)


def test_torchrun_command():
    from ssgd.distributed.launch import torchrun_command

    cmd = torchrun_command(3, "ssgd.experiments.ddp_train", ["--run-dir", "x"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "3"
    assert cmd[-4:] == ["-m", "ssgd.experiments.ddp_train", "--run-dir", "x"]
    with pytest.raises(ValueError, match="processes"):
        torchrun_command(0, "x")


def test_cli_rejects_bad_nodes():
    from typer.testing import CliRunner

    from ssgd.cli import app

    r = CliRunner().invoke(app, ["train", "--nodes", "0"])
    assert r.exit_code != 0 and "--nodes" in r.output
    r = CliRunner().invoke(app, ["train", "--nodes", "2", "--shards", "2"])
    assert r.exit_code != 0 and "shards" in r.output


# ---------------------------------------------------------------- multi-process (one spawn)


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cap", ["one", "many"])
def test_hook_gives_mean_of_local_unit_vectors(ddp_results, size, scope, cap):
    res, _ = ddp_results
    key = ("hook", size, scope, "mean", cap, False)
    per_rank = [res[r][key] for r in range(size)]
    iters = len(per_rank[0]["reduced"])
    for it in range(iters):
        expected = _mean_unit([pr["local"][it] for pr in per_rank], scope)
        for pr in per_rank:
            _assert_close(pr["reduced"][it], expected)
        # every replica holds the same reduced gradient, bit for bit
        for pr in per_rank[1:]:
            for a, b in zip(pr["reduced"][it], per_rank[0]["reduced"][it]):
                assert torch.equal(a, b)
    # the hook really ran on several buckets (DDP rebuilds its buckets after the first step)
    nb = max(per_rank[0]["buckets"])
    assert nb >= 3 if cap == "many" else nb == 1
    assert per_rank[0]["steps"] == iters
    # the local norms the hook measured (kept on the rank) are the norms of the local gradients
    for pr in per_rank:
        for it in range(iters):
            local = pr["local"][it]
            if scope == "global":
                assert math.hypot(*pr["norms"][it]) == pytest.approx(float(grad_norms(local).norm()), rel=1e-5)
            else:
                assert sorted(pr["norms"][it]) == pytest.approx(sorted(grad_norms(local).tolist()), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_hook_sum_with_gradient_as_bucket_view(ddp_results, size, scope):
    res, _ = ddp_results
    per_rank = [res[r][("hook", size, scope, "sum", "many", True)] for r in range(size)]
    for it in range(len(per_rank[0]["reduced"])):
        expected = _mean_unit([pr["local"][it] for pr in per_rank], scope, reduce="sum")
        for pr in per_rank:
            _assert_close(pr["reduced"][it], expected)
    if scope == "global":  # m unit vectors summed: norm <= m, and > 1 unless they cancel
        total = float(grad_norms(per_rank[0]["reduced"][-1]).norm())
        assert 1.0 < total <= size + 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_allreduce_unit_gives_mean_of_local_unit_vectors(ddp_results, size, scope):
    res, _ = ddp_results
    per_rank = [res[r][("allreduce", size, scope, "mean")] for r in range(size)]
    expected = _mean_unit([pr["local"] for pr in per_rank], scope)
    for pr in per_rank:
        _assert_close(pr["reduced"], expected)
        local_norms = grad_norms(pr["local"])
        want = local_norms.norm() if scope == "global" else local_norms
        torch.testing.assert_close(pr["norms"], want.to(torch.float64), rtol=1e-5, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nonfinite_skip_drops_only_the_bad_contribution(ddp_results, scope):
    res, _ = ddp_results
    per_rank = [res[r][("nan", scope, "skip")] for r in range(W.WORLD)]
    assert all(pr["error"] is None for pr in per_rank)
    assert [pr["skipped"] for pr in per_rank] == [0, 0, 2]  # rank 2 skipped both steps
    units = [ssgd.unit(pr["local"], scope) for pr in per_rank[:2]]
    bad = [torch.zeros_like(t) for t in per_rank[2]["local"]]
    if scope == "layer":  # only parameter 2 is dropped; rank 2's other tensors still count
        bad = [torch.zeros_like(t) if i == 2 else u for i, (t, u) in
               enumerate(zip(per_rank[2]["local"], ssgd.unit(per_rank[2]["local"], "layer")))]
    expected = [(a + b + c) / 3 for a, b, c in zip(units[0], units[1], bad)]
    for pr in per_rank:
        assert all(torch.isfinite(t).all() for t in pr["reduced"])
        _assert_close(pr["reduced"], expected)


@pytest.mark.slow
@pytest.mark.parametrize("case", [("global", "raise"), ("layer", "raise"), ("allreduce", "raise")])
def test_nonfinite_raise_fails_the_rank_and_sends_no_sentinel(ddp_results, case):
    res, _ = ddp_results
    per_rank = [res[r][("nan",) + case] for r in range(W.WORLD)]
    errors = [pr["error"] for pr in per_rank]
    # the failing rank names itself and the parameter; the others learn nothing from the bucket
    assert "LocalNonFiniteError" in errors[1] and "rank 1: non-finite local gradient" in errors[1]
    assert errors[0] is None and errors[2] is None
    scope = "global" if case[0] == "allreduce" else case[0]
    units = [ssgd.unit(per_rank[r]["local"], scope) for r in range(W.WORLD)]
    for r in (0, 2):
        assert all(torch.isfinite(t).all() for t in per_rank[r]["reduced"])  # no NaN reached a peer
        for i, t in enumerate(per_rank[r]["reduced"]):
            sent = t * W.WORLD - units[0][i] - units[2][i]  # what rank 1 contributed: zeros, or (layer
            zero = torch.allclose(sent, torch.zeros_like(sent), atol=1e-5)  # scope) a bucket sent earlier
            assert zero or (scope == "layer" and torch.allclose(sent, units[1][i], atol=1e-5)), (case, i)


@pytest.mark.slow
def test_ddp_training_replicas_identical_and_equal_to_single_process_shards(ddp_results):
    res, out = ddp_results
    train_res = [res[r]["train"] for r in range(W.WORLD)]
    data = W.make_data()
    for name, cfg in W.train_configs().items():
        # all replicas hold bit-identical weights
        for tr in train_res[1:]:
            for k in tr[name]:
                assert torch.equal(tr[name][k], train_res[0][name][k]), (name, k)
        # and the same weights as single-process training: ssgd on 3 nodes == --shards 3 (SSGD(m), m = 3);
        # sgd on 3 nodes == full-batch sgd (DDP's mean of 3 equal shards' gradients)
        ref_cfg = TrainConfig(**{**cfg.to_dict(), "shards": W.WORLD if cfg.optimizer == "ssgd" else 1})
        ref = train(ref_cfg, None, data=data, progress=False, checkpoint=False).model.state_dict()
        for k, v in ref.items():
            torch.testing.assert_close(train_res[0][name][k], v, atol=2e-5, rtol=1e-4, msg=f"{name} {k}")
        hist = train_res[0][name + "_history"]
        # every rank holds rank 0's evaluation rows; the training loss is each rank's own (never sent)
        public = lambda h: {k: v for k, v in h.items() if k != "train_loss"}  # noqa: E731
        assert len(hist) == cfg.epochs and all(public(h) == public(hist_r) for h, hist_r in
                                               zip(hist, train_res[2][name + "_history"]))
        metrics = json.loads((out / f"run-{name}" / "metrics.json").read_text())
        assert metrics["nodes"] == W.WORLD and metrics["replicas_identical"] is True
        assert metrics["test_acc"] == pytest.approx(hist[-1]["test_acc"])
    # SSGD actually learns the synthetic task (chance is 0.25)
    assert train_res[0]["ssgd_history"][-1]["test_acc"] > 0.4


@pytest.mark.slow
def test_checkpoint_on_rank0_and_resume_reach_the_same_weights(ddp_results):
    res, out = ddp_results
    # 2 ranks: bit-identical
    for r in range(2):
        full, resumed = res[r]["train_pair"]["full"], res[r]["train_pair"]["resumed"]
        for k in full:
            assert torch.equal(full[k], resumed[k]), k
    # 3 ranks: equal up to float rounding. (A fresh DDP model starts with its initial bucket
    # layout, so after a resume gloo's ring all-reduce adds 3 ranks' values in another order;
    # with 2 ranks the sum is order-free.)
    for r in range(W.WORLD):
        full, resumed = res[r]["train"]["ssgd"], res[r]["train"]["resumed"]
        for k in full:
            torch.testing.assert_close(full[k], resumed[k], atol=1e-6, rtol=1e-5, msg=k)
    assert [h["epoch"] for h in res[0]["train"]["resumed_history"]] == [1, 2]
    run = out / "run-resume"
    ck = load_checkpoint(run / "checkpoint.pt", format="ssgd-train")  # plain data: weights_only
    assert ck["epoch"] == 2 and ck["nodes"] == W.WORLD
    for k, v in ck["model"].items():
        assert torch.equal(v, res[0]["train"]["resumed"][k])
    assert {"config.json", "metrics.json", "metrics.csv", "checkpoint.pt"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- torchrun end to end


@pytest.mark.slow
def test_ssgd_train_nodes_2_end_to_end(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ssgd.cli import app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    args = ["train", "--nodes", "2", "--dataset", "digits", "--model", "mlp", "--batch-size", "100",
            "--epochs", "1", "--lr", "0.3", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "2 nodes" in r.output and "test accuracy" in r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["nodes"] == 2 and cfg["backend"] == "gloo" and cfg["reduction"] == "ssgd-hook-sum"
    assert cfg["model"] == "mlp" and cfg["batch_size"] == 100 and cfg["lr"] == 0.3
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_done"] == 1 and m["replicas_identical"] is True
    # the same options single-process with --shards 2 are the same SSGD(2) update: same accuracy
    ref = train(TrainConfig(dataset="digits", model="mlp", batch_size=100, epochs=1, lr=0.3, shards=2), None,
                progress=False, checkpoint=False)
    assert m["test_acc"] == pytest.approx(ref.test_acc, abs=0.006)  # at most 2 of 359 test images differ
    assert m["test_acc"] > 0.5  # chance is 0.1
    assert (out / "metrics.csv").read_text().startswith("epoch,")
    assert (out / "checkpoint.pt").is_file() and (out / "report.md").is_file()


@pytest.mark.slow
def test_launcher_reports_the_failing_rank(tmp_path):
    from ssgd.distributed.launch import NodeFailureError, launch

    with pytest.raises(NodeFailureError) as ei:
        launch(2, str(HERE / "ddp_fail_worker.py"), module=False, echo=False, timeout=240)
    msg = str(ei.value)
    assert "rank 1 broke on purpose" in msg and "rank      : 1" in msg
    assert ei.value.returncode not in (0, None)
