"""Result files read back on --resume are hostile input: damaged or foreign ones are refused in one
line (or, for the leakage grid's per-cell files, simply recomputed), never half-read."""

from __future__ import annotations

import json

import pytest

from ssgd.experiments.sweep import GridStore


@pytest.mark.parametrize("text, needle", [("{not json", "unreadable"), ('{"runs": "x"}', "no list of runs"),
                                          ('{"runs": [1, 2]}', "no list of runs"), ("[]", "unreadable")])
def test_sweep_grid_refuses_damaged_or_foreign_files(tmp_path, text, needle):
    path = tmp_path / "grid.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        GridStore(path, resume=True)
    assert path.read_text() == text  # left as it was


def _poisoning_rows(path):
    from ssgd.experiments.poisoning import _saved_rows

    return _saved_rows(path)


def _sweep_results(path):
    from ssgd.experiments.sweep import load_results

    return load_results(path)


@pytest.mark.parametrize("load, text, needle", [
    (_poisoning_rows, "\x00\x01", "unreadable"), (_poisoning_rows, '{"rows": [{"k": 1}]}', "no list of poisoning"),
    (_poisoning_rows, '{"other": 1}', "unreadable"),
    (_sweep_results, "{not json", "not a readable results JSON"), (_sweep_results, "[1, 2]", "no 'cells' list"),
    (_sweep_results, '{"cells": [1]}', "must be an object")])
def test_results_readers_refuse_damaged_or_foreign_files(tmp_path, load, text, needle):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        load(path)
    assert path.read_text() == text  # left as it was


def _done_cell(**kw):
    cell = {"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg", "defense": "none",
            "status": "done", "defense_spec": "none", "model": "lenet", "attack_spec": "idlg:iters=2",
            "iterations": 2, "restarts": 1, "init": "mean", "psnr_mean": 12.0, "protects": False,
            "rows": [{"target": 0, "image": 0, "label": 3, "psnr": 12.0, "ssim": 0.1, "mse": 0.06,
                      "label_acc": 1.0, "seconds": 0.5}], "first_image": [0.5] * 64}
    cell.update(kw)
    return cell


def test_leakage_grid_recomputes_damaged_cells_instead_of_reading_them(tmp_path):
    from ssgd.experiments.leakage import _load_cells

    cells = tmp_path / "cells"
    cells.mkdir()
    good, na = _done_cell(), {"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg",
                              "defense": "ssgd-shards:m=4", "status": "n/a", "reason": "needs a multiple of m"}
    (cells / "good.json").write_text(json.dumps(good))
    (cells / "na.json").write_text(json.dumps(na))
    (cells / "truncated.json").write_text('{"status": "do')
    (cells / "foreign.json").write_text("[1, 2, 3]")
    (cells / "binary.json").write_bytes(b"\xff\xfe\x00")
    # crafted: claims to be done but lacks what a run writes, or carries the wrong types
    (cells / "bare.json").write_text(json.dumps({"status": "done", "attack": "idlg"}))
    (cells / "rows.json").write_text(json.dumps(_done_cell(rows=[{"psnr": "high"}])))
    (cells / "empty.json").write_text(json.dumps(_done_cell(rows=[])))
    (cells / "batch.json").write_text(json.dumps(_done_cell(batch="1")))
    (cells / "confirm.json").write_text(json.dumps(_done_cell(confirm={"psnr_mean": None})))
    (cells / "image.json").write_text(json.dumps(_done_cell(first_image="abc")))
    assert _load_cells(tmp_path) == [good, na]


def test_crafted_cells_are_rerun_on_resume_not_trusted(tmp_path):
    """--resume skips only cells a run could have written; a crafted 'done' file is recomputed."""
    from ssgd.experiments.leakage import LeakageConfig, _cell_path, run_leakage

    cfg = LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1], attacks=["idlg"],
                        defenses=["none"], images=1, other_images=1, dlg_iters=2, restarts=1, curve_budgets=[],
                        train_images=100, accuracy_epochs=0)
    run_leakage(cfg, tmp_path, progress=False)
    path = _cell_path(tmp_path, "digits", "untrained", 1, "idlg", "none")
    path.write_text(json.dumps({"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg",
                                "defense": "none", "status": "done", "psnr_mean": 99.0}))
    run_leakage(cfg, tmp_path, resume=True, progress=False)
    cell = json.loads(path.read_text())
    assert cell["psnr_mean"] != 99.0 and cell["rows"] and cell["iterations"] == 2


@pytest.mark.parametrize("results, needle", [
    ({"cells": []}, "no 'config'"), ({"config": {"attacks": "dlg", "defenses": []}, "cells": []}, "no 'config'"),
    ({"config": {"attacks": ["dlg"], "defenses": ["none"]}, "cells": [{"dataset": "mnist"}]}, "a cell lacks"),
])
def test_leakage_renderers_refuse_foreign_results(results, needle):
    from ssgd.experiments.leakage import cells_markdown, worst_case_markdown

    for render in (cells_markdown, worst_case_markdown):
        with pytest.raises(ValueError, match=needle):
            render(results)


def test_leakage_renderers_drop_foreign_side_tables():
    from ssgd.experiments.leakage import worst_case_markdown

    results = {"config": {"attacks": ["dlg"], "defenses": ["none"]}, "cells": [],
               "accuracy": [0.9], "priors": "11.7", "accuracy_dataset": None}
    assert worst_case_markdown(results).splitlines()[:2] == ["| defence |", "|---|"]


def test_leakage_export_refuses_a_folder_that_is_no_grid(tmp_path):
    from ssgd.experiments.leakage import export_results

    with pytest.raises(ValueError, match="not a leakage grid's config"):
        export_results(tmp_path, tmp_path / "out.json")
    (tmp_path / "config.json").write_text(json.dumps({"datasets": ["mnist"], "evil": 1}))
    with pytest.raises(ValueError, match="not a leakage grid's config"):
        export_results(tmp_path, tmp_path / "out.json")
    (tmp_path / "config.json").write_text(json.dumps({"images": 0}))
    with pytest.raises(ValueError, match="not a valid leakage grid config"):
        export_results(tmp_path, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
