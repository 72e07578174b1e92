import csv
import json

import pytest
from typer.testing import CliRunner

from ssgd.data.datasets import FASHION_MNIST_DIR
from ssgd.experiments.sweep import GridStore, next_run
from ssgd.experiments.table6 import Table6Config, cells_of, results_markdown, summarize_table6

HAVE_FMNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_cells_cover_the_grid_with_the_paper_rule():
    cfg = Table6Config(ms=(4, 16), ns=(4, 64), lr_points=3)
    cells = cells_of(cfg)
    assert len(cells) == 2 * 2 * 3 and all(len(c.grid) == 3 for c in cells)
    assert cells[0].batch == 16 * 64  # largest batch first
    ss = [c for c in cells if c.method == "ssgd"]
    assert all(c.shards == c.key["m"] == c.lr_divisor and c.batch == c.key["m"] * c.key["n"] for c in ss)
    pooled = [c for c in cells if c.method != "ssgd"]
    assert all(c.shards == 1 and c.lr_divisor == 1 and c.twin == dict(batch=c.batch, method=c.method) for c in pooled)


def test_pooled_cells_with_the_same_batch_reuse_their_twin_runs(tmp_path):
    from ssgd.experiments.sweep import _train_one

    cfg = Table6Config(ms=(4, 16), ns=(4, 16), methods=("sgdm",), lr_points=1, widen=0)
    a, b = [c for c in cells_of(cfg) if c.batch == 64]  # 4x16 and 16x4: the same pooled batch of 64
    store = GridStore(tmp_path / "grid.json", resume=False)
    store.add(dict(a.key, lr=a.grid[0], seed=0, val_acc=0.5, test_acc=0.6, epochs=1, steps=3, lr_optimizer=0.02))
    assert next_run(b, store) == (b.grid[0], 0)
    row = _train_one(b, b.grid[0], 0, None, None, cfg, store)  # no data needed: nothing is trained
    assert row["reused_from"] == dict(batch=64, method="sgdm") and row["test_acc"] == 0.6 and row["n"] == b.key["n"]
    assert next_run(b, store) is None


def test_summary_counts_cells():
    best = []
    for m, n, d in ((4, 4, 0.02), (4, 16, -0.02), (16, 4, 0.0)):
        best += [dict(m=m, n=n, method="sgdm", test_acc=0.7), dict(m=m, n=n, method="adam", test_acc=0.6),
                 dict(m=m, n=n, method="ssgd", test_acc=0.7 + d)]
    s = summarize_table6(best, epochs=1, eps=2.0)
    assert "SSGD(m) vs SGDm: beat in 1, matched in 1, trailed in 1 of 3" in s
    assert "SSGD(m) vs Adam: beat in 3" in s and "1/2 = 0.50" in s


def test_paper_table6_is_the_published_grid():
    from ssgd.experiments.table6 import METHODS6, PAPER_TABLE6

    sizes = (4, 8, 16, 32, 64)
    assert set(PAPER_TABLE6) == {(m, n) for m in sizes for n in sizes}
    assert all(set(v) == set(METHODS6) and all(0.70 < a < 0.87 for a in v.values()) for v in PAPER_TABLE6.values())
    # spot checks against the published table: the corners and one middle cell
    assert PAPER_TABLE6[(4, 4)] == dict(sgdm=0.7089, adam=0.7177, ssgd=0.7732)
    assert PAPER_TABLE6[(64, 64)] == dict(sgdm=0.8283, adam=0.8663, ssgd=0.8655)
    assert PAPER_TABLE6[(16, 16)] == dict(sgdm=0.7724, adam=0.8173, ssgd=0.8389)
    # the paper's own claim in it: SSGD at least as good as SGDm everywhere
    assert all(v["ssgd"] > v["sgdm"] for v in PAPER_TABLE6.values())


def test_summary_compares_with_the_paper():
    best = [dict(m=4, n=4, method="sgdm", test_acc=0.7089 + 0.05), dict(m=4, n=4, method="ssgd", test_acc=0.7732),
            dict(m=64, n=64, method="sgdm", test_acc=0.8283 - 0.01), dict(m=64, n=64, method="ssgd", test_acc=0.80)]
    s = summarize_table6(best, epochs=20, eps=2.0)
    assert "SGDm matched in 1, beat in 1, trailed in 0 of 2" in s
    assert "SSGD(m) matched in 1, beat in 0, trailed in 1 of 2" in s


def test_config_errors():
    with pytest.raises(ValueError, match="'sgd'"):
        Table6Config(methods=("sgd",)).validate()
    with pytest.raises(ValueError, match="noise_eps=0"):
        Table6Config(noise_eps=0).validate()
    with pytest.raises(ValueError, match="ms=\\[0\\]"):
        Table6Config(ms=(0,)).validate()
    # the shared fields are validated by the shared config, not copied
    with pytest.raises(ValueError, match="val_fraction=1"):
        Table6Config(val_fraction=1).validate()


def test_markdown_from_the_json():
    cells = [dict(m=4, n=16, batch=64, method="ssgd", test_acc_mean=0.7, test_acc_std=None, steps=844,
                  lr_at_grid_edge=True)]
    md = results_markdown({"epochs": 20, "partial": True, "cells_done": 1, "cells_total": 27, "cells": cells})
    assert "| 4 | 16 | 64 | 844 | 0.7000† / 0.7947 |" in md and "1 of 27 cells" in md


@pytest.mark.slow
def test_quick_cli_table6(tmp_path):
    from ssgd.cli import app

    dataset = "fashion-mnist" if HAVE_FMNIST else "mnist"
    args = ["reproduce", "table6", "--quick", "--dataset", dataset, "--ms", "4,16", "--ns", "4", "--train-size", "500",
            "--test-size", "300", "--lr-points", "2", "--out", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    for name in ("table6.csv", "table6.md", "table6.json", "accuracy_vs_batch.png", "report.md", "grid.csv"):
        assert (tmp_path / name).is_file(), name
    sel = list(csv.DictReader(open(tmp_path / "table6.csv")))
    assert len(sel) == 2 * 3 and max(float(r["test_acc"]) for r in sel) > 0.3
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["noise_eps"] == 2.0 and cfg["laplace_scale"] == 0.5
    assert "| 16 | 4 | 64 |" in (tmp_path / "table6.md").read_text()
