"""The core CLI: ``ssgd --help``, ``ssgd train``, ``ssgd bench step``, ``python -m ssgd``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from ssgd.cli import app
from ssgd.experiments.bench_step import param_shapes

runner = CliRunner()


def test_demo_bad_value_is_one_line_and_leaves_no_run_folder(tmp_path):
    """``ssgd demo`` refuses a bad value before it makes its run folder (train/bench are run in the tests below)."""
    out = tmp_path / "demo-run"
    res = runner.invoke(app, ["demo", "--attack-iters", "-1", "--out", str(out), "--no-progress"])
    assert res.exit_code != 0 and "--attack-iters" in _flat(res.output) and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.slow
def test_python_dash_m_help():
    res = subprocess.run([sys.executable, "-m", "ssgd", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "Usage" in res.stdout


def _flat(text: str) -> str:
    """CLI output with rich's error-box borders and line wrapping removed."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


@pytest.mark.slow
def test_train_tiny_budget_writes_run_folder(tmp_path):
    # one run (loading the embedded MNIST dominates): SSGD(m=2), layer scope, one epoch of an MLP
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--model", "mlp", "--epochs", "1", "--batch-size", "128", "--seed", "0",
                              "--optimizer", "ssgd", "--scope", "layer", "--shards", "2", "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["optimizer"], cfg["scope"], cfg["shards"], cfg["batch_size"]) == ("ssgd", "layer", 2, 128)
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["test_acc"]
    assert 0.3 < acc <= 1.0  # 10 classes: chance is 0.1; one SSGD epoch learns far more
    assert f"test accuracy: {acc:.4f}" in res.output


@pytest.mark.parametrize("args, needle", [
    (["--scope", "bogus"], "bogus"),
    (["--shards", "100", "--batch-size", "64"], "--shards 100 exceeds --batch-size 64"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_train_bad_option_is_a_clear_error(tmp_path, args, needle):
    """The config names its field (``batch_size=0``); the command layer turns that into the flag the user typed."""
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), "--no-progress", *args])
    assert res.exit_code != 0
    assert needle in _flat(res.output) and "batch_size=" not in _flat(res.output)
    assert not (out / "metrics.json").exists()


def test_bench_shapes_are_the_documented_models():
    for size, n_params, n_tensors in [("resnet18", 11_689_512, 62), ("gpt2", 124_439_808, 148)]:
        shapes = param_shapes(size)
        assert len(shapes) == n_tensors and sum(math.prod(s) for s in shapes) == n_params


def test_bench_step_runs_and_writes_results(tmp_path):
    out = tmp_path / "bench"
    res = runner.invoke(app, ["bench", "step", "--sizes", "tiny", "--repeats", "2", "--warmup", "1",
                              "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["scope"], r["momentum"]) for r in rows} == {("global", 0.0), ("layer", 0.0), ("global", 0.9),
                                                           ("layer", 0.9)}
    for r in rows:
        assert r["ratio"] == pytest.approx(r["ssgd_ms"] / r["sgd_ms"]) and r["ratio"] > 0
    assert "SSGD/SGD" in res.output and (out / "report.md").exists() and (out / "results.csv").exists()


@pytest.mark.parametrize("args, needle", [
    (["--sizes", "huge"], "Unknown size 'huge'"),
    (["--repeats", "0"], "repeats"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "torch.cuda.is_available() is False")]))
def test_bench_step_bad_option(args, needle):
    res = runner.invoke(app, ["bench", "step", "--no-progress", *args])
    assert res.exit_code != 0
    assert needle in _flat(res.output)


# ---------------------------------------------------------------- one line, never a traceback (issue 9 #9, #12)

TINY = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "256", "--no-progress"]


def _refused(res, *needles):
    text = _flat(res.output)
    assert res.exit_code not in (0, None), res.output
    assert "Traceback" not in res.output, res.output
    for n in needles:
        assert n in text, res.output
    return text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_existing_run_is_not_overwritten_without_resume(finished_run):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.1", "--out", str(finished_run)])
    _refused(res, str(finished_run), "--resume")
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before


def test_resume_on_a_corrupt_checkpoint(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "checkpoint.pt").write_bytes(b"\x00not a checkpoint" * 10)
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.1", "--out", str(run), "--resume"])
    _refused(res, str(run / "checkpoint.pt"), "refusing checkpoint")


def test_resume_with_other_settings_or_nodes_is_one_line_before_any_process_starts(finished_run):
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.2", "--out", str(finished_run), "--resume"])
    _refused(res, "differs in ['lr']", "lr: saved 0.1, now 0.2")
    # a 1-node checkpoint resumed on 2 nodes: refused here, before torchrun (was 128 lines, 6 tracebacks)
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.1", "--out", str(finished_run), "--resume",
                              "--nodes", "2"])
    _refused(res, "1-node run", "--nodes 1")


def test_out_naming_a_file_or_a_read_only_folder(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("keep")
    _refused(runner.invoke(app, [*TINY, "--out", str(f)]), str(f), "is a file")
    assert f.read_text() == "keep"
    import tempfile

    def read_only(*a, **k):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    _refused(runner.invoke(app, [*TINY, "--out", str(tmp_path / "ro")]), "not writable")


@pytest.mark.parametrize("args, needle", [
    (["--device", "tpu"], "tpu"),
    (["--lr", "-1"], "--lr -1.0"),
    (["--lr", "nan"], "--lr nan"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--model", "vgg"], "vgg"),
    (["--data-dir", "/tmp"], "--data-dir"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU")]))
def test_bad_values_leave_no_run_folder(tmp_path, args, needle):
    out = tmp_path / "run"
    _refused(runner.invoke(app, [*TINY, "--out", str(out), *args]), needle)
    assert not out.exists()  # nothing half-made: not even an empty folder


@pytest.mark.slow
def test_diverging_lr_is_one_line_through_python_dash_m(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ssgd", *TINY, "--optimizer", "ssgd", "--lr", "1e30",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "--lr 1e+30" in err[0] and "non-finite gradient" in err[0], res.stderr
    assert not out.exists()  # diverged before the first checkpoint: no half-made run folder is left


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("nodes", ["1", "2"])
def test_resume_never_runs_code_from_a_checkpoint(finished_run, tmp_path, nodes):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "pwned"
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    ck["optimizer"] = _Evil(str(marker))
    torch.save(ck, run / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    res = runner.invoke(app, [*TINY, "--optimizer", "ssgd", "--lr", "0.1", "--out", str(run), "--resume",
                              "--nodes", nodes])
    _refused(res, str(run / "checkpoint.pt"), "not a plain-data checkpoint")
    assert not marker.exists()  # on --nodes 2 it is refused before torchrun starts any rank
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
