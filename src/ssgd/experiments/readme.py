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

__all__ = ["GENERATED_FILES", "HEADLINE_LEAKAGE", "PLAIN_LIMIT", "SECTIONS", "Section", "check_plain", "render_section",
           "update_generated"]


@dataclass(frozen=True)
class Section:
    """One generated README section: its name, the JSON (relative to the repository root), the renderer and
    the loader. ``load`` is wrapped here so that every string of what it returns has passed
    :func:`check_plain`: whoever reads a section's file (:func:`render_section` or any other caller) gets
    data, never Markdown."""

    name: str
    source: str
    render: Callable[[dict[str, Any]], str]
    load: Callable[[Path], dict[str, Any]] = load_results

    def __post_init__(self) -> None:
        if not isinstance(self.load, _PlainLoader):
            object.__setattr__(self, "load", _PlainLoader(self.load))


class _PlainLoader:
    """A section's loader whose result is checked by :func:`check_plain` (the one gate of every section)."""

    def __init__(self, load: Callable[[Path], dict[str, Any]]):
        self.raw = load

    def __call__(self, path: Path) -> dict[str, Any]:
        doc = self.raw(path)
        check_plain(doc, path)
        return doc


# the README's per-attack leakage table: the paper's setting (MNIST, untrained LeNet, one image per update)
HEADLINE_LEAKAGE = ("mnist", "untrained", 1)

_TABLE_RULE = re.compile(r":?-{3,}:?")


def _load_gpu_summary(path: Path) -> dict[str, Any]:
    """``benchmarks/gpu.sh``'s summary.md, read as hostile text: only its Markdown tables are kept, as cells
    (a row's ``|``-separated texts; a cell ``**x**`` as ``x`` marked bold); each cell is then checked as plain
    text like every string of a result file (:func:`check_plain`), so no row can carry a link, an image or HTML."""
    tables: list[list[list[Any]]] = []
    head, cur = "", None
    for line in path.read_text(errors="replace").replace("<=", "≤").splitlines()[:400]:
        if line.startswith("torch ") and "|" in line and not head:
            head = [part.strip() for part in line[:120].split("|")]
        if line.startswith("|") and line.rstrip().endswith("|") and len(line) < 400:
            if cur is None:
                cur = []
                tables.append(cur)
            cells = []
            for cell in line.rstrip()[1:-1].split("|"):
                cell = cell.strip()
                bold = len(cell) > 4 and cell.startswith("**") and cell.endswith("**")
                cells.append([cell[2:-2] if bold else cell, bold])
            cur.append(cells)
        else:
            cur = None
    tables = [t for t in tables if t[0] and t[0][0][0] in ("isolated step", "whole step")]  # the step timings
    if not head or not tables:
        raise ValueError(f"{path}: not a benchmarks/gpu.sh summary (no 'torch ... | GPU' line or no step tables)")
    return {"head": head, "tables": tables}


def _gpu_markdown(doc: dict[str, Any]) -> str:
    """The isolated-step and whole-step tables of a GPU summary (its other tables are not loaded)."""
    def row(cells: list[list[Any]]) -> str:
        if all(_TABLE_RULE.fullmatch(text) and not bold for text, bold in cells):
            return "|" + "|".join(text for text, _ in cells) + "|"
        return "| " + " | ".join(f"**{text}**" if bold else text for text, bold in cells) + " |"

    head = " on ".join(doc["head"])
    return f"`{head}`\n\n" + "\n\n".join("\n".join(row(r) for r in t) for t in doc["tables"]) + "\n"


_THREAD_CONDITIONS = ("idle", "busy neighbour")
_THREAD_MODES = ("default", "all cores")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # benchmarks/threads.py's date (UTC day)
_TORCH_VERSION = re.compile(r"\d{1,3}\.\d{1,3}(\.\d{1,3})?([.+a-z0-9]{0,30})", re.ASCII)  # torch.__version__


def _load_threads(path: Path) -> dict[str, Any]:
    """``benchmarks/threads.py``'s JSON, read as hostile input: the conditions and modes it writes, each run a
    positive finite time, a thread count and a load average; the command line bounded plain text."""
    import json
    import math

    from ..report.validate import ResultFileError, bounded_text

    def bad(what: str) -> ResultFileError:
        return ResultFileError(f"refusing {path}: {what}; rerun python benchmarks/threads.py")

    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not a JSON file ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), dict):
        raise bad("no 'runs' object")
    cores = doc.get("cores")
    if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= 4096:
        raise bad("'cores' is not a core count")
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for cond in _THREAD_CONDITIONS:
        for mode in _THREAD_MODES:
            rows = doc["runs"].get(cond, {}).get(mode) if isinstance(doc["runs"].get(cond), dict) else None
            if not isinstance(rows, list) or not 1 <= len(rows) <= 100:
                raise bad(f"no runs for {cond!r} / {mode!r}")
            clean = []
            for r in rows:
                vals = [r.get(k) if isinstance(r, dict) else None for k in ("seconds", "threads", "load_before")]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                           for v in vals) or not vals[0] > 0 or not isinstance(vals[1], int):
                    raise bad(f"a run of {cond!r} / {mode!r} is not (seconds, threads, load_before) numbers")
                clean.append({"seconds": float(vals[0]), "threads": int(vals[1]), "load_before": float(vals[2])})
            runs.setdefault(cond, {})[mode] = clean
    command = bounded_text(doc.get("command", "?"), 120).replace("`", "'").replace("|", "/")  # inside a code span
    date, torch = doc.get("date"), doc.get("torch")
    if not isinstance(date, str) or not _DATE.fullmatch(date):
        raise bad(f"'date' is {bounded_text(repr(date), 40)}, not a date YYYY-MM-DD")
    if not isinstance(torch, str) or not _TORCH_VERSION.fullmatch(torch):
        raise bad(f"'torch' is {bounded_text(repr(torch), 40)}, not a torch version like 2.13.0+cpu")
    return {"command": command, "cores": cores, "runs": runs, "date": date, "torch": torch}


def _threads_markdown(doc: dict[str, Any]) -> str:
    """The thread-choice table: median wall time per condition, the CLI's default against every core."""
    from statistics import median

    lines = [f"| `{doc['command']}` | default (threads chosen) | `--threads {doc['cores']}` (torch's default) "
             "| all cores / default |", "|---|---|---|---|"]
    loads = []
    for cond in _THREAD_CONDITIONS:
        d, a = doc["runs"][cond]["default"], doc["runs"][cond]["all cores"]
        md, ma = median(r["seconds"] for r in d), median(r["seconds"] for r in a)
        chosen = sorted({r["threads"] for r in d})
        loads += [r["load_before"] for r in d + a]
        lines.append(f"| {cond} | {md:.1f} s ({', '.join(map(str, chosen))}) | {ma:.1f} s | {ma / md:.2f}× |")
    n = len(doc["runs"]["idle"]["default"])
    lines += ["", f"Median wall time of {n} runs per cell, modes alternating, on {doc['cores']} cores "
              f"({doc['date']}, torch {doc['torch']}); the busy neighbour is one pure-Python loop. The cores were "
              f"shared with other processes too: the 1-minute load average before a run was {min(loads):.1f}-"
              f"{max(loads):.1f}, so \"idle\" is only no extra neighbour. Measured by `python benchmarks/threads.py`."]
    return "\n".join(lines)


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
    # the CLI's thread default against torch's, idle and with a busy neighbour (benchmarks/threads.py)
    Section("threads", "docs/results/threads.json", _threads_markdown, _load_threads),
)}



# the documents (relative to the repository root) whose generated sections the script keeps current
GENERATED_FILES = ("README.md", "docs/reproductions.md", "docs/protection.md", "docs/results/leakage_full_table.md")

_BLOCK = re.compile(r"(<!-- ssgd:generated (?P<name>[\w-]+) (?P<src>\S+) -->\n)(?P<body>.*?)(<!-- ssgd:end (?P=name) -->)",
                    re.S)


#: what a string of a result file may hold to be printed into a generated section: word characters (letters, digits,
#: ``_``), spaces and this punctuation -- nothing a Markdown or HTML construct needs (no ``[ ] < > ` * | \\ ! @ #``)
_PLAIN = re.compile(r"[\w .,:;=+\-/()%'&?≤≥±×·]*")
#: ... and none of: an autolink (``scheme://``, ``www.``), a character reference (``&#64;``, ``&commat;``: it would
#: turn into an ``@`` or a ``<`` of the text), an ``_`` that is not inside a word (emphasis)
_LIVE = re.compile(r"(?i)://|www\.|&(?:#|[a-z0-9]+;)|(?:^|[^a-z0-9])_|_(?:$|[^a-z0-9])")
#: longest string of a result file that a section prints (the longest committed one, an attack spec, has ~230)
PLAIN_LIMIT = 400


def check_plain(doc: Any, source: Any, *, limit: int = PLAIN_LIMIT) -> None:
    """Every string of ``doc`` (a loaded result file: its values and its keys, at any depth) is plain text: at
    most ``limit`` characters of :data:`_PLAIN` and nothing of :data:`_LIVE`, so that it cannot be a link, an
    image, HTML, an autolink or a table break wherever a renderer prints it (in a table cell, in a sentence or
    in a code span). Anything else is a one-line :class:`~ssgd.report.ResultFileError` naming the field: the one
    gate every generated section's data passes (:func:`render_section`), whatever its renderer does."""
    from ..report.validate import ResultFileError, bounded_text

    good: set[str] = set()
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    while stack:
        obj, path = stack.pop()
        if isinstance(obj, dict):
            stack.extend((k, path + ("key",)) for k in obj)
            stack.extend((v, path + (k,)) for k, v in obj.items())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, path + (i,)) for i, v in enumerate(obj))
        elif isinstance(obj, str) and obj not in good:
            if len(obj) > limit or not _PLAIN.fullmatch(obj) or _LIVE.search(obj):
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{bounded_text(p, 40)}" for p in path)
                raise ResultFileError(
                    f"refusing {source}: {where.lstrip('.') or 'a string'} is {bounded_text(repr(obj), 60)}, not "
                    f"plain text (at most {limit} letters, digits, spaces and .,:;=+-/()%'&; no link, HTML or "
                    "Markdown); regenerate the file with the command that writes it")
            good.add(obj)


def render_section(section: Section, root: Path) -> str | None:
    """The section's Markdown from its JSON under ``root``, or None when the JSON does not exist yet. Every
    string the loaded file holds must be plain text (:func:`check_plain`, in :attr:`Section.load`): a result
    file is data, never Markdown."""
    path = root / section.source
    if not path.exists():
        return None
    return section.render(section.load(path)).rstrip("\n") + "\n"  # load: checked by check_plain


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
