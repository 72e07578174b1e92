"""Leakage cells: their text fields are the grid's own values, and report.md writes them escaped
(red team 19, still-open row 3: a forged cell's attack_spec / init / model reached report.md as
Markdown and HTML)."""
from __future__ import annotations

import json

import pytest

EVIL = "<img src=x onerror=alert(1)>](http://evil.example) **pwned** `x`"


def _cfg():
    from ssgd.experiments.leakage import LeakageConfig

    return LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1], attacks=["idlg"],
                         defenses=["none"], images=1, other_images=1, dlg_iters=2, restarts=1,
                         curve_budgets=[], train_images=100, accuracy_epochs=0)


def _cell(**kw):
    from ssgd.defenses import get_defense
    from ssgd.experiments.leakage import adapt_attack

    cfg = _cfg()
    spec = adapt_attack("idlg", get_defense("none"), 1, **cfg._overrides("idlg", 1.0)).spec
    cell = {"dataset": "digits", "state": "untrained", "batch": 1, "attack": "idlg", "defense": "none",
            "status": "done", "defense_spec": "none", "model": "lenet", "attack_spec": spec,
            "iterations": 2, "restarts": 1, "init": "mean", "psnr_mean": 12.0, "protects": False,
            "rows": [{"target": 0, "image": 0, "label": 3, "psnr": 12.0, "ssim": 0.1, "mse": 0.06,
                      "label_acc": 1.0, "seconds": 0.5}], "first_image": [0.5] * 64}
    cell.update(kw)
    return cell


def _write(run_dir, cell):
    from ssgd.experiments.leakage import _cell_path

    path = _cell_path(run_dir, "digits", "untrained", 1, "idlg", "none")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell))
    return path


@pytest.mark.parametrize("field", ["attack_spec", "init", "model", "defense_spec"])
def test_a_cell_whose_text_is_not_the_grids_is_refused(tmp_path, field):
    from ssgd.experiments.leakage import _load_cells, export_results

    cfg = _cfg()
    _write(tmp_path, _cell())
    assert len(_load_cells(tmp_path, cfg)) == 1  # the genuine cell is read
    _write(tmp_path, _cell(**{field: EVIL}))
    assert _load_cells(tmp_path, cfg) == []  # forged text: not this grid's cell (recomputed by --resume)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(ValueError, match=f"{field}=") as e:
        export_results(tmp_path, tmp_path / "leakage.json")
    assert "\n" not in str(e.value)  # one line


def test_report_md_writes_cell_text_as_code_or_escaped():
    """Whatever reaches the report writer (here: straight from cells, bypassing the loader) renders as text."""
    from markdown_it import MarkdownIt

    from ssgd.experiments.leakage import _cell_table, _markdown

    cfg = _cfg()
    cells = [_cell(attack_spec=EVIL, init=EVIL)]
    text = _markdown(_cell_table(cells, cfg.confirm_below), cells, cfg, {}, [], 1.0, False, {EVIL: 0.5})
    html = MarkdownIt("commonmark").render(text)
    assert "<img" not in html and "<strong>pwned" not in html and 'href="http://evil' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as the literal text


@pytest.mark.parametrize("spec, ok", [("idlg:iters=2,restarts=1", True),  # written before later parameters existed
                                      ("idlg:iters=3", False), ("dlg:iters=2", False), ("idlg:iters=2,x=1", False),
                                      ("idlg:init=<b>x</b>", False)])
def test_an_older_spec_of_the_same_attack_is_kept_another_one_is_refused(tmp_path, spec, ok):
    from ssgd.experiments.leakage import _load_cells

    _write(tmp_path, _cell(attack_spec=spec))
    assert len(_load_cells(tmp_path, _cfg())) == (1 if ok else 0)
