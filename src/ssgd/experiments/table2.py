r"""Reproduce the paper's Table 2: Fashion-MNIST test accuracy vs batch size (16 ... 8192).

Methods: SGD, SGD+momentum (0.9), Adam, SSGD(m) (the sum of m shards' unit vectors,
m = 4 up to batch 512, 16 at 1024, 32 at 2048-4096, 64 at 8192, as in the paper), and
two close relatives that separate SSGD's ingredients: normalized SGD (one global unit
step, cosine-decayed lr: the unit step without the m-shard sum) and LARS (layer-wise
trust ratio, momentum 0.9: the usual large-batch optimizer).

**Fair tuning** (:mod:`ssgd.experiments.sweep`): for every (batch size, method) the
learning rate is chosen from the same number of grid points on a validation split carved
from the training set, widened where the winner sits at the grid's edge; the test set is
only used to report the validation winner. At batch >= 1024, SGD, SSGD(m) and NSGD are
retrained with ``seeds`` training seeds and reported as mean ± std. For SSGD(m) the grid
value is the step length when all m unit vectors agree, i.e. the optimizer's lr is value/m.

**Budget.** Either the same number of epochs for every cell (``epochs``: a large batch
gets few steps) or, for the fixed-steps view of Shallue et al. (2019), about the same
number of steps (``steps``: epochs = round(steps / steps per epoch), at least 1). The
number of steps is written next to every number.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..data import ImageDataset
from ..report.io import atomic_write_text, new_figure, save_figure, write_json
from .contract import ExperimentResult
from .sweep import (LR_CENTER, MATCH_TOL, PAPER_TOL, Cell, GridStore, SweepConfig, fmt_acc, fmt_mean_std, lr_grid,
                    lr_ladder, load_results, run_sweep, select_best, welch)

__all__ = ["PAPER_BATCHES", "PAPER_TABLE2", "METHODS", "LABELS", "LR_CENTER", "Table2Config", "paper_m",
           "lr_grid", "GridStore", "select_best", "summarize_table2", "fmt_acc", "verdicts", "results_markdown",
           "summary_markdown",
           "cells_of", "load_results"]

PAPER_BATCHES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Table 2 of Duan et al. (arXiv 2012.02076), test accuracy on Fashion-MNIST (7 of the 10 batch sizes).
PAPER_TABLE2: dict[int, dict[str, float]] = {
    16: {"sgd": .8253, "sgdm": .7795, "adam": .7175, "ssgd": .8035},
    64: {"sgd": .8468, "sgdm": .8163, "adam": .7674, "ssgd": .8344},
    128: {"sgd": .8629, "sgdm": .8331, "adam": .7835, "ssgd": .8437},
    512: {"sgd": .8682, "sgdm": .8569, "adam": .8566, "ssgd": .8590},
    1024: {"sgd": .8569, "sgdm": .8612, "adam": .8547, "ssgd": .8668},
    4096: {"sgd": .8629, "sgdm": .8518, "adam": .8321, "ssgd": .8704},
    8192: {"sgd": .8325, "sgdm": .8278, "adam": .8144, "ssgd": .8648},
}
METHODS = ("sgd", "sgdm", "adam", "ssgd", "nsgd", "lars")
LABELS = {"sgd": "SGD", "sgdm": "SGDm", "adam": "Adam", "ssgd": "SSGD(m)", "nsgd": "NSGD", "lars": "LARS"}
# the order cells run in within a batch size: the paper's comparison first
_PRIORITY = ("sgd", "ssgd", "nsgd", "sgdm", "adam", "lars")


def paper_m(batch_size: int) -> int:
    """The paper's number of shards m for SSGD(m) at a batch size."""
    if batch_size <= 512:
        return min(4, batch_size)
    if batch_size <= 1024:
        return 16
    if batch_size <= 4096:
        return 32
    return 64


@dataclass
class Table2Config(SweepConfig):
    """Table 2's sweep: ``batch_sizes`` x ``methods``, each cell tuned as :class:`SweepConfig` says."""

    seeds: int = 3
    batch_sizes: tuple[int, ...] = tuple(PAPER_TABLE2)  # the 7 batch sizes the paper reports
    methods: tuple[str, ...] = METHODS
    steps: int | None = None  # fixed-steps view: about this many steps per cell (overrides epochs)
    shards: dict[int, int] = field(default_factory=dict)  # overrides of paper_m per batch size

    def validate(self) -> "Table2Config":
        super().validate()
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"Unknown method(s) {bad or list(self.methods)}; choose from {list(METHODS)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"Invalid batch sizes {list(self.batch_sizes)}; need positive integers, e.g. 16,128,1024")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"Invalid steps={self.steps}; must be >= 1 (or None for the epoch budget)")
        for b in self.batch_sizes:
            if "ssgd" in self.methods and self.m_for(b) > b:
                raise ValueError(f"SSGD(m={self.m_for(b)}) needs batch size >= m, got {b}; lower shards[{b}]")
        return self

    @classmethod
    def quick(cls) -> "Table2Config":
        """About a minute on 2 cores: batch 16, 128, 1024 on 4,000 examples, 1 epoch, 2 seeds at 1024."""
        return cls(batch_sizes=(16, 128, 1024), epochs=1, lr_points=3, widen=1, seeds=2, train_size=4000,
                   test_size=2000)

    def m_for(self, b: int) -> int:
        return self.shards.get(b, paper_m(b))

    def is_quick(self) -> bool:
        """A reduced budget (``--quick``, a training subset, fewer epochs than the full run): its numbers are
        not comparable with the paper's, and its report says so instead of judging the paper's claims."""
        return self.train_size is not None or (self.steps is None and self.epochs < Table2Config().epochs)

    def epochs_for(self, b: int, n_train: int) -> int:
        if self.steps is None:
            return self.epochs
        return max(1, round(self.steps / -(-n_train // b)))

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            data: ImageDataset | None = None) -> ExperimentResult:
        """Run (or, with ``resume``, finish) the sweep into ``run_dir``; see :func:`_run`."""
        return _run(self, Path(run_dir), resume=resume, progress=progress, data=data)


def cells_of(cfg: Table2Config, n_train: int) -> list[Cell]:
    """The sweep's cells, largest batch first; within a batch SGD, SSGD(m), NSGD first."""
    cells = []
    for b in sorted(set(cfg.batch_sizes), reverse=True):
        for meth in [m for m in _PRIORITY if m in cfg.methods]:
            m = cfg.m_for(b) if meth == "ssgd" else 1
            cells.append(Cell(key=dict(batch=b, method=meth, m=m), method=meth, batch=b, shards=m,
                              epochs=cfg.epochs_for(b, n_train),
                              grid=lr_grid(cfg.center(meth, b), cfg.lr_points, cfg.lr_step),
                              seeds=cfg.seeds_for(meth, b), widen=cfg.widen, lr_step=cfg.lr_step,
                              ladder=lr_ladder(cfg.center(meth, b), cfg.lr_points, cfg.lr_step, cfg.widen),
                              lr_divisor=m if meth == "ssgd" else 1,
                              extra=dict(paper_test_acc=PAPER_TABLE2.get(b, {}).get(meth))))
    return cells


def _acc(r: dict[str, Any]) -> float:
    return r["test_acc_mean"] if "test_acc_mean" in r else r["test_acc"]


def _accs(r: dict[str, Any]) -> list[float]:
    return list(r.get("test_accs") or [r["test_acc"]])


def _compare(a: dict[str, Any], b: dict[str, Any], tol: float) -> tuple[float, float | None, str]:
    """(difference of means, Welch p-value or None, 'beat'|'matched'|'trailed'). With >= 2 seeds a side,
    'beat'/'trailed' need p < 0.05 as well as |difference| > tol."""
    d = _acc(a) - _acc(b)
    p = welch(_accs(a), _accs(b))
    if abs(d) <= tol or (p is not None and p >= 0.05):
        return d, p, "matched"
    return d, p, "beat" if d > 0 else "trailed"


def verdicts(cells: list[dict[str, Any]], *, tol: float = PAPER_TOL) -> list[dict[str, Any]]:
    """Per batch size: each method against the paper's number (matched within ±``tol``, beat, trailed),
    SSGD(m) against SGD and against NSGD (difference of means, Welch p over seeds, verdict)."""
    idx = {(c["batch"], c["method"]): c for c in cells}
    out = []
    for b in sorted({c["batch"] for c in cells}):
        row: dict[str, Any] = {"batch": b, "vs_paper": {}}
        for m, paper in PAPER_TABLE2.get(b, {}).items():
            if (b, m) in idx:
                d = _acc(idx[(b, m)]) - paper
                row["vs_paper"][m] = "matched" if abs(d) <= tol else "beat" if d > 0 else "trailed"
        for other in ("sgd", "nsgd"):
            if (b, "ssgd") in idx and (b, other) in idx:
                d, p, v = _compare(idx[(b, "ssgd")], idx[(b, other)], MATCH_TOL)
                row[f"ssgd_vs_{other}"] = {"diff": d, "p": p, "verdict": v}
        out.append(row)
    return out


def _at(batches: list[int]) -> str:
    """``at batch 16, 128`` or ``at no batch size`` (never "at batch none")."""
    return f"at batch {', '.join(map(str, batches))}" if batches else "at no batch size"


def summarize_table2(best: list[dict[str, Any]], *, epochs: int, tol: float = MATCH_TOL,
                     train_examples: int | None = None, model: str = "mlp", steps: int | None = None,
                     quick: bool = False) -> str:
    """The 'what matched, what did not, why' paragraph, generated from the numbers
    (``steps``: the fixed-steps view, about that many steps per cell instead of ``epochs``; ``quick``: a
    reduced budget, whose numbers are compared with each other but not used to judge the paper's claims)."""
    acc = {(r["batch"], r["method"]): _acc(r) for r in best}
    rows = {(r["batch"], r["method"]): r for r in best}
    batches = sorted({r["batch"] for r in best})
    parts: list[str] = []
    pair = [b for b in batches if (b, "ssgd") in acc and (b, "sgd") in acc]  # a partial sweep lacks some
    if pair:
        cls: dict[str, list[int]] = {"beat": [], "matched": [], "trailed": []}
        for b in pair:
            cls[_compare(rows[(b, "ssgd")], rows[(b, "sgd")], tol)[2]].append(b)
        parts.append("SSGD(m) vs SGD (ours, |difference| <= {:.1f} points, or not significant over seeds, counts "
                     "as matched): ".format(100 * tol) +
                     "; ".join(f"{k} {_at(v)}" for k, v in cls.items() if v) + ".")
        paper_b = [b for b in pair if b in PAPER_TABLE2]
        if paper_b and quick:
            parts.append("This is a quick run (a reduced budget): its numbers are not comparable with the paper's, "
                         "so the paper's claims are not judged here; run without --quick for that.")
        elif paper_b:
            agree = [b for b in paper_b
                     if (acc[(b, "ssgd")] >= acc[(b, "sgd")]) == (PAPER_TABLE2[b]["ssgd"] >= PAPER_TABLE2[b]["sgd"])]
            paper_wins = [b for b in paper_b if PAPER_TABLE2[b]["ssgd"] > PAPER_TABLE2[b]["sgd"]]
            our_wins = [b for b in paper_b if acc[(b, "ssgd")] > acc[(b, "sgd")]]
            parts.append(f"The paper has SSGD ahead of SGD {_at(paper_wins)}; we have it ahead {_at(our_wins)} "
                         f"(same ordering at {len(agree)} of {len(paper_b)} batch sizes with a paper number).")
            big = [b for b in paper_b if b >= 1024]
            if big:
                ok = [b for b in big if b in cls["beat"]]
                tie = [b for b in big if b in cls["matched"]]
                verdict = ("holds" if len(ok) == len(big) else "partly holds" if ok else
                           "is not confirmed beyond seed noise" if tie else "does not hold")
                parts.append(f"The paper's large-batch claim (SSGD > SGD at batch >= 1024) {verdict} here "
                             f"(ahead by more than {100 * tol:.1f} points at {len(ok)} of {len(big)}, "
                             f"matched at {len(tie)}).")
    npair = [b for b in batches if (b, "ssgd") in rows and (b, "nsgd") in rows]
    if npair:
        cmp = {b: _compare(rows[(b, "ssgd")], rows[(b, "nsgd")], tol) for b in npair}
        ahead = [b for b in npair if cmp[b][2] == "beat"]
        behind = [b for b in npair if cmp[b][2] == "trailed"]
        parts.append(f"The m-shard sum against plain NSGD (one global unit step): SSGD(m) ahead {_at(ahead)}, "
                     f"behind {_at(behind)}, matched at the other {len(npair) - len(ahead) - len(behind)} "
                     f"of {len(npair)}.")
    others = [m for m in ("sgdm", "adam") if all((b, m) in acc for b in batches)]
    if others and all((b, "ssgd") in acc for b in batches):
        wins = [b for b in batches if all(acc[(b, "ssgd")] >= acc[(b, m)] for m in others)]
        parts.append(f"SSGD(m) was at least as accurate as {' and '.join(LABELS[m] for m in others)} at "
                     f"{len(wins)} of {len(batches)} batch sizes.")
    if len(batches) > 1:
        drops = []
        for m in METHODS:
            if all((b, m) in acc for b in batches):
                peak = max(acc[(b, m)] for b in batches)
                drops.append(f"{LABELS[m]} {100 * (peak - acc[(batches[-1], m)]):.1f}")
        if drops:
            parts.append(f"Drop from each method's best batch size to batch {batches[-1]} (points): "
                         + ", ".join(drops) + ".")
    edges = [f"{LABELS[r['method']]}@{r['batch']}" for r in best if r.get("lr_at_grid_edge", r.get("lr_at_edge"))]
    why = [f"Why: every cell had the same budget of {epochs} epoch(s)" if steps is None else
           f"Why: every cell had about {steps} steps (the fixed-steps view), so a larger batch saw more examples"]
    if train_examples and steps is None:
        why.append(f"on {train_examples} training examples, so batch {batches[-1]} got "
                   f"{epochs * -(-train_examples // batches[-1])} steps against "
                   f"{epochs * -(-train_examples // batches[0])} at batch {batches[0]}")
    seeds = max((r.get("seeds", 1) for r in best), default=1)
    if seeds > 1:
        why.append(f"cells with {seeds} seeds report mean ± std, and a difference between them counts only if a "
                   "Welch t-test gives p < 0.05")
    else:
        why.append(f"one seed per cell, so differences below about {100 * tol:.1f}-1 points are within seed noise")
    why.append(f"the model is a {model.upper()} (the paper's model is not stated); each lr came from a validation "
               "grid of the same size for every method, widened where the winner sat at its edge"
               + (", and where a cell has seeds, by the validation mean over them" if seeds > 1 else ""))
    rejected = [f"{LABELS[r['method']]}@{r['batch']} (lr {', '.join(f'{x:g}' for x in r['lrs_rejected'])} "
                f"-> {r['lr']:g})" for r in best if r.get("lrs_rejected")]
    if rejected:
        why.append("the first seed's pick lost to the next lr by its mean over seeds (its seeds diverged) at "
                   + ", ".join(rejected))
    if edges:
        why.append("the chosen lr still sat at the grid's edge after widening for " + ", ".join(edges))
    parts.append("; ".join(why) + ".")
    return " ".join(parts)


def _cell_text(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    txt = fmt_mean_std(_acc(r), r.get("test_acc_std")) if r.get("seeds", 1) > 1 else fmt_acc(_acc(r))
    return txt + ("†" if r.get("lr_at_grid_edge") else "")


def results_markdown(results: dict[str, Any]) -> str:
    """The README table from a ``table2.json`` (this module's results format): ours beside the paper's
    column, then one verdict line per batch size."""
    cells = results["cells"]
    idx = {(c["batch"], c["method"]): c for c in cells}
    methods = [m for m in METHODS if any(c["method"] == m for c in cells)]
    batches = sorted({c["batch"] for c in cells})
    head = "| batch | m | steps | " + " | ".join(
        f"{LABELS[m]} ours / paper" if m in ("sgd", "sgdm", "adam", "ssgd") else f"{LABELS[m]} ours"
        for m in methods) + " |"
    lines = [head, "|" + "---|" * (3 + len(methods))]
    for b in batches:
        steps = next((idx[(b, m)]["steps"] for m in methods if (b, m) in idx), "")
        cells_txt = []
        for m in methods:
            ours = _cell_text(idx.get((b, m)))
            cells_txt.append(f"{ours} / {fmt_acc(PAPER_TABLE2.get(b, {}).get(m))}"
                             if m in ("sgd", "sgdm", "adam", "ssgd") else ours)
        lines.append(f"| {b} | {paper_m(b)} | {steps} | " + " | ".join(cells_txt) + " |")
    budget = (f"about {results['steps_target']} steps per cell (fixed-steps view)" if results.get("steps_target")
              else f"{results['epochs']} epoch(s) per cell")
    lines += ["", f"Test accuracy of the learning rate chosen on the validation split; {budget}; "
              "mean ± sample std over seeds where a cell has more than one; † = chosen lr at the edge of the "
              "widened grid; — = no number."]
    if results.get("partial"):
        lines.append(f"**Partial**: {results['cells_done']} of {results['cells_total']} cells finished; "
                     "the missing cells print —.")
    quick = results.get("quick") is True
    if quick:
        lines.append("**Quick run** (a reduced budget): the paper's numbers are shown beside ours for orientation "
                     "only; they are not comparable, so no row is judged against them.")
    lines += ["", "| batch | ours vs paper (±2 points = matched) | SSGD(m) − SGD | SSGD(m) − NSGD |", "|---|---|---|---|"]
    for v in verdicts(cells):
        paper = ("not judged (quick run)" if quick else
                 ", ".join(f"{LABELS[m]} {x}" for m, x in v["vs_paper"].items()) or "—")

        def diff(key):
            c = v.get(key)
            if c is None:
                return "—"
            p = "" if c["p"] is None else f", p={c['p']:.2f}"
            return f"{100 * c['diff']:+.1f} pts{p}: {c['verdict']}"

        lines.append(f"| {v['batch']} | {paper} | {diff('ssgd_vs_sgd')} | {diff('ssgd_vs_nsgd')} |")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """The generated 'what matched' paragraph from a ``table2.json`` (:func:`summarize_table2` on its cells)."""
    return "Generated summary: " + summarize_table2(
        results["cells"], epochs=results["epochs"], train_examples=results.get("train_examples"),
        model=results.get("model") or "mlp", steps=results.get("steps_target"), quick=results.get("quick") is True)


def _plot(best: list[dict[str, Any]], methods: Iterable[str], path: Path, title: str) -> None:
    fig, ax = new_figure(figsize=(7, 4.5))
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for m in methods:
        rows = sorted((r for r in best if r["method"] == m), key=lambda r: r["batch"])
        if rows:
            ax.errorbar([r["batch"] for r in rows], [_acc(r) for r in rows],
                        yerr=[r.get("test_acc_std") or 0.0 for r in rows], fmt="o-", color=colors[m], capsize=3,
                        label=f"{LABELS[m]} (ours)")
        pb = sorted(b for b in PAPER_TABLE2 if m in PAPER_TABLE2[b])
        if pb:
            ax.plot(pb, [PAPER_TABLE2[b][m] for b in pb], "x--", color=colors[m], alpha=0.6,
                    label=f"{LABELS[m]} (paper)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def _results_json(cfg: Table2Config, cells: list[Cell], done: list[dict[str, Any]],
                  train_examples: int | None = None) -> dict[str, Any]:
    keep = ("batch", "method", "m", "test_acc_mean", "test_acc_std", "lr", "steps", "epochs", "lr_at_grid_edge",
            "seeds", "test_accs", "val_acc", "val_acc_mean", "paper_test_acc", "lrs_tried", "lrs_rejected")
    return {"epochs": cfg.epochs, "steps_target": cfg.steps, "seeds": cfg.seeds, "train_examples": train_examples,
            "partial": len(done) < len(cells), "cells_done": len(done), "cells_total": len(cells),
            "model": cfg.model, "dataset": cfg.dataset, **({"quick": True} if cfg.is_quick() else {}),
            "cells": [{k: c.get(k) for k in keep} for c in sorted(done, key=lambda c: (c["batch"],
                                                                                        METHODS.index(c["method"])))]}


def _run(cfg: Table2Config, run_dir: Path, *, resume: bool, progress: bool,
         data: ImageDataset | None) -> ExperimentResult:
    """Write config.json, grid.json/grid.csv (every run), table2.json (after every finished cell, with
    ``partial`` until the last), table2.csv, table2.md, accuracy_vs_batch.png, report.md, summary.json."""
    t0 = time.perf_counter()
    n_seen: dict[str, int] = {}

    def make_cells(n: int) -> list[Cell]:
        n_seen["train_examples"] = n
        return cells_of(cfg, n)

    sw = run_sweep(cfg, run_dir, "table2", make_cells=make_cells,
                   make_results=lambda cells, done: _results_json(cfg, cells, done, n_seen.get("train_examples")),
                   config_extra=lambda cells: {"lr_grids": {c.method + "@" + str(c.batch): c.grid for c in cells}},
                   markdown=results_markdown, resume=resume, progress=progress, data=data)
    best, results, store, n_train = sw.cells, sw.results, sw.store, sw.train_examples
    table = (run_dir / "table2.md").read_text().rstrip("\n")
    budget = f"~{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epoch(s)"
    quick = cfg.is_quick()
    summary = summarize_table2(best, epochs=cfg.epochs, train_examples=n_train, model=cfg.model, steps=cfg.steps,
                               quick=quick)
    fig = run_dir / "accuracy_vs_batch.png"
    _plot(best, cfg.methods, fig, ("quick run: " if quick else "")
          + f"{cfg.dataset}: test accuracy vs batch size ({budget}, {cfg.model})")
    seconds = time.perf_counter() - t0
    total_run_s = sum(r.get("seconds", 0.0) for r in store.rows if "reused_from" not in r)
    report = f"""# Table 2 reproduction{" (quick run)" if quick else ""}: {cfg.dataset} accuracy vs batch size

Model: `{cfg.model}`; {n_train} training / {sw.val_examples} validation (carved from the training set) /
{sw.test_examples} test examples; budget: **{budget} per cell**; learning rate chosen per cell on the
validation split from a {cfg.lr_points}-point grid, widened by up to {cfg.widen} point(s) where the winner sat at
its edge (see `config.json`, `grid.csv`); {cfg.seeds} training seeds for {', '.join(LABELS[m] for m in
cfg.seed_methods)} at batch >= {cfg.seed_from_batch}, else seed {cfg.seed}; device `{cfg.device}`.
SSGD(m) sums m shards' unit vectors (m = the paper's value per batch size); NSGD = global unit step with a
cosine-decayed lr; LARS = layer-wise trust ratio 0.001, momentum 0.9.

{table}

![accuracy vs batch size](accuracy_vs_batch.png)

## What matched, what did not, why

{summary}

Files: [table2.json](table2.json) (the cells), [table2.csv](table2.csv), [grid.csv](grid.csv) (every run),
[config.json](config.json). Wall time {seconds:.0f} s (sum of the training runs {total_run_s:.0f} s).
"""
    report_path = atomic_write_text(run_dir / "report.md", report)
    write_json(run_dir / "summary.json", {"summary": summary, "seconds": seconds, "verdicts": verdicts(best)})
    return ExperimentResult(run_dir=run_dir, report=Path(report_path), tables={"cells": best, "runs": store.rows},
                            figures={"accuracy_vs_batch": fig}, summary={"summary": summary,
                                                                         "partial": results["partial"]},
                            text=table + "\n\n" + summary, seconds=seconds)

