"""Red team of 2026-12-04 (second pass), README generator: text from a result file reaches the README raw.

The rule (threat model, "Files a run reads back"; issue 19 "What to build"): text from any file goes into
Markdown escaped and bounded. These sections print a string of their JSON (or a GPU summary's table rows)
as live Markdown/HTML: a forged ``docs/results/*.json`` puts a link, an image (a remote tracking pixel) or
HTML into the README that ``scripts/update_tables.py`` regenerates.

RED TEAM: each test FAILS on the code of commit 3fe6d59 (the lead fixes the renderers and keeps the tests).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssgd.experiments.readme import SECTIONS, render_section

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = "[l](http://e.x)<b>x"


def _live(md: str) -> list[str]:
    """Lines where the payload is live Markdown/HTML: raw, and outside a code span."""
    out = []
    for line in md.splitlines():
        parts = line.split("`")
        outside = "".join(parts[0::2])  # text outside code spans (an even number of backticks per line)
        if "<b>" in outside or "](http" in outside:
            out.append(line)
    return out


def _render(tmp_path: Path, name: str, mutate) -> str:
    sec = SECTIONS[name]
    doc = json.loads((ROOT / sec.source).read_text())
    mutate(doc)
    target = tmp_path / sec.source
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc))
    try:
        return render_section(sec, tmp_path)
    except ValueError:
        return ""  # refused: fine


def _set(path):
    def mutate(doc):
        o = doc
        for p in path[:-1]:
            o = o[p]
        o[path[-1]] = PAYLOAD
    return mutate


@pytest.mark.parametrize("name, path", [
    ("threads", ["date"]),
    ("threads", ["torch"]),
    ("demo", ["settings", "torch"]),
    ("demo", ["runs", 0, "optimizer"]),
    ("demo", ["attacks", 0, "run"]),
    ("demo", ["attacks", 0, "model"]),
    ("leakage-worst", ["accuracy_dataset"]),
])
def test_a_string_of_a_result_json_never_reaches_the_readme_as_live_markdown(tmp_path, name, path):
    if not (ROOT / SECTIONS[name].source).exists():
        pytest.skip(f"{SECTIONS[name].source} not committed")
    md = _render(tmp_path, name, _set(path))
    assert not _live(md), _live(md)


def test_a_gpu_summary_row_cannot_put_a_link_or_a_remote_image_into_the_readme(tmp_path):
    sec = next(s for s in SECTIONS.values() if s.source.endswith(".md"))
    src = ROOT / sec.source
    if not src.exists():
        pytest.skip(f"{sec.source} not committed")
    lines = src.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("| isolated step"))
    lines.insert(k + 2, "| [click me](https://evil.example/p) ![t](https://evil.example/pixel.png) | 1 |")
    target = tmp_path / sec.source
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines))
    try:
        md = render_section(sec, tmp_path)
    except ValueError:
        return
    assert "](https://evil.example" not in md
