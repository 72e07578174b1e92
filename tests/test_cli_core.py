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


def test_help_lists_core_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    for cmd in ("train", "demo", "bench"):
        assert cmd in res.output


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
    (["--shards", "100", "--batch-size", "64"], "shards=100 exceeds batch_size=64"),
    (["--batch-size", "0"], "batch_size=0"),
])
def test_train_bad_option_is_a_clear_error(tmp_path, args, needle):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), "--no-progress", *args])
    assert res.exit_code != 0
    assert needle in _flat(res.output)
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
