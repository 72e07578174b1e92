"""Poisoning: the aggregators' defining properties, and a small end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from ssgd.experiments.poisoning import (PoisoningConfig, aggregate, clipped_mean, coordinate_median,
                                        krum, unit_mean)


def _honest(n=9, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) + 0.1 * torch.randn(n, d, generator=g)


def test_ssgd_bounds_one_nodes_influence_whatever_it_sends():
    H = _honest()
    base = unit_mean(torch.cat([H, H[:1]]))
    for scale in (1.0, 1e3, 1e12):
        evil = torch.randn(1, H.shape[1], generator=torch.Generator().manual_seed(1)) * scale
        moved = unit_mean(torch.cat([H, evil]))
        # replacing one of n = 10 unit vectors moves the mean by at most 2 / n
        assert torch.linalg.vector_norm(moved - base) <= 2 / 10 + 1e-6
    # the plain mean has no such bound
    evil = torch.full((1, H.shape[1]), 1e3)
    assert torch.linalg.vector_norm(torch.cat([H, evil]).mean(0) - torch.cat([H, H[:1]]).mean(0)) > 100


def test_ssgd_does_not_stop_a_direction_attack():
    H = _honest(n=7)
    flipped = -H[:3]
    agg = unit_mean(torch.cat([H, flipped]))
    clean = unit_mean(torch.cat([H, H[:3]]))
    # three sign-flipped unit vectors pull the mean exactly as much as three honest ones push it
    assert torch.dot(agg, clean) < 0.5 * torch.dot(clean, clean)


def test_robust_aggregators_ignore_one_huge_outlier():
    H = _honest()
    U = torch.cat([H, torch.full((1, H.shape[1]), 1e6)])
    honest_mean = H.mean(0)
    for name in ("median", "krum", "clip"):
        assert torch.linalg.vector_norm(aggregate(name, U) - honest_mean) < 2.0, name
    assert torch.linalg.vector_norm(aggregate("mean", U) - honest_mean) > 1e4


def test_aggregator_details():
    U = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(coordinate_median(U), torch.tensor([1.0, 0.0]))
    assert torch.allclose(clipped_mean(U, clip=1.0), torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(unit_mean(U), torch.tensor([2 / 3, 1 / 3]))
    close = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [50.0, 50.0]])
    assert float(krum(close, f=1).abs().max()) <= 0.1  # one of the cluster, never the outlier
    with pytest.raises(ValueError, match="n - f - 2"):
        krum(close, f=3)
    with pytest.raises(ValueError, match="Unknown aggregator"):
        aggregate("trimmed", U)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="k=10"):
        PoisoningConfig(malicious=(10,)).validate()
    with pytest.raises(ValueError, match="attack"):
        PoisoningConfig(attacks=("backdoor",)).validate()


@pytest.mark.slow
def test_quick_grid_boosted_replacement_breaks_the_mean_not_ssgd(tmp_path):
    cfg = PoisoningConfig(datasets=("mnist",), malicious=(0, 1), attacks=("boost",), aggregators=("mean", "ssgd", "median"),
                          rounds=40, eval_every=20, n_test=500, hidden=32)
    res = cfg.run(tmp_path, progress=False)
    acc = {(r["attack"], r["k"], r["aggregator"]): r["final_acc"] for r in res.tables["runs"]}
    assert len(acc) == 3 + 3
    # one boosted node (x N) drags the plain mean far below its clean accuracy; SSGD stays near its own
    assert acc[("boost", 1, "mean")] < acc[("none", 0, "mean")] - 0.2
    assert acc[("boost", 1, "ssgd")] > acc[("none", 0, "ssgd")] - 0.1
    for name in ("report.md", "results.csv", "results.json", "config.json", "poisoning_mnist.png"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text()
    assert "| boost | 1 |" in report and "ssgd" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["curve"] and saved["partial"] is False
    assert res.report == tmp_path / "report.md" and res.figures["mnist"].is_file() and "| boost | 1 |" in res.text
    # resume: every run is in results.json, nothing is trained again (the rows come back unchanged)
    again = cfg.run(tmp_path, progress=False, resume=True)
    assert again.tables["runs"] == json.loads(json.dumps(res.tables["runs"]))
    # a different config is refused on resume, naming the key
    from ssgd.report import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="rounds"):
        PoisoningConfig(**{**cfg.to_dict(), "rounds": 41}).run(tmp_path, progress=False, resume=True)


def test_quick_config_and_cli_refuse_bad_lists(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app
    from ssgd.experiments.contract import Experiment

    q = PoisoningConfig.quick()
    assert isinstance(q, Experiment) and q.validate() is q and q.rounds == 60 and q.datasets == ("mnist",)
    r = CliRunner().invoke(app, ["reproduce", "poisoning", "--attacks", "boost,backdoor", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "backdoor" in r.output
    r = CliRunner().invoke(app, ["reproduce", "poisoning", "--malicious", "1,x", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--malicious" in r.output
    r = CliRunner().invoke(app, ["reproduce", "poisoning", "--malicious", "10", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "k=10" in r.output and not any(tmp_path.iterdir())
