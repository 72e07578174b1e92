"""``ssgd bench step``: isolated-step and whole-step ratios against SGD, and host syncs per step."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import ssgd
from ssgd.cli import app
from ssgd.experiments.bench_step import (StepBenchConfig, TrainBenchConfig, count_host_reads, count_ops,
                                         gpu_launches, param_shapes, run_step_bench, run_train_bench)

runner = CliRunner()


def test_size_aliases_and_the_1b_shapes():
    assert param_shapes("11.7M") == param_shapes("resnet18") and param_shapes("124M") == param_shapes("gpt2")
    n = sum(math.prod(s) for s in param_shapes("1B"))
    assert 0.95e9 < n < 1.05e9 and len(param_shapes("1B")) == 220


def test_count_host_reads_and_ops():
    ps = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    for p in ps:
        p.grad = torch.randn_like(p)
    dev = torch.device("cpu")
    with count_host_reads(dev) as reads:
        float(ps[0].sum())
        ssgd.SSGD(ps, lr=0.1, nonfinite="skip").step()
    assert reads == ["__float__"]  # the step itself reads nothing
    assert torch.Tensor.item.__name__ == "item"  # restored
    with count_ops() as counter:
        torch.optim.SGD(ps, lr=0.1, foreach=True).step()
    assert counter.ops == ["aten._foreach_add_.List"]


def test_gpu_launches_follow_the_foreach_fast_path_rule():
    a, b = [torch.ones(3, 2), torch.ones(5)], [torch.ones(3, 2), torch.ones(5)]
    add = torch.ops.aten._foreach_add_.List
    assert gpu_launches(add, (a, b)) == 1  # same sizes, dtype, device: one multi-tensor kernel
    assert gpu_launches(torch.ops.aten._foreach_div_.List, (a, [torch.tensor(2.0)] * 2)) == 2  # 0-dim scales
    assert gpu_launches(add, (a, [torch.ones(3, 2), torch.ones(5, dtype=torch.float64)])) == 2  # mixed dtypes
    assert gpu_launches(add, (a, [torch.ones(2, 3).t(), torch.ones(5)])) == 2  # other strides
    assert gpu_launches(torch.ops.aten._foreach_norm.Scalar, (a,)) == 1
    assert gpu_launches(torch.ops.aten.mul.Tensor, (a[0], a[0])) == 1


def test_step_bench_rows_with_syncs_and_ops():
    rows = run_step_bench(StepBenchConfig(sizes=("tiny",), momenta=(0.9,), repeats=2, warmup=1), progress=False)
    assert [r["scope"] for r in rows] == ["global", "layer"]
    for r in rows:
        assert r["syncs"] == 0 and r["sgd_syncs"] == 0
        assert 0 < r["ops"] <= r["sgd_ops"] + 8 and r["sgd_launches"] == r["sgd_ops"]
        # layer scope divides by a list of 0-dim norms: off the CUDA foreach fast path, a kernel per tensor
        assert r["launches"] == r["ops"] + (0 if r["scope"] == "global" else r["n_tensors"] - 1)
        assert r["fastest_ratio"] == pytest.approx(r["ssgd_fastest_ms"] / r["sgd_fastest_ms"])


def test_train_bench_whole_step_rows():
    rows = run_train_bench(TrainBenchConfig(models=("mlp",), repeats=2, warmup=0, batch=8), progress=False)
    assert [r["variant"] for r in rows] == ["ssgd"]
    for r in rows:
        assert r["n_params"] == 269_322 and r["batch"] == 8
        assert r["fastest_ratio"] == pytest.approx(r["fastest_ms"] / r["sgd_fastest_ms"]) and r["fastest_ratio"] > 0
        assert r["syncs"] == 0 and r["sgd_syncs"] == 0


def test_bench_cli_whole_step_and_bad_model(tmp_path):
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "step", "--sizes", "none", "--models", "mlp", "--repeats", "1", "--warmup",
                              "0", "--batch", "4", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["rows"] == [] and [r["syncs"] for r in data["train_rows"]] == [0]
    assert "Whole training step" in res.output and (out / "train_results.csv").exists()
    res = runner.invoke(app, ["bench", "step", "--models", "vgg", "--no-progress"])
    assert res.exit_code != 0 and "vgg" in res.output
    with pytest.raises(ValueError, match="Unknown model 'vgg'"):
        TrainBenchConfig(models=("vgg",)).validate()
