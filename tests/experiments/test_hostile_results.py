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


def test_leakage_grid_recomputes_damaged_cells_instead_of_reading_them(tmp_path):
    from ssgd.experiments.leakage import _load_cells

    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "good.json").write_text(json.dumps({"status": "done", "attack": "idlg"}))
    (cells / "truncated.json").write_text('{"status": "do')
    (cells / "foreign.json").write_text("[1, 2, 3]")
    (cells / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert _load_cells(tmp_path) == [{"status": "done", "attack": "idlg"}]
