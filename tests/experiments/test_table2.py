import csv
import json

import pytest
from typer.testing import CliRunner

from ssgd.data.datasets import FASHION_MNIST_DIR
from ssgd.experiments.table2 import (PAPER_TABLE2, Table2Config, lr_grid, paper_m, select_best,
                                     summarize_table2)

HAVE_FMNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_paper_m_and_paper_numbers():
    assert [paper_m(b) for b in (16, 512, 1024, 2048, 4096, 8192)] == [4, 4, 16, 32, 32, 64]
    assert PAPER_TABLE2[8192]["ssgd"] == 0.8648 and PAPER_TABLE2[16]["sgd"] == 0.8253
    assert Table2Config(shards={1024: 8}).m_for(1024) == 8


def test_lr_grid_is_geometric_around_centre():
    g = lr_grid(0.1, 3)
    assert g[1] == 0.1 and abs(g[2] / g[1] - 10 ** 0.5) < 1e-3 and abs(g[1] / g[0] - 10 ** 0.5) < 1e-3
    assert lr_grid(0.1, 1) == [0.1] and len(lr_grid(1.0, 5, step=2)) == 5
    with pytest.raises(ValueError, match="grid size 0"):
        lr_grid(0.1, 0)


def test_selection_uses_validation_never_test():
    rows = [dict(lr=0.01, val_acc=0.80, test_acc=0.90), dict(lr=0.1, val_acc=0.85, test_acc=0.70),
            dict(lr=1.0, val_acc=float("nan"), test_acc=0.99)]
    best = select_best(rows)
    assert best["lr"] == 0.1 and best["test_acc"] == 0.70 and not best["lr_at_edge"]
    assert select_best(rows[:2] + [dict(lr=1.0, val_acc=0.9, test_acc=0.1)])["lr_at_edge"]


def test_summary_is_generated_from_the_numbers():
    def rows(ssgd_minus_sgd):
        out = []
        for b, d in ssgd_minus_sgd.items():
            out += [dict(batch=b, method="sgd", test_acc=0.85), dict(batch=b, method="ssgd", test_acc=0.85 + d),
                    dict(batch=b, method="sgdm", test_acc=0.80), dict(batch=b, method="adam", test_acc=0.80)]
        return out

    s = summarize_table2(rows({16: -0.02, 1024: 0.001, 8192: 0.03}), epochs=2, train_examples=54000)
    assert "beat at batch 8192" in s and "matched at batch 1024" in s and "trailed at batch 16" in s
    assert "partly holds" in s and "2 epoch(s)" in s and "14 steps" in s
    s2 = summarize_table2(rows({16: 0.02, 1024: -0.02, 8192: -0.03}), epochs=2)
    assert "does not hold" in s2 and "same ordering at 0 of 3" in s2


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="'rmsprop'"):
        Table2Config(methods=("rmsprop",)).validate()
    with pytest.raises(ValueError, match="val_fraction=0"):
        Table2Config(val_fraction=0).validate()


@pytest.mark.slow
def test_quick_cli_writes_the_run_folder_and_resumes(tmp_path):
    from ssgd.cli import app

    dataset = "fashion-mnist" if HAVE_FMNIST else "mnist"
    args = ["reproduce", "table2", "--quick", "--dataset", dataset, "--batch-sizes", "16,256",
            "--train-size", "600", "--test-size", "300", "--lr-points", "2", "--out", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    for name in ("config.json", "grid.json", "grid.csv", "table2.csv", "table2.md", "accuracy_vs_batch.png",
                 "report.md", "summary.json"):
        assert (tmp_path / name).is_file(), name
    sel = list(csv.DictReader(open(tmp_path / "table2.csv")))
    assert len(sel) == 2 * 6 and {r["method"] for r in sel} == {"sgd", "sgdm", "adam", "ssgd", "nsgd", "lars"}
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in sel)
    assert {r["m"] for r in sel if r["method"] == "ssgd"} == {"4"}
    # learning happened: the best cell is far above chance (10 classes)
    assert max(float(r["test_acc"]) for r in sel) > 0.5
    runs = json.loads((tmp_path / "grid.json").read_text())["runs"]
    assert len(runs) == 2 * 6 * 2
    md = (tmp_path / "table2.md").read_text()
    assert "0.8253" in md and "| 16 | 4 |" in md  # the paper's column sits beside ours
    assert "What matched" in (tmp_path / "report.md").read_text()
    r2 = CliRunner().invoke(app, args + ["--resume"])  # nothing left to train: same table
    assert r2.exit_code == 0 and len(json.loads((tmp_path / "grid.json").read_text())["runs"]) == len(runs)
    assert (tmp_path / "table2.md").read_text() == md
    bad = CliRunner().invoke(app, ["reproduce", "table2", "--methods", "sgd,foo", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "foo" in bad.output
