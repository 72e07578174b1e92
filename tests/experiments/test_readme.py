"""The README's generated tables: regenerated from their JSON, checked against the committed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssgd.experiments import table2
from ssgd.experiments.readme import GENERATED_FILES, SECTIONS, render_section, update_generated

ROOT = Path(__file__).resolve().parents[2]


def _cell(batch, method, acc):
    return {"batch": batch, "method": method, "test_acc_mean": acc, "test_acc_std": None, "test_accs": [acc],
            "lr": 0.1, "steps": 100, "lr_at_grid_edge": False, "m": 64 if method == "ssgd" else 1}


def _repo(tmp_path: Path, cells) -> Path:
    (tmp_path / "docs/results").mkdir(parents=True)
    (tmp_path / "docs/results/table2.json").write_text(json.dumps({"epochs": 20, "seeds": 1, "cells": cells}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- ssgd:generated table2 docs/results/table2.json -->\nstale\n"
                      "<!-- ssgd:end table2 -->\noutro\n"
                      "<!-- ssgd:generated table6 docs/results/table6.json -->\nold 6\n<!-- ssgd:end table6 -->\n")
    return readme


@pytest.mark.parametrize("rel", GENERATED_FILES)
def test_committed_documents_match_their_json(rel):
    status = update_generated(ROOT / rel, ROOT, check=True)
    assert status, f"{rel} lost its generated sections"
    if rel == "README.md":
        # the README keeps the headline tables; the deep ones (worst case per cell, fixed steps) live in docs/
        assert {"table2", "table6", "leakage-headline", "demo"} <= set(status)
    stale = [name for name, s in status.items() if s == "updated"]
    assert not stale, f"{rel}: sections {stale} are out of date: run python scripts/update_tables.py"


def test_update_rewrites_only_between_markers(tmp_path):
    cells = [_cell(8192, "sgd", 0.80), _cell(8192, "ssgd", 0.85)]
    readme = _repo(tmp_path, cells)
    before = readme.read_text()
    assert update_generated(readme, tmp_path, check=True)["table2"] == "updated"
    assert readme.read_text() == before, "check mode must not write"
    status = update_generated(readme, tmp_path)
    assert status == {"table2": "updated", "table6": "missing docs/results/table6.json"}
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and "outro\n" in text
    assert "old 6" in text, "a section without its JSON is left alone"
    assert table2.results_markdown({"epochs": 20, "cells": cells}) in text
    assert "0.8500" in text
    assert update_generated(readme, tmp_path) == {"table2": "current", "table6": "missing docs/results/table6.json"}


def test_unknown_section_and_wrong_source_are_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ssgd:generated nope docs/x.json -->\n<!-- ssgd:end nope -->\n")
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        update_generated(readme, tmp_path)
    readme.write_text("<!-- ssgd:generated table2 docs/other.json -->\n<!-- ssgd:end table2 -->\n")
    with pytest.raises(ValueError, match="generated from docs/results/table2.json"):
        update_generated(readme, tmp_path)


def test_every_section_renders_from_a_minimal_json(tmp_path):
    for section in SECTIONS.values():
        assert render_section(section, tmp_path) is None
    six = {"epochs": 20, "noise_eps": 2.0, "cells": [
        {"m": 4, "n": 4, "batch": 16, "method": "ssgd", "test_acc_mean": 0.7, "test_accs": [0.7], "steps": 10,
         "lr_at_grid_edge": True}]}
    (tmp_path / "docs/results").mkdir(parents=True)
    (tmp_path / SECTIONS["table6"].source).write_text(json.dumps(six))
    md = render_section(SECTIONS["table6"], tmp_path)
    assert "| 4 | 4 | 16 | 10 |" in md and "0.7000†" in md
    summary = render_section(SECTIONS["table6-summary"], tmp_path)
    assert summary.startswith("Generated summary: ") and "1/2 = 0.50" in summary
    two = {"epochs": 20, "train_examples": 54000, "model": "mlp",
           "cells": [_cell(1024, "sgd", 0.80), _cell(1024, "ssgd", 0.85), _cell(8192, "sgd", 0.80),
                     _cell(8192, "ssgd", 0.70)]}
    (tmp_path / SECTIONS["table2"].source).write_text(json.dumps(two))
    summary = render_section(SECTIONS["table2-summary"], tmp_path)
    assert "beat at batch 1024; trailed at batch 8192" in summary
    assert "batch 8192 got 140 steps against 1060 at batch 1024" in summary
