"""`ssgd train` leaves report.md and its figure in the run folder, like every other command."""

from __future__ import annotations

import json

from ssgd import cli


def test_train_run_folder_has_report_and_figure(capsys, tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "128",
                   "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"**{metrics['test_acc']:.4f}** after epoch 2" in report
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
