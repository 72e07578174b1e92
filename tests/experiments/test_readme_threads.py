"""The README's thread table is generated from benchmarks/threads.py's JSON, read as hostile input."""

from __future__ import annotations

import json

import pytest

from ssgd.experiments.readme import SECTIONS, render_section
from ssgd.report import ResultFileError


def _doc(**over):
    run = lambda s, t: {"seconds": s, "threads": t, "load_before": 1.5}  # noqa: E731
    doc = {"command": "ssgd reproduce table2 --quick", "cores": 2, "date": "2026-12-04", "torch": "2.13.0",
           "runs": {"idle": {"default": [run(20, 2), run(22, 1)], "all cores": [run(21, 2), run(30, 2)]},
                    "busy neighbour": {"default": [run(30, 1), run(34, 1)], "all cores": [run(60, 2), run(90, 2)]}}}
    doc.update(over)
    return doc


def _render(tmp_path, doc):
    (tmp_path / "docs/results").mkdir(parents=True, exist_ok=True)
    (tmp_path / "docs/results/threads.json").write_text(json.dumps(doc))
    return render_section(SECTIONS["threads"], tmp_path)


def test_threads_table_is_the_medians_and_their_ratio(tmp_path):
    md = _render(tmp_path, _doc())
    assert "| idle | 21.0 s (1, 2) | 25.5 s | 1.21× |" in md
    assert "| busy neighbour | 32.0 s (1) | 75.0 s | 2.34× |" in md
    assert "load average before a run was 1.5-1.5" in md


@pytest.mark.parametrize("bad", [
    {"cores": "2"},
    {"runs": {"idle": {}}},
    {"runs": {"idle": {"default": [{"seconds": "fast", "threads": 1, "load_before": 0}], "all cores": []},
              "busy neighbour": {}}},
])
def test_a_damaged_threads_file_is_refused_in_one_line(tmp_path, bad):
    with pytest.raises(ResultFileError) as e:
        _render(tmp_path, _doc(**bad))
    assert "\n" not in str(e.value) and "threads.json" in str(e.value)


def test_foreign_text_is_bounded(tmp_path):
    md = _render(tmp_path, _doc(command="x" * 500 + "\n# injected"))
    assert "\n# injected" not in md and len(md.splitlines()[0]) < 300
