"""report.md and curves.png of a `ssgd train` run folder, written from the folder's own files (hostile input)."""

from __future__ import annotations

import json

import pytest

from ssgd.experiments.train_report import FIGURE, REPORT, write_train_report
from ssgd.report import ResultFileError


def _folder(tmp_path, *, config=None, history=None, privacy=None):
    cfg = {"dataset": "digits", "model": "mlp", "optimizer": "ssgd", "scope": "global", "shards": 4, "lr": None,
           "batch_size": 32, "epochs": 2, "seed": 3, "device": "cpu", "schedule": None}
    cfg.update(config or {})
    rows = history if history is not None else [
        {"epoch": 1, "lr": 0.5, "train_loss": 1.9, "test_loss": 1.4, "test_acc": 0.61, "seconds": 0.2},
        {"epoch": 2, "lr": 0.25, "train_loss": 1.1, "test_loss": 1.0, "test_acc": 0.73, "seconds": 0.4}]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc": 0.73,
                                                       "seconds": 0.4, "history": rows}))
    if privacy is not None:
        (tmp_path / "privacy.json").write_text(json.dumps(privacy))
    return tmp_path


def test_report_has_every_epoch_and_the_figure(tmp_path):
    report = write_train_report(_folder(tmp_path)).read_text()
    assert (tmp_path / FIGURE).stat().st_size > 1000 and f"]({FIGURE})" in report
    assert "**0.7300** after epoch 2" in report and "best test accuracy: 0.7300" in report and "m = 4" in report and "seed 3" in report
    assert "| 1 | 0.5 | 1.9000 | 1.4000 | 0.6100 |" in report and "| 2 | 0.25 |" in report
    assert "optimizer's default" in report  # config.json's lr is null: no number is invented


def test_report_shows_the_recorded_lr_nodes_and_privacy(tmp_path):
    priv = {"epsilon": 2.5, "delta": 1e-5, "level": "example", "noise_multiplier": 1.1, "sample_rate": 0.01,
            "accountant": "rdp"}
    rows = [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "epsilon": "inf",
             "delta": 1e-5, "seconds": 1.0}]
    _folder(tmp_path, config={"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nodes": 2, "backend": "gloo", "reduction": "ssgd-hook-sum"},
            history=rows, privacy=priv)
    m = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**m, "replicas_identical": True}))
    report = write_train_report(tmp_path).read_text()
    assert report.startswith("# ssgd train --nodes 2") and "2 processes (gloo" in report
    assert "SSGD(m = 2)" in report  # one unit vector per node, whatever config.json's shards says
    assert "replicas bit-identical at the end: True" in report
    assert "lr 0.1, momentum 0.9," in report and "weight decay" not in report and "ε = 2.5 at δ = 1e-05" in report and "| ∞ |" in report


def test_foreign_text_in_config_is_escaped(tmp_path):
    _folder(tmp_path, config={"model": "<img src=x onerror=alert(1)>](http://evil)"})
    report = write_train_report(tmp_path).read_text()
    assert "<img" not in report and "&lt;img" in report
    assert "\\](http\\://evil)" in report  # the link bracket and the autolink are escaped: no link, no image


@pytest.mark.parametrize("history", [
    [],
    [{"epoch": 1, "lr": 0.1, "test_loss": 1.0, "test_acc": "0.9"}],
    [{"epoch": 1, "lr": 0.1, "test_loss": float("nan"), "test_acc": 0.5}],
    ["row"],
])
def test_a_damaged_history_is_one_line(tmp_path, history):
    _folder(tmp_path, history=history)
    with pytest.raises(ResultFileError) as e:
        write_train_report(tmp_path)
    assert "\n" not in str(e.value) and "metrics.json" in str(e.value)
    assert not (tmp_path / REPORT).exists()


def test_a_file_that_is_not_json_is_one_line(tmp_path):
    _folder(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\x00not json")
    with pytest.raises(ResultFileError, match="config.json"):
        write_train_report(tmp_path)
