import csv
import json

import pytest
from typer.testing import CliRunner

from ssgd.data.datasets import FASHION_MNIST_DIR
from ssgd.experiments.table6 import Table6Config, _jobs, summarize_table6

HAVE_FMNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_jobs_cover_the_grid_with_the_paper_rule():
    cfg = Table6Config(ms=(4, 16), ns=(4, 64), lr_points=3)
    jobs = _jobs(cfg)
    assert len(jobs) == 2 * 2 * 3 * 3
    ss = [j for j in jobs if j["method"] == "ssgd"]
    assert all(j["shards"] == j["m"] and j["batch"] == j["m"] * j["n"] for j in ss)
    assert all(abs(j["lr_opt"] * j["m"] - j["lr"]) < 1e-12 for j in ss)
    pooled = [j for j in jobs if j["method"] != "ssgd"]
    assert all(j["shards"] == 1 and j["same_as"]["batch"] == j["batch"] for j in pooled)


def test_summary_counts_cells():
    best = []
    for m, n, d in ((4, 4, 0.02), (4, 16, -0.02), (16, 4, 0.0)):
        best += [dict(m=m, n=n, method="sgdm", test_acc=0.7), dict(m=m, n=n, method="adam", test_acc=0.6),
                 dict(m=m, n=n, method="ssgd", test_acc=0.7 + d)]
    s = summarize_table6(best, epochs=1, eps=2.0)
    assert "SSGD(m) vs SGDm: beat in 1, matched in 1, trailed in 1 of 3" in s
    assert "SSGD(m) vs Adam: beat in 3" in s and "1/2 = 0.50" in s


def test_config_errors():
    with pytest.raises(ValueError, match="'sgd'"):
        Table6Config(methods=("sgd",)).validate()
    with pytest.raises(ValueError, match="noise_eps=0"):
        Table6Config(noise_eps=0).validate()


@pytest.mark.slow
def test_quick_cli_table6(tmp_path):
    from ssgd.cli import app

    dataset = "fashion-mnist" if HAVE_FMNIST else "mnist"
    args = ["reproduce", "table6", "--quick", "--dataset", dataset, "--ms", "4,16", "--ns", "4", "--train-size", "500",
            "--test-size", "300", "--lr-points", "2", "--out", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    for name in ("table6.csv", "table6.md", "accuracy_vs_batch.png", "report.md", "grid.csv"):
        assert (tmp_path / name).is_file(), name
    sel = list(csv.DictReader(open(tmp_path / "table6.csv")))
    assert len(sel) == 2 * 3 and max(float(r["test_acc"]) for r in sel) > 0.3
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["noise_eps"] == 2.0 and cfg["laplace_scale"] == 0.5
    assert "| 16 | 4 | 64 |" in (tmp_path / "table6.md").read_text()
