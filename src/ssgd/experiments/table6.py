r"""Reproduce the paper's Table 6: accuracy on noisy Fashion-MNIST (Laplace, eps = 2) over an
m x n grid -- m nodes (shards) of n examples each, so the global batch is B = m*n.

Methods: SGD+momentum and Adam on the pooled batch of B (what m nodes averaging their
gradients compute), and SSGD(m): each of the m shards contributes the unit vector of its
gradient and the update steps along their sum. Training images (and the validation
split carved from them) carry i.i.d. Laplace(0, 1/eps) noise per pixel (sensitivity 1:
pixels in [0, 1], see :mod:`ssgd.data.noise`); test images are clean.

Tuning and budget are Table 2's (:mod:`ssgd.experiments.sweep`): a per-cell validation lr
grid of the same size for every method, widened at its edge, chosen on validation accuracy
only; the same number of epochs for every cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import ImageDataset
from ..report.io import atomic_write_text, new_figure, save_figure, write_json
from .contract import ExperimentResult
from .sweep import MATCH_TOL, PAPER_TOL, Cell, SweepConfig, fmt_acc, fmt_mean_std, lr_grid, lr_ladder, run_sweep
from .table2 import LABELS

__all__ = ["Table6Config", "summarize_table6", "METHODS6", "PAPER_TABLE6", "cells_of", "results_markdown",
           "summary_markdown"]

METHODS6 = ("sgdm", "adam", "ssgd")
# The paper's Table 6 (test accuracy with eps = 2 on Fashion-MNIST; SGDm / Adam / SSGD per (m, n)), as
# published in Security and Communication Networks 2021, article 5404061 (the journal version of arXiv
# 2012.02076). Rows m, columns n = 4, 8, 16, 32, 64.
_PAPER_ROWS = {
    4: [(0.7089, 0.7177, 0.7732), (0.7623, 0.7729, 0.7875), (0.7894, 0.7813, 0.7947), (0.7941, 0.8180, 0.8233),
        (0.8108, 0.8192, 0.8343)],
    8: [(0.7123, 0.7402, 0.7885), (0.7658, 0.7548, 0.8040), (0.7806, 0.8022, 0.8175), (0.8044, 0.8242, 0.8412),
        (0.8159, 0.8373, 0.8459)],
    16: [(0.7127, 0.7723, 0.7903), (0.7763, 0.8052, 0.8139), (0.7724, 0.8173, 0.8389), (0.7993, 0.8291, 0.8474),
         (0.8199, 0.8386, 0.8455)],
    32: [(0.7159, 0.8013, 0.8177), (0.7669, 0.8066, 0.8333), (0.7735, 0.8339, 0.8467), (0.8103, 0.8540, 0.8611),
         (0.8299, 0.8553, 0.8597)],
    64: [(0.7158, 0.8140, 0.8235), (0.7432, 0.8309, 0.8412), (0.7853, 0.8497, 0.8524), (0.8064, 0.8586, 0.8647),
         (0.8283, 0.8663, 0.8655)],
}
PAPER_TABLE6: dict[tuple[int, int], dict[str, float]] = {
    (m, n): dict(zip(METHODS6, accs)) for m, row in _PAPER_ROWS.items() for n, accs in zip((4, 8, 16, 32, 64), row)}


@dataclass
class Table6Config(SweepConfig):
    """Table 6's sweep: ``ms`` x ``ns`` x ``methods`` on eps-Laplace-noisy training images."""

    ms: tuple[int, ...] = (4, 16, 64)
    ns: tuple[int, ...] = (4, 16, 64)
    methods: tuple[str, ...] = METHODS6
    noise_eps: float | None = 2.0

    def validate(self) -> "Table6Config":
        if self.noise_eps is None:
            raise ValueError("Table 6 needs noise_eps (the paper uses 2); got None")
        super().validate()
        bad = [m for m in self.methods if m not in METHODS6]
        if bad or not self.methods:
            raise ValueError(f"Unknown method(s) {bad or list(self.methods)} for Table 6; choose from {list(METHODS6)}")
        for name, vals in (("ms", self.ms), ("ns", self.ns)):
            if not vals or any(v < 1 for v in vals):
                raise ValueError(f"Invalid {name}={list(vals)}; need positive integers, e.g. 4,16,64")
        return self

    @classmethod
    def quick(cls) -> "Table6Config":
        """About a minute on 2 cores: m, n in {4, 16} on 4,000 examples, 1 epoch."""
        return cls(ms=(4, 16), ns=(4, 16), epochs=1, lr_points=3, widen=1, train_size=4000, test_size=2000)

    def is_quick(self) -> bool:
        """A reduced budget (``--quick``, a training subset, fewer epochs than the full run): not comparable
        with the paper's numbers, and its report says so instead of judging them."""
        return self.train_size is not None or self.epochs < Table6Config().epochs

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            data: ImageDataset | None = None) -> ExperimentResult:
        return _run(self, Path(run_dir), resume=resume, progress=progress, data=data)


def cells_of(cfg: Table6Config) -> list[Cell]:
    """One cell per (m, n, method), largest batch first. SGDm/Adam depend on m*n only: a cell reuses the
    runs of an earlier cell with the same batch (its ``twin``); key ``m`` is the grid's m for every method."""
    cells = []
    for m, n in sorted(((m, n) for m in cfg.ms for n in cfg.ns), key=lambda mn: (-mn[0] * mn[1], mn)):
        b = m * n
        for meth in cfg.methods:
            ssgd = meth == "ssgd"
            cells.append(Cell(key=dict(batch=b, method=meth, m=m, n=n), method=meth, batch=b,
                              shards=m if ssgd else 1, epochs=cfg.epochs,
                              grid=lr_grid(cfg.center(meth, b), cfg.lr_points, cfg.lr_step),
                              seeds=cfg.seeds_for(meth, b), widen=cfg.widen, lr_step=cfg.lr_step,
                              ladder=lr_ladder(cfg.center(meth, b), cfg.lr_points, cfg.lr_step, cfg.widen),
                              lr_divisor=m if ssgd else 1, twin=None if ssgd else dict(batch=b, method=meth),
                              extra=dict(paper_test_acc=PAPER_TABLE6.get((m, n), {}).get(meth))))
    return cells


def _acc(r: dict[str, Any]) -> float:
    return r["test_acc_mean"] if "test_acc_mean" in r else r["test_acc"]


def summarize_table6(best: list[dict[str, Any]], *, epochs: int, eps: float, tol: float = MATCH_TOL,
                     quick: bool = False) -> str:
    acc = {(r["m"], r["n"], r["method"]): _acc(r) for r in best}
    cells = sorted({(r["m"], r["n"]) for r in best})
    parts = []
    for other in ("sgdm", "adam"):
        if all((m, n, other) in acc and (m, n, "ssgd") in acc for m, n in cells):
            d = [acc[(m, n, "ssgd")] - acc[(m, n, other)] for m, n in cells]
            beat = sum(x > tol for x in d)
            matched = sum(abs(x) <= tol for x in d)
            parts.append(f"SSGD(m) vs {LABELS[other]}: beat in {beat}, matched in {matched}, trailed in "
                         f"{len(d) - beat - matched} of {len(d)} cells (mean difference {100 * sum(d) / len(d):+.1f} "
                         "points).")
    vs_paper = []
    for meth in ("sgdm", "adam", "ssgd"):
        d = [acc[(m, n, meth)] - PAPER_TABLE6[(m, n)][meth] for m, n in cells
             if (m, n, meth) in acc and (m, n) in PAPER_TABLE6]
        if d:
            beat, matched = sum(x > PAPER_TOL for x in d), sum(abs(x) <= PAPER_TOL for x in d)
            vs_paper.append(f"{LABELS[meth]} matched in {matched}, beat in {beat}, trailed in {len(d) - beat - matched} "
                            f"of {len(d)} (mean {100 * sum(d) / len(d):+.1f} points)")
    if vs_paper and quick:
        parts.append("This is a quick run (a reduced budget): its numbers are not comparable with the paper's "
                     "Table 6, so they are not judged against it; run without --quick for that.")
    elif vs_paper:
        parts.append(f"Against the paper's Table 6 (within ±{100 * PAPER_TOL:.0f} points = matched): "
                     + "; ".join(vs_paper) + ".")
    for meth in ("sgdm", "adam", "ssgd"):
        vals = [(acc[(m, n, meth)], m, n) for m, n in cells if (m, n, meth) in acc]
        if vals:
            hi, lo = max(vals), min(vals)
            parts.append(f"{LABELS[meth]}: best {hi[0]:.4f} at m={hi[1]}, n={hi[2]}; worst {lo[0]:.4f} at "
                         f"m={lo[1]}, n={lo[2]}.")
    edges = [f"{LABELS[r['method']]}@{r['m']}x{r['n']}" for r in best
             if r.get("lr_at_grid_edge", r.get("lr_at_edge"))]
    why = (f"Why: the training pixels carry Laplace noise of scale 1/{eps:g} = {1 / eps:.2f} (sensitivity 1 on [0, 1] "
           f"pixels) while the test set is clean; every cell had {epochs} epoch(s), so large m*n got fewer steps; "
           "SSGD's unit vectors bound every shard's influence on the step, which the paper credits for its "
           "robustness, while SGDm/Adam average raw gradients; one seed per cell and a validation lr grid of the "
           f"same size for every method, so differences under about {100 * tol:.1f}-1 points are noise.")
    if edges:
        why += " The chosen lr still sat at the grid's edge after widening for " + ", ".join(edges) + "."
    parts.append(why)
    return " ".join(parts)


def results_markdown(results: dict[str, Any]) -> str:
    """The README table from a ``table6.json``."""
    cells = results["cells"]
    idx = {(c["m"], c["n"], c["method"]): c for c in cells}
    methods = [m for m in METHODS6 if any(c["method"] == m for c in cells)]
    grid = sorted({(c["m"], c["n"]) for c in cells})
    lines = ["| m | n | batch m·n | steps | " + " | ".join(f"{LABELS[x]} ours / paper" for x in methods) + " |",
             "|" + "---|" * (4 + len(methods))]
    for m, n in grid:
        steps = next((idx[(m, n, x)]["steps"] for x in methods if (m, n, x) in idx), "")
        txt = []
        for x in methods:
            r = idx.get((m, n, x))
            ours = "—" if r is None else (fmt_mean_std(_acc(r), r.get("test_acc_std")) +
                                          ("†" if r.get("lr_at_grid_edge") else ""))
            txt.append(f"{ours} / {fmt_acc(PAPER_TABLE6.get((m, n), {}).get(x))}")
        lines.append(f"| {m} | {n} | {m * n} | {steps} | " + " | ".join(txt) + " |")
    lines += ["", f"Test accuracy (clean test set) after training on eps={results.get('noise_eps', 2.0):g} "
              f"Laplace-noisy training images; {results['epochs']} epoch(s) per cell; lr chosen on the (noisy) "
              "validation split; † = chosen lr at the edge of the widened grid; paper: Table 6 of the journal "
              "version (Security and Communication Networks 2021, 5404061)."]
    if results.get("partial"):
        lines.append(f"**Partial**: {results['cells_done']} of {results['cells_total']} cells finished.")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """The generated 'what matched' paragraph from a ``table6.json`` (:func:`summarize_table6` on its cells)."""
    return "Generated summary: " + summarize_table6(results["cells"], epochs=results["epochs"],
                                                    eps=results.get("noise_eps") or 2.0, quick=results.get("quick") is True)


def _plot(best: list[dict[str, Any]], cfg: Table6Config, path: Path) -> None:
    fig, ax = new_figure(figsize=(7, 4.5))
    markers = "osd^v<>"
    for i, meth in enumerate(cfg.methods):
        for j, m in enumerate(cfg.ms):
            rows = sorted((r for r in best if r["method"] == meth and r["m"] == m), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [_acc(r) for r in rows], marker=markers[j % len(markers)],
                    color=f"C{i}", linestyle="-", alpha=0.5 + 0.5 * (j + 1) / len(cfg.ms),
                    label=f"{LABELS[meth]} m={m}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size m·n (log scale)")
    ax.set_ylabel("clean test accuracy")
    ax.set_title(("quick run: " if cfg.is_quick() else "") + f"{cfg.dataset}, Laplace eps={cfg.noise_eps:g} training noise ({cfg.epochs} epoch(s), {cfg.model})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    save_figure(fig, path)


def _results_json(cfg: Table6Config, cells: list[Cell], done: list[dict[str, Any]]) -> dict[str, Any]:
    keep = ("batch", "method", "m", "n", "test_acc_mean", "test_acc_std", "lr", "steps", "epochs",
            "lr_at_grid_edge", "seeds", "test_accs", "val_acc", "val_acc_mean", "paper_test_acc", "lrs_tried", "lrs_rejected")
    return {"epochs": cfg.epochs, "seeds": cfg.seeds, "noise_eps": cfg.noise_eps, "partial": len(done) < len(cells),
            "cells_done": len(done), "cells_total": len(cells), "model": cfg.model, "dataset": cfg.dataset,
            **({"quick": True} if cfg.is_quick() else {}), "cells": [{k: c.get(k) for k in keep} for c in sorted(done, key=lambda c: (c["m"], c["n"],
                                                                                        METHODS6.index(c["method"])))]}


def _run(cfg: Table6Config, run_dir: Path, *, resume: bool, progress: bool,
         data: ImageDataset | None) -> ExperimentResult:
    """Run the m x n sweep; writes config.json, grid.json/csv, table6.json (after every cell), table6.csv/md,
    accuracy_vs_batch.png, report.md, summary.json."""
    t0 = time.perf_counter()
    sw = run_sweep(cfg, run_dir, "table6", make_cells=lambda n: cells_of(cfg),
                   make_results=lambda cells, done: _results_json(cfg, cells, done),
                   config_extra=lambda cells: {"laplace_scale": 1.0 / cfg.noise_eps, "sensitivity": 1.0},
                   markdown=results_markdown, resume=resume, progress=progress, data=data)
    best, results, store, n_train = sw.cells, sw.results, sw.store, sw.train_examples
    table = (run_dir / "table6.md").read_text().rstrip("\n")
    summary = summarize_table6(best, epochs=cfg.epochs, eps=cfg.noise_eps, quick=cfg.is_quick())
    fig = run_dir / "accuracy_vs_batch.png"
    _plot(best, cfg, fig)
    seconds = time.perf_counter() - t0
    report = f"""# Table 6 reproduction{" (quick run)" if cfg.is_quick() else ""}: {cfg.dataset} with Laplace noise (eps = {cfg.noise_eps:g})

Training images (and the validation split carved from them) carry per-pixel Laplace noise of scale
1/eps = {1 / cfg.noise_eps:.3g} (sensitivity 1, pixels in [0, 1]); the test set is clean. Model `{cfg.model}`;
{n_train} train / {sw.val_examples} validation / {sw.test_examples} test examples; {cfg.epochs}
epoch(s) per cell; lr per cell from a {cfg.lr_points}-point validation grid widened by up to {cfg.widen} point(s) at
its edge; seed {cfg.seed}; device `{cfg.device}`. m = nodes (shards), n = examples per shard: SGDm/Adam train on
the pooled batch m·n, SSGD(m) sums the m unit vectors.

{table}

![accuracy vs batch size](accuracy_vs_batch.png)

## What matched, what did not, why

{summary}

Files: [table6.json](table6.json), [table6.csv](table6.csv), [grid.csv](grid.csv), [config.json](config.json).
Wall time {seconds:.0f} s.
"""
    report_path = atomic_write_text(run_dir / "report.md", report)
    write_json(run_dir / "summary.json", {"summary": summary, "seconds": seconds})
    return ExperimentResult(run_dir=run_dir, report=Path(report_path), tables={"cells": best, "runs": store.rows},
                            figures={"accuracy_vs_batch": fig}, summary={"summary": summary,
                                                                         "partial": results["partial"]},
                            text=table + "\n\n" + summary, seconds=seconds)
