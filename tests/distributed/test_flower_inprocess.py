"""The packaged ClientApp (mods included) and ServerApp logic with in-process nodes:
misbehaving nodes, a vanishing node, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from ssgd.distributed.flower import CheckpointMismatchError, FlowerRunConfig, load_checkpoint, run_in_process  # noqa: E402

ROUNDS = 5
BASE = {"num-rounds": ROUNDS, "test-size": 300, "server-lr": 0.5, "batch-size": 32, "resume": False}
pytestmark = pytest.mark.slow


def _run(tmp_path, name, **kw):
    cfg = {**BASE, "out-dir": str(tmp_path / name), **kw.pop("cfg", {})}
    summary = run_in_process(3, cfg, **kw)
    history = json.loads((tmp_path / name / "metrics.json").read_text())["history"]
    arrays = load_checkpoint(tmp_path / name / "checkpoint.pt")["arrays"]
    return summary, history, arrays


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flower-inprocess")
    out = {"clean": _run(tmp, "clean"), "absent": _run(tmp, "absent", kill={1: 2})}
    for fault in ("nan", "shape", "norm1000"):
        out[fault] = _run(tmp, fault, node_configs=[{}, {}, {"fault": fault}])
    return out


def test_clean_run_learns_and_every_update_is_a_unit_vector(runs):
    summary, history, _ = runs["clean"]
    assert summary["status"] == "finished" and summary["rejected_updates"] == 0
    assert summary["final_test_acc"] > summary["initial_test_acc"] + 0.1
    norms = [v for r in history[1:] for _, v in r["norms"]]
    assert len(norms) == 3 * ROUNDS
    assert max(abs(v - 1.0) for v in norms) < 1e-4


@pytest.mark.parametrize("fault", ["nan", "shape", "norm1000"])
def test_a_misbehaving_node_is_rejected_every_round_and_changes_nothing(runs, fault):
    summary, history, arrays = runs[fault]
    _, _, absent_arrays = runs["absent"]
    assert summary["status"] == "finished"
    assert summary["rejected_updates"] == ROUNDS
    for r in history[1:]:
        assert r["accepted"] == 2 and [n for n, _ in r["rejections"]] == [1003]
    # rejecting the bad node's update is exactly as if the node were not there
    for k in arrays:
        np.testing.assert_allclose(arrays[k], absent_arrays[k], rtol=0, atol=1e-6)
    clean_acc = runs["clean"][0]["final_test_acc"]
    assert summary["final_test_acc"] >= clean_acc - 0.1


def test_a_node_that_vanishes_mid_run_leaves_the_others_to_finish(tmp_path):
    summary, history, _ = _run(tmp_path, "kill", kill={3: 1})
    assert summary["status"] == "finished" and [r["round"] for r in history] == list(range(ROUNDS + 1))
    assert [r["accepted"] for r in history[1:]] == [3, 3, 2, 2, 2]
    assert all(1002 not in [n for n, _ in r["norms"]] for r in history[3:])
    assert summary["final_test_acc"] > summary["initial_test_acc"] + 0.1


def test_resume_from_the_last_checkpoint_equals_an_uninterrupted_run(runs, tmp_path):
    _, _, straight = runs["clean"]
    out = tmp_path / "resumed"
    first = run_in_process(3, {**BASE, "num-rounds": 2, "out-dir": str(out), "resume": True})
    assert first["resumed_after_round"] == 0
    assert load_checkpoint(out / "checkpoint.pt")["round"] == 2
    second = run_in_process(3, {**BASE, "out-dir": str(out), "resume": True})
    assert second["resumed_after_round"] == 2
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["round"] for r in history] == list(range(ROUNDS + 1))
    resumed = load_checkpoint(out / "checkpoint.pt")["arrays"]
    for k in straight:
        np.testing.assert_allclose(resumed[k], straight[k], rtol=0, atol=1e-6)


def test_resume_refuses_a_checkpoint_of_another_experiment(runs, tmp_path):
    out = tmp_path / "mismatch"
    run_in_process(3, {**BASE, "num-rounds": 1, "out-dir": str(out), "resume": True})
    cfg = FlowerRunConfig.from_mapping({**BASE, "model": "lenet", "out-dir": str(out)}).to_dict()
    with pytest.raises(CheckpointMismatchError, match="model"):
        load_checkpoint(out / "checkpoint.pt", cfg)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="refusing checkpoint"):
        load_checkpoint(out / "checkpoint.pt")


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path):
    """Finding 9: a refused Flower resume (CheckpointMismatchError) still overwrote config.json."""
    from ssgd.report.io import RunDirError

    out = tmp_path / "keep"
    run_in_process(3, {**BASE, "num-rounds": 1, "out-dir": str(out), "resume": True})
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointMismatchError, match="model"):
        run_in_process(3, {**BASE, "num-rounds": 1, "model": "lenet", "out-dir": str(out), "resume": True})
    # an existing run folder without resume is refused too, naming the fix
    with pytest.raises(RunDirError, match="overwrite=true"):
        run_in_process(3, {**BASE, "num-rounds": 1, "out-dir": str(out), "resume": False})
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # ... and replaced on request
    run_in_process(3, {**BASE, "num-rounds": 1, "model": "lenet", "out-dir": str(out), "resume": False,
                       "overwrite": True})
    assert json.loads((out / "config.json").read_text())["model"] == "lenet"


def test_cli_local_refuses_bad_input_in_one_line(tmp_path):
    """Finding 12: `--out <file>` gave a traceback, `--nodes 5000` exited 0 with every node failing,
    `--set sever-lr=9` ran with the default."""
    from typer.testing import CliRunner

    from ssgd.cli import app

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["--out", str(a_file)], "is a file"),
        (["--nodes", "5000", "--out", str(tmp_path / "n")], "5000"),
        (["--set", "sever-lr=9", "--out", str(tmp_path / "s")], "sever-lr"),
    ]
    for args, needle in cases:
        res = CliRunner().invoke(app, ["flower", "local", "--rounds", "1", "--no-progress", *args])
        assert res.exit_code != 0, args
        assert needle in res.output, res.output
        assert "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "server-lr" in CliRunner().invoke(app, ["flower", "local", "--set", "sever-lr=9"]).output  # known keys
    assert not (tmp_path / "n").exists() and not (tmp_path / "s").exists()
    assert a_file.read_text() == "x"


def test_cli_local_reports_the_rejected_node(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app

    res = CliRunner().invoke(app, ["flower", "local", "--nodes", "3", "--rounds", "2", "--fault", "2:nan",
                                   "--set", "test-size=100", "--out", str(tmp_path / "cli"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "round 2, node 1003: non-finite values" in res.output
    assert json.loads((tmp_path / "cli" / "result.json").read_text())["rejected_updates"] == 2
    bad = CliRunner().invoke(app, ["flower", "local", "--nodes", "3", "--fault", "9:nan", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "node index 9" in bad.output
    assert not (tmp_path / "bad").exists()
    # the finished run folder is not overwritten without --overwrite (or continued without --resume)
    again = CliRunner().invoke(app, ["flower", "local", "--nodes", "3", "--rounds", "2", "--out", str(tmp_path / "cli"),
                                     "--no-progress"])
    assert again.exit_code != 0 and "--resume" in again.output
