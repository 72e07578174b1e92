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


# the spec the grid of _grid_cfg() runs (a cell's text fields must be its grid's own values)
IDLG_SPEC = "idlg:iters=2,lr=0.3,history=100,labels=recover,normalize=True,restarts=1,init=auto,dtype=auto"


def _done_cell(**kw):
    cell = {"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg", "defense": "none",
            "status": "done", "defense_spec": "none", "model": "lenet", "attack_spec": IDLG_SPEC,
            "iterations": 2, "restarts": 1, "init": "mean", "psnr_mean": 12.0, "protects": False,
            "rows": [{"target": 0, "image": 0, "label": 3, "psnr": 12.0, "ssim": 0.1, "mse": 0.06,
                      "label_acc": 1.0, "seconds": 0.5}], "first_image": [0.5] * 64}
    cell.update(kw)
    return cell


def _grid_cfg():
    from ssgd.experiments.leakage import LeakageConfig

    return LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1], attacks=["idlg"],
                         defenses=["none", "ssgd-shards:m=4"], images=1, other_images=1, dlg_iters=2, restarts=1,
                         curve_budgets=[], train_images=100, accuracy_epochs=0)


def _write_cell(run_dir, cell, name=None):
    from ssgd.experiments.leakage import _cell_path

    path = _cell_path(run_dir, cell["dataset"], cell["state"], cell["batch"], cell["attack"], cell["defense"])
    path = path.with_name(name) if name else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell) if isinstance(cell, dict) else cell)
    return path


NA = {"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg", "defense": "ssgd-shards:m=4",
      "status": "n/a", "reason": "needs a multiple of m"}


def test_leakage_grid_recomputes_damaged_cells_instead_of_reading_them(tmp_path):
    from ssgd.experiments.leakage import _load_cells

    cfg, good = _grid_cfg(), _done_cell()
    _write_cell(tmp_path, good)
    _write_cell(tmp_path, NA)
    assert _load_cells(tmp_path, cfg) == [good, NA]
    bad = ['{"status": "do', "[1, 2, 3]", {"status": "done", "attack": "idlg"}, _done_cell(rows=[{"psnr": "high"}]),
           _done_cell(rows=[]), _done_cell(batch="1"), _done_cell(confirm={"psnr_mean": None}),
           _done_cell(first_image="abc")]
    path = _write_cell(tmp_path, good)
    for cell in bad:  # damaged, foreign, or crafted with the wrong types: the cell is not read
        path.write_text(cell if isinstance(cell, str) else json.dumps(cell))
        assert _load_cells(tmp_path, cfg) == [NA], cell
    path.write_bytes(b"\xff\xfe\x00")
    assert _load_cells(tmp_path, cfg) == [NA]


@pytest.mark.parametrize("change, needle", [
    (dict(rows=[dict(_done_cell()["rows"][0], mse=1e308)]), "mse=1e\\+308"),
    (dict(rows=[dict(_done_cell()["rows"][0], psnr=float("nan"))], psnr_mean=float("nan")), "psnr=nan"),
    (dict(psnr_mean=3.0), "not the mean of its rows"),
    (dict(rows=[dict(_done_cell()["rows"][0], image=5)]), "outside the cell"),
    (dict(rows=_done_cell()["rows"] * 2), "2 rows where the grid has 1"),
    (dict(defense="ssgd-layer"), "another cell than its file name"),
    (dict(protects=1), "mistyped protects"),
])
def test_forged_leakage_cells_are_refused_in_one_line(tmp_path, change, needle):
    """Issue 19 finding 4: a cell file is the cell its name says, with finite numbers in range, or it is refused
    (export: one line naming the file; the grid: recomputed)."""
    from ssgd.experiments.leakage import _load_cells, export_results

    cfg = _grid_cfg()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    _write_cell(tmp_path, NA)
    path = _write_cell(tmp_path, _done_cell())
    path.write_text(json.dumps(_done_cell(**change)))
    assert _load_cells(tmp_path, cfg) == [NA]
    with pytest.raises(ValueError, match=f"{path.name}: .*{needle}") as e:
        export_results(tmp_path, tmp_path / "out.json")
    assert "\n" not in str(e.value) and not (tmp_path / "out.json").exists()


def test_a_grid_whose_cells_did_not_run_is_not_complete(tmp_path):
    """Forged files cannot fill a grid: a file name that is no cell id of the config (an extra row, cifar10 at
    batch 999), a copy under another name, or an n/a marker for a cell that runs are refused."""
    from ssgd.experiments.leakage import _load_cells, export_results, results_json

    cfg = _grid_cfg()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    _write_cell(tmp_path, NA)
    assert results_json(_load_cells(tmp_path, cfg), cfg)["partial"] is True  # the idlg x none cell never ran
    forged = [(_done_cell(dataset="cifar10", batch=999, protects=True, psnr_mean=float("nan")), None),
              (_done_cell(), "copy.json"),
              (dict(NA, defense="none"), None)]
    for cell, name in forged:
        path = _write_cell(tmp_path, cell, name=name)
        res = results_json(_load_cells(tmp_path, cfg), cfg)
        assert res["partial"] is True and res["cells_done"] == 1 and res["cells"] == [], cell
        with pytest.raises(ValueError, match="not a cell of this grid|marked n/a, but the grid runs"):
            export_results(tmp_path, tmp_path / "out.json")
        path.unlink()


def test_update_tables_refuses_a_forged_grid_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = _grid_cfg()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    _write_cell(tmp_path, _done_cell(rows=[dict(_done_cell()["rows"][0], mse=1e308)]))
    before = (root / "docs/results/leakage.json").read_bytes()
    res = subprocess.run([sys.executable, str(root / "scripts/update_tables.py"), "--leakage-run", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                            "PYTHONPATH": str(root / "src")})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "mse=1e+308" in res.stderr
    assert (root / "docs/results/leakage.json").read_bytes() == before


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


_RCFG = {"datasets": ["mnist"], "states": ["untrained"], "batch_sizes": [1], "attacks": ["dlg"], "defenses": ["none"]}
_RROW = {"dataset": "mnist", "state": "untrained", "model": "lenet", "batch": 1, "attack": "dlg", "defense": "none",
         "psnr_mean": 12.0, "psnr_std": 0.5, "ssim_mean": 0.1, "label_acc_mean": 1.0, "images": 8,
         "attack_spec": "dlg", "iterations": 300, "restarts": 2, "init": "mean", "psnr_2x_mean": None,
         "iterations_2x": 0, "protects": False}


@pytest.mark.parametrize("results, needle", [
    ({"cells": []}, "no 'config'"), ({"config": {"attacks": "dlg", "defenses": []}, "cells": []}, "no 'config'"),
    ({"config": _RCFG, "cells": [{"dataset": "mnist"}]}, "a cell lacks"),
    ({"config": _RCFG, "cells": [dict(_RROW, dataset="cifar10", batch=999, protects=True)]}, "outside the config's"),
    ({"config": _RCFG, "cells": [_RROW, dict(_RROW, psnr_mean=3.0)]}, "two rows for the cell"),
    ({"config": _RCFG, "cells": [dict(_RROW, psnr_mean=float("nan"))]}, "psnr_mean out of range"),
    ({"config": _RCFG, "cells": [dict(_RROW, psnr_2x_mean=1e308)]}, "psnr_2x_mean out of range"),
    ({"config": _RCFG, "cells": [dict(_RROW, protects="yes")]}, "protects"),
])
def test_leakage_renderers_refuse_foreign_results(results, needle):
    from ssgd.experiments.leakage import cells_markdown, worst_case_markdown

    for render in (cells_markdown, worst_case_markdown):
        with pytest.raises(ValueError, match=needle):
            render(results)


def test_leakage_renderers_drop_foreign_side_tables():
    from ssgd.experiments.leakage import worst_case_markdown

    results = {"config": _RCFG, "cells": [], "accuracy": [0.9], "priors": "11.7", "accuracy_dataset": None}
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
