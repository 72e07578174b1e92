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


_PAYLOADS = ("[l](http://e.x)<b>x", "![i](http://e.x/p.png)", "a@b.co x`y|z", "_www.e.x &#64;x")


def _string_paths(doc, path=()):
    """Every (path, value) of a string leaf of a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _string_paths(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _string_paths(v, path + (i,))
    elif isinstance(doc, str):
        yield path, doc


@pytest.mark.parametrize("source", sorted({s.source for s in SECTIONS.values() if s.source.endswith(".json")}))
def test_no_string_a_section_prints_from_its_json_reaches_the_readme_unchecked(tmp_path, source):
    """Every distinct string of the committed JSON that one of its sections prints, replaced by Markdown, HTML or
    an autolink: each section is refused in one line, or the payload is not in its Markdown (every section)."""
    import copy

    sections = [s for s in SECTIONS.values() if s.source == source]
    src = ROOT / source
    if not src.exists():
        pytest.skip(f"{source} not committed")
    original = json.loads(src.read_text())
    md = "".join(render_section(s, ROOT) for s in sections)
    seen: set = set()
    printed = [p for p, v in _string_paths(original) if len(v) > 1 and v in md and not (v in seen or seen.add(v))]
    target = tmp_path / source
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in printed[:8]:  # (a few s for the 500 kB leakage.json)
        for payload in _PAYLOADS:
            doc = copy.deepcopy(original)
            o = doc
            for p in path[:-1]:
                o = o[p]
            o[path[-1]] = payload
            target.write_text(json.dumps(doc))
            for sec in sections:
                try:
                    out = render_section(sec, tmp_path)
                except ValueError as e:  # refused (the plain-text gate or the section's own loader): one line
                    assert "\n" not in str(e)
                    continue
                assert payload not in out, (sec.name, path, payload)


def test_check_plain_refuses_markdown_html_autolinks_and_entities_anywhere_and_keeps_plain_text():
    from ssgd.experiments.readme import check_plain
    from ssgd.report import ResultFileError

    ok = {"a_b": ["Tramèr & Boneh, ICLR 2021 (DP-SGD)", "rel_tol=1e-06,dup_tol=0.001", "≤ 1.5", "2.13.0+cpu"]}
    check_plain(ok, "f.json")
    for bad in ("[x](y)", "<i>", "a@b.co", "www.x.y", "WWW.x.y", "_www.x.y", "http://x", "HTTPS://x", "&#64;",
                "&commat;", "_x_", "a__", "`x`", "a|b", "*x*", "\\x", "!x", "# x", "x\ny", "x\u202ey", "~x~",
                "x" * 401):
        for doc in ({"k": bad}, {bad: 1}, [[bad]]):
            with pytest.raises(ResultFileError) as e:
                check_plain(doc, "f.json")
            assert "\n" not in str(e.value) and "f.json" in str(e.value), bad


def test_gpu_summary_rows_are_rebuilt_from_checked_cells(tmp_path):
    sec = next(s for s in SECTIONS.values() if s.source.endswith(".md"))
    summary = ("torch 2.0 | GPU X\n\n| step | status |\n|---|---|\n| tests | <b>failed</b> |\n\n"
               "| isolated step | met |\n|---|---|\n| 1M | **no** |\n\n| whole step | met |\n|---:|---|\n| mlp | yes |\n")
    target = tmp_path / sec.source
    target.parent.mkdir(parents=True)
    target.write_text(summary)  # the status table (left out of the README) may hold anything
    assert render_section(sec, tmp_path) == ("`torch 2.0 on GPU X`\n\n| isolated step | met |\n|---|---|\n"
                                             "| 1M | **no** |\n\n| whole step | met |\n|---:|---|\n| mlp | yes |\n")
    for cell in ("**[x](http://e.x)**", "<img src=x>", "a@b.co", "`x`"):
        target.write_text(summary.replace("| 1M | **no** |", f"| 1M | {cell} |"))
        with pytest.raises(ValueError):
            render_section(sec, tmp_path)


def test_a_sections_loader_itself_refuses_markdown(tmp_path):
    """Not only render_section: whoever calls a section's ``load`` (a script, a probe) gets checked data."""
    from ssgd.experiments.readme import Section
    from ssgd.report import ResultFileError

    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"cells": [{"method": "[l](http://e.x)"}]}))
    for sec in (SECTIONS["table2"], Section("t", "x.json", str)):
        with pytest.raises(ResultFileError, match="cells\\[0\\].method"):
            sec.load(bad)
