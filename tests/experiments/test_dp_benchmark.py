"""The Fashion-MNIST epsilon = 3 benchmark: same sigma/q/steps/accountant for both methods, resumable runs,
the JSON schema of docs/results/dp_benchmark.json."""

import json
import math

import pytest
import torch

from ssgd.data import ImageDataset
from ssgd.experiments.dp_benchmark import DPBenchmarkConfig, fit_private
from ssgd.privacy import compute_epsilon


def _data():
    """Four classes, each a bright quadrant plus noise (16x16 so the tanh CNN applies)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=g)
    t = torch.zeros(4, 1, 16, 16)
    t[0, 0, :8, :8] = t[1, 0, :8, 8:] = t[2, 0, 8:, :8] = t[3, 0, 8:, 8:] = 1.0
    x = (t[y] + 0.3 * torch.randn(300, 1, 16, 16, generator=g)).clamp(0, 1)
    return ImageDataset("synthetic", x[:240], y[:240], x[240:], y[240:], 4)


def _cfg(**kw):
    base = dict(batch_size=60, epochs=3, ssgd_lrs=(0.4,), opacus_lrs=(4.0,), seed=1)
    base.update(kw)
    return DPBenchmarkConfig(**base).validate()


@pytest.mark.parametrize("method", ["ssgd", "opacus"])
def test_both_methods_learn_and_spend_the_same_epsilon(method):
    cfg, data = _cfg(), _data()
    hist = fit_private(method, data, cfg, lr=0.4 if method == "ssgd" else 4.0, epochs=3, sigma=0.8)
    assert [r["steps"] for r in hist] == [4, 8, 12]  # q = 1/ceil(240/60)
    for r in hist:  # one accountant for both; Opacus's engine agrees
        assert r["epsilon"] == pytest.approx(compute_epsilon(0.8, 0.25, r["steps"], 1e-5))
        assert r["epsilon_opacus"] == pytest.approx(r["epsilon"], rel=1e-6)
    assert hist[-1]["test_acc"] >= 0.6  # chance is 0.25: a broken update or noise scale fails this


@pytest.mark.parametrize("method", ["ssgd", "opacus"])
def test_resume_continues_bit_identically(method, tmp_path):
    cfg, data = _cfg(), _data()
    lr = 0.4 if method == "ssgd" else 4.0
    full = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "a.ckpt")
    part = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", stop_after=1)
    assert len(part) == 1
    rest = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", resume=True)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rest] == strip
    # a checkpoint of another run is refused, not half-read
    from ssgd.report import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="belongs to the run"):
        fit_private(method, data, cfg, lr=lr * 2, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", resume=True)


def test_config_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="grids differ in size"):
        DPBenchmarkConfig(ssgd_lrs=(0.1, 0.2), opacus_lrs=(1.0,)).validate()
    with pytest.raises(ValueError, match="Unknown normalisation 'clip'"):
        DPBenchmarkConfig(normalisation="clip").validate()
    with pytest.raises(ValueError, match="gamma=-1"):
        DPBenchmarkConfig(gamma=-1).validate()
    with pytest.raises(ValueError, match="finite target"):
        DPBenchmarkConfig(epsilon=math.inf).validate()
    with pytest.raises(ValueError, match="pilot_epochs=0"):
        DPBenchmarkConfig(pilot_epochs=0).validate()
    q = DPBenchmarkConfig.quick().validate()
    assert q.dataset == "fashion-mnist" and q.model == "tanh-cnn" and len(q.ssgd_lrs) == len(q.opacus_lrs)


@pytest.mark.slow
def test_benchmark_quick_cli_writes_the_result_json(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app
    from ssgd.data import DatasetError, load_dataset

    try:
        load_dataset("fashion-mnist")
    except DatasetError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    out, pub = tmp_path / "run", tmp_path / "pub"
    res = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress",
                                   "--out", str(out), "--publish", str(pub)])
    assert res.exit_code == 0, res.output
    doc = json.loads((pub / "dp_benchmark.json").read_text())
    assert doc == json.loads((out / "dp_benchmark.json").read_text())
    assert {"dataset", "epsilon", "delta", "epochs", "batch_size", "runs"} <= set(doc)
    assert doc["dataset"] == "fashion-mnist" and doc["epsilon"] == 3.0 and doc["delta"] == 1e-5
    for m in ("ssgd", "opacus"):
        r = doc["runs"][m]
        assert {"test_acc", "lr", "noise_multiplier", "epsilon"} <= set(r)
        assert 3.0 - 0.02 <= r["epsilon"] <= 3.0  # sigma solved for the epochs actually run
        assert r["test_acc"] > 0.2  # 10 classes: above chance after 2 private epochs on 600 images
        assert len(r["per_epoch"]) == doc["epochs"]
    assert doc["runs"]["ssgd"]["noise_multiplier"] == doc["runs"]["opacus"]["noise_multiplier"]
    pilot = doc["pilot"]["rows"]
    assert sum(r["method"] == "ssgd" and r["normalisation"] == "gamma" for r in pilot) == \
        sum(r["method"] == "opacus" for r in pilot) == 2  # grids of the same size
    assert {r["normalisation"] for r in pilot} == {"gamma", "unit", "layer", "clip"}
    for f in ("config.json", "report.md", "pilot.csv", "ssgd.ckpt", "opacus.ckpt", "dp_benchmark.png"):
        assert (out / f).is_file(), f
    assert (pub / "dp_benchmark.png").is_file()
    # resume: everything is done, nothing reruns; other settings are refused with the fix
    again = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress",
                                     "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert "pilot " not in again.output.replace("## Pilot", "") and "epoch 1/" not in again.output
    bad = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress",
                                   "--out", str(out), "--resume", "--epochs", "3"])
    assert bad.exit_code == 2 and "epochs: saved 2, now 3" in bad.output
