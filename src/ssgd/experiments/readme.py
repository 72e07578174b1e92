"""Regenerate the result tables in the README and the docs from the committed JSON under ``docs/results/``.

No document in :data:`GENERATED_FILES` holds a hand-typed number for Table 2, its fixed-steps
view, Table 6 or the leakage grid: each table sits between a pair of markers naming the JSON it
comes from::

    <!-- ssgd:generated table2 docs/results/table2.json -->
    ... (replaced by :func:`update_generated`) ...
    <!-- ssgd:end table2 -->

``python scripts/update_tables.py`` rewrites the sections of every file in :data:`GENERATED_FILES`;
``--check`` exits non-zero when one is out of date (a test runs the check, so a document that drifts
from its JSON fails CI).
A section whose JSON is missing is left as it is and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..report.io import atomic_write_text
from . import demo, dp_benchmark, leakage, table2, table6
from .sweep import load_results

__all__ = ["GENERATED_FILES", "HEADLINE_LEAKAGE", "SECTIONS", "Section", "render_section", "update_generated"]


@dataclass(frozen=True)
class Section:
    """One generated README section: its name, the JSON (relative to the repository root), the renderer."""

    name: str
    source: str
    render: Callable[[dict[str, Any]], str]
    load: Callable[[Path], dict[str, Any]] = load_results


# the README's per-attack leakage table: the paper's setting (MNIST, untrained LeNet, one image per update)
HEADLINE_LEAKAGE = ("mnist", "untrained", 1)

def _load_gpu_summary(path: Path) -> dict[str, Any]:
    """``benchmarks/gpu.sh``'s summary.md, read as hostile text: only its Markdown table rows are kept, each
    bounded and free of HTML."""
    rows, head = [], ""
    for line in path.read_text(errors="replace").replace("<=", "≤").splitlines()[:400]:
        if line.startswith("torch ") and "|" in line:
            head = line[:120]
        if line.startswith("|") and len(line) < 400 and "<" not in line and ">" not in line:
            rows.append(line)
        elif rows and rows[-1] != "":
            rows.append("")
    if not head or not rows:
        raise ValueError(f"{path}: not a benchmarks/gpu.sh summary (no 'torch ... | GPU' line or no tables)")
    return {"head": head, "rows": rows}


def _gpu_markdown(doc: dict[str, Any]) -> str:
    """The isolated-step and whole-step tables of a GPU summary (the step-status table is left out)."""
    blocks, cur = [], []
    for line in doc["rows"] + [""]:
        if line:
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    keep = [b for b in blocks if b[0].startswith(("| isolated step", "| whole step"))]
    head = doc["head"].replace("|", "on")
    return f"`{head}`\n\n" + "\n\n".join("\n".join(b) for b in keep) + "\n"


SECTIONS: dict[str, Section] = {s.name: s for s in (
    Section("table2", "docs/results/table2.json", table2.results_markdown),
    Section("table2-summary", "docs/results/table2.json", table2.summary_markdown),
    Section("table2-fixed-steps", "docs/results/table2_fixed_steps.json", table2.results_markdown),
    Section("table2-fixed-steps-summary", "docs/results/table2_fixed_steps.json", table2.summary_markdown),
    Section("table6", "docs/results/table6.json", table6.results_markdown),
    Section("table6-summary", "docs/results/table6.json", table6.summary_markdown),
    # the leakage grid (exported from its run folder by ``scripts/update_tables.py --leakage-run DIR``)
    Section("leakage-headline", "docs/results/leakage.json",
            lambda r: leakage.cells_markdown(r, only=HEADLINE_LEAKAGE, compact=True)),
    Section("leakage-worst", "docs/results/leakage.json", leakage.worst_case_markdown),
    Section("leakage-worst-mnist", "docs/results/leakage.json", lambda r: leakage.worst_case_markdown(r, "mnist")),
    Section("leakage-worst-fashion-mnist", "docs/results/leakage.json",
            lambda r: leakage.worst_case_markdown(r, "fashion-mnist")),
    Section("leakage-cells", "docs/results/leakage.json", leakage.cells_markdown),
    # the demo's numbers (exported from a `ssgd demo` run folder by ``scripts/update_tables.py --demo-run DIR``)
    Section("demo", "docs/results/demo.json", demo.summary_markdown, demo.load_summary),
    # the GPU run of benchmarks/gpu.sh (its summary.md, copied under docs/results/gpu/)
    Section("gpu-step", "docs/results/gpu/summary-2026-12-04.md", _gpu_markdown, _load_gpu_summary),
    # the DP benchmark (`ssgd reproduce privacy --benchmark [--features scatternet] --publish docs/results`)
    Section("dp-benchmark", "docs/results/dp_benchmark.json", dp_benchmark.results_markdown,
            dp_benchmark.load_published),
    Section("dp-throughput-cpu", "docs/results/dp_benchmark_cpu_quick.json", dp_benchmark.throughput_markdown,
            dp_benchmark.load_published),
    Section("dp-scatternet", "docs/results/dp_scatternet.json", dp_benchmark.results_markdown,
            dp_benchmark.load_published),
)}



# the documents (relative to the repository root) whose generated sections the script keeps current
GENERATED_FILES = ("README.md", "docs/reproductions.md", "docs/protection.md", "docs/results/leakage_full_table.md")

_BLOCK = re.compile(r"(<!-- ssgd:generated (?P<name>[\w-]+) (?P<src>\S+) -->\n)(?P<body>.*?)(<!-- ssgd:end (?P=name) -->)",
                    re.S)


def render_section(section: Section, root: Path) -> str | None:
    """The section's Markdown from its JSON under ``root``, or None when the JSON does not exist yet."""
    path = root / section.source
    if not path.exists():
        return None
    return section.render(section.load(path)).rstrip("\n") + "\n"


def update_generated(readme: str | Path, root: str | Path | None = None, *, check: bool = False) -> dict[str, str]:
    """Rewrite every generated section of the Markdown file ``readme`` from its JSON (relative to ``root``,
    the repository root; default the file's folder). Returns ``{section: status}`` with status ``"updated"``, ``"current"`` or
    ``"missing <path>"``. With ``check=True`` nothing is written.

    Raises ``ValueError`` for a marker naming an unknown section or a JSON other than the section's own.
    """
    readme = Path(readme)
    root = Path(root) if root is not None else readme.parent
    text = readme.read_text()
    status: dict[str, str] = {}

    def replace(mt: re.Match) -> str:
        name, src = mt["name"], mt["src"]
        section = SECTIONS.get(name)
        if section is None:
            raise ValueError(f"{readme}: unknown generated section {name!r}; known: {sorted(SECTIONS)}")
        if src != section.source:
            raise ValueError(f"{readme}: section {name!r} names {src}; it is generated from {section.source}")
        body = render_section(section, root)
        if body is None:
            status[name] = f"missing {section.source}"
            return mt.group(0)
        status[name] = "current" if body == mt["body"] else "updated"
        return mt.group(1) + body + mt.group(5)

    new = _BLOCK.sub(replace, text)
    if new != text and not check:
        atomic_write_text(readme, new)
    return status
