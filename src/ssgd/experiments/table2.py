r"""Reproduce the paper's Table 2: Fashion-MNIST test accuracy vs batch size (16 ... 8192).

Methods: SGD, SGD+momentum (0.9), Adam, SSGD(m) (the sum of m shards' unit vectors,
m = 4 up to batch 512, 16 at 1024, 32 at 2048-4096, 64 at 8192, as in the paper), and
two close relatives a reviewer asks for: normalized SGD (global unit step, cosine-decayed
lr) and LARS (layer-wise trust ratio, momentum 0.9).

**Fair tuning.** For every (batch size, method) the learning rate is chosen from the
same number of grid points (default 3, spaced x sqrt(10)) on a validation split carved
from the training set (stratified, seeded); the test set is only used to report the
test accuracy of the validation winner. Each method's grid is the same at every batch
size (``lr_scaling=0``; ``(B/128)**lr_scaling`` scales it otherwise), centred on a value
calibrated in validation-only pilots (``LR_CENTER``); a winner at the grid's edge is
flagged in the output. For SSGD(m) the grid value is the step length when all m unit
vectors agree, i.e. the optimizer's lr is value/m.

**Budget.** A fixed number of epochs for every cell, so a large batch gets few steps;
the number of steps is written next to every number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..data import ImageDataset, load_dataset, subsample, train_val_split
from ..report.io import atomic_write_text, save_figure, write_csv, write_json
from .train import TrainConfig, train

__all__ = ["PAPER_BATCHES", "PAPER_TABLE2", "METHODS", "LABELS", "LR_CENTER", "Table2Config", "paper_m",
           "lr_grid", "GridStore", "select_best", "run_sweep", "run_table2", "summarize_table2", "fmt_acc",
           "QUICK"]

PAPER_BATCHES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Table 2 of Duan et al. (arXiv 2012.02076), test accuracy on Fashion-MNIST, as given in the issue.
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
# Grid centres (at batch 128; scaled by (B/128)**lr_scaling, default 0 = the same grid at every batch size),
# calibrated on validation accuracy only in two pilots (batch 64, 3 epochs; batch 4096, 2 epochs; see
# docs/reproductions.md). ssgd/nsgd: step length in weight space (SSGD(m): when all m unit vectors agree).
LR_CENTER = {"sgd": 0.2, "sgdm": 0.02, "adam": 3e-3, "ssgd": 0.6, "nsgd": 1.0, "lars": 2.0}
MATCH_TOL = 0.005  # |difference| <= 0.5 points counts as "matched"


def paper_m(batch_size: int) -> int:
    """The paper's number of shards m for SSGD(m) at a batch size."""
    if batch_size <= 512:
        return min(4, batch_size)
    if batch_size <= 1024:
        return 16
    if batch_size <= 4096:
        return 32
    return 64


def lr_grid(center: float, points: int, step: float = math.sqrt(10)) -> list[float]:
    """``points`` learning rates around ``center``, neighbours a factor ``step`` apart (default sqrt(10))."""
    if points < 1:
        raise ValueError(f"Invalid lr grid size {points}; must be >= 1 (3 is the default)")
    if not center > 0:
        raise ValueError(f"Invalid lr grid centre {center}; must be > 0")
    if not step > 1:
        raise ValueError(f"Invalid lr grid step {step}; must be > 1 (e.g. 3.16)")
    return [float(f"{center * step ** (k - (points - 1) / 2):.4g}") for k in range(points)]


class GridStore:
    """All finished runs of a sweep in ``grid.json`` (rewritten atomically after each run),
    so an interrupted sweep resumes where it stopped (``resume=True``)."""

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            self.rows = json.loads(self.path.read_text())["runs"]

    def find(self, **match: Any) -> dict[str, Any] | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in match.items()):
                return r
        return None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        write_json(self.path, {"runs": self.rows})


def select_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest ``val_acc`` (ties: the smaller lr; NaN is worst). Never looks at test_acc."""
    if not rows:
        raise ValueError("select_best needs at least one run")

    def score(r):
        v = r["val_acc"]
        return (-1.0 if v != v else v, -r["lr"])

    best = dict(max(rows, key=score))
    lrs = sorted(r["lr"] for r in rows)
    best["lr_at_edge"] = len(lrs) >= 3 and best["lr"] in (lrs[0], lrs[-1])
    return best


def fmt_acc(v: float | None) -> str:
    return "—" if v is None or v != v else f"{v:.4f}"


@dataclass
class Table2Config:
    batch_sizes: tuple[int, ...] = PAPER_BATCHES
    methods: tuple[str, ...] = METHODS
    epochs: int = 2
    lr_points: int = 3
    lr_step: float = math.sqrt(10)
    lr_scaling: float = 0.0  # grid centre = LR_CENTER * (B/128) ** lr_scaling
    val_fraction: float = 0.1
    train_size: int | None = None  # stratified subset of the training set (None: all 60,000)
    test_size: int | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "mlp"
    seed: int = 0
    device: str = "cpu"
    noise_eps: float | None = None
    shards: dict[int, int] = field(default_factory=dict)  # overrides of paper_m per batch size

    def validate(self) -> "Table2Config":
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"Unknown method(s) {bad}; choose from {list(METHODS)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"Invalid batch sizes {list(self.batch_sizes)}; need positive integers, e.g. 16,128,1024")
        if self.epochs < 1:
            raise ValueError(f"Invalid epochs={self.epochs}; must be >= 1")
        if self.lr_points < 1:
            raise ValueError(f"Invalid lr_points={self.lr_points}; must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"Invalid val_fraction={self.val_fraction}; must be in (0, 1)")
        return self

    def center(self, method: str, b: int) -> float:
        return LR_CENTER[method] * (b / 128) ** self.lr_scaling

    def m_for(self, b: int) -> int:
        return self.shards.get(b, paper_m(b))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = dict(batch_sizes=(16, 128, 1024), epochs=1, lr_points=3, train_size=4000, test_size=2000)


def _prepare(cfg: Table2Config, data: ImageDataset | None) -> tuple[ImageDataset, ImageDataset]:
    from ..data import with_laplace_noise

    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    data = subsample(data, cfg.train_size, cfg.test_size, seed=cfg.seed)
    if cfg.noise_eps is not None:
        data = with_laplace_noise(data, cfg.noise_eps, seed=cfg.seed)
    return train_val_split(data, cfg.val_fraction, seed=cfg.seed)


def run_sweep(jobs: list[dict[str, Any]], train_part: ImageDataset, val: ImageDataset, *, model: str, epochs: int,
              seed: int, device: str, store: GridStore, progress: bool = True, desc: str = "sweep") -> list[dict]:
    """Train every job once; finished runs in ``store`` are skipped.

    A job has keys batch, method, m, lr (plus any other identifying keys), shards, lr_opt and
    optionally ``same_as`` (a dict of keys of an identical run, whose result is reused)."""
    from tqdm.auto import tqdm

    n = train_part.x_train.shape[0]
    out = []
    for job in tqdm(jobs, desc=desc, disable=not progress):
        key = {k: v for k, v in job.items() if k not in ("shards", "lr_opt", "same_as")}
        done = store.find(**key)
        if done is None and job.get("same_as"):
            twin = store.find(**job["same_as"])
            if twin is not None:
                done = dict(twin, **key, reused_from=job["same_as"])
                store.add(done)
        if done is not None:
            out.append(done)
            continue
        tc = TrainConfig(dataset=train_part.name, model=model, optimizer=job["method"], shards=job["shards"],
                         lr=job["lr_opt"], batch_size=job["batch"], epochs=epochs, seed=seed, device=device)
        res = train(tc, None, data=train_part, val=val, progress=False, checkpoint=False)
        row = dict(key, lr_optimizer=job["lr_opt"], schedule=tc.resolved_schedule, epochs=epochs,
                   steps=epochs * -(-n // job["batch"]), val_acc=res.val_acc, test_acc=res.test_acc,
                   train_loss=res.history[-1]["train_loss"], seconds=round(res.seconds, 2))
        store.add(row)
        out.append(row)
    return out


def _jobs(cfg: Table2Config) -> list[dict[str, Any]]:
    jobs = []
    for b in cfg.batch_sizes:
        for meth in cfg.methods:
            m = cfg.m_for(b) if meth == "ssgd" else 1
            if m > b:
                raise ValueError(f"SSGD(m={m}) needs batch size >= m, got {b}")
            for lr in lr_grid(cfg.center(meth, b), cfg.lr_points, cfg.lr_step):
                jobs.append(dict(batch=b, method=meth, m=m, lr=lr, shards=m,
                                 lr_opt=lr / m if meth == "ssgd" else lr))
    return jobs


def summarize_table2(best: list[dict[str, Any]], *, epochs: int, tol: float = MATCH_TOL,
                     train_examples: int | None = None, model: str = "mlp") -> str:
    """The 'what matched, what did not, why' paragraph, generated from the numbers."""
    acc = {(r["batch"], r["method"]): r["test_acc"] for r in best}
    batches = sorted({r["batch"] for r in best})
    parts: list[str] = []
    if all((b, "ssgd") in acc and (b, "sgd") in acc for b in batches):
        cls = {"beat": [], "matched": [], "trailed": []}
        for b in batches:
            d = acc[(b, "ssgd")] - acc[(b, "sgd")]
            cls["beat" if d > tol else "trailed" if d < -tol else "matched"].append(b)
        parts.append("SSGD(m) vs SGD (ours, |difference| <= {:.1f} points counts as matched): ".format(100 * tol) +
                     "; ".join(f"{k} at batch {', '.join(map(str, v))}" for k, v in cls.items() if v) + ".")
        paper_b = [b for b in batches if b in PAPER_TABLE2]
        if paper_b:
            agree = [b for b in paper_b
                     if (acc[(b, "ssgd")] >= acc[(b, "sgd")]) == (PAPER_TABLE2[b]["ssgd"] >= PAPER_TABLE2[b]["sgd"])]
            paper_wins = [b for b in paper_b if PAPER_TABLE2[b]["ssgd"] > PAPER_TABLE2[b]["sgd"]]
            our_wins = [b for b in paper_b if acc[(b, "ssgd")] > acc[(b, "sgd")]]
            parts.append(f"The paper has SSGD ahead of SGD at batch {', '.join(map(str, paper_wins)) or 'none'}; "
                         f"we have it ahead at {', '.join(map(str, our_wins)) or 'none'} "
                         f"(same ordering at {len(agree)} of {len(paper_b)} batch sizes with a paper number).")
            big = [b for b in paper_b if b >= 1024]
            if big:
                ok = [b for b in big if acc[(b, "ssgd")] - acc[(b, "sgd")] > tol]
                tie = [b for b in big if abs(acc[(b, "ssgd")] - acc[(b, "sgd")]) <= tol]
                verdict = ("holds" if len(ok) == len(big) else "partly holds" if ok or tie else "does not hold")
                parts.append(f"The paper's large-batch claim (SSGD > SGD at batch >= 1024) {verdict} here "
                             f"(ahead by more than {100 * tol:.1f} points at {len(ok)} of {len(big)}, "
                             f"within {100 * tol:.1f} points at {len(tie)}).")
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
    edges = [f"{LABELS[r['method']]}@{r['batch']}" for r in best if r.get("lr_at_edge")]
    why = [f"Why: every cell had the same budget of {epochs} epoch(s)"]
    if train_examples:
        why.append(f"on {train_examples} training examples, so batch {batches[-1]} got only "
                   f"{epochs * -(-train_examples // batches[-1])} steps against "
                   f"{epochs * -(-train_examples // batches[0])} at batch {batches[0]}; with so few steps the "
                   "large batches are under-trained for every method, and methods whose step length does not "
                   "shrink with the gradient (SSGD, NSGD, LARS, Adam) move further per step")
    why.append(f"the model is a {model.upper()} (the paper's model is not stated), trained with one seed, so "
               f"differences below about {100 * tol:.1f}-1 points are within seed noise")
    why.append("each lr came from a small validation grid (the same size for every method)")
    if edges:
        why.append("the chosen lr sat at the grid's edge for " + ", ".join(edges) +
                   " (a wider grid might move those cells)")
    parts.append("; ".join(why) + ".")
    return " ".join(parts)


def _markdown(best: list[dict[str, Any]], methods: Iterable[str], batches: list[int], epochs: int) -> str:
    idx = {(r["batch"], r["method"]): r for r in best}
    methods = list(methods)
    head = "| batch | m | steps | " + " | ".join(
        f"{LABELS[m]} ours / paper" if m in ("sgd", "sgdm", "adam", "ssgd") else f"{LABELS[m]} ours"
        for m in methods) + " |"
    lines = [head, "|" + "---|" * (3 + len(methods))]
    for b in batches:
        cells = []
        steps = next((idx[(b, m)]["steps"] for m in methods if (b, m) in idx), "")
        for m in methods:
            r = idx.get((b, m))
            ours = fmt_acc(r["test_acc"]) if r else "—"
            if r and r.get("lr_at_edge"):
                ours += "†"
            if m in ("sgd", "sgdm", "adam", "ssgd"):
                cells.append(f"{ours} / {fmt_acc(PAPER_TABLE2.get(b, {}).get(m))}")
            else:
                cells.append(ours)
        lines.append(f"| {b} | {paper_m(b)} | {steps} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Test accuracy of the learning rate chosen on the validation split; {epochs} epoch(s) per cell "
                 "(steps = epochs x ceil(train examples / batch)); † = chosen lr at the edge of the grid; "
                 "— = no number (the paper reports 7 of the 10 batch sizes).")
    return "\n".join(lines)


def _plot(best: list[dict[str, Any]], methods: Iterable[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for m in methods:
        rows = sorted((r for r in best if r["method"] == m), key=lambda r: r["batch"])
        if rows:
            ax.plot([r["batch"] for r in rows], [r["test_acc"] for r in rows], "o-", color=colors[m],
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


def run_table2(cfg: Table2Config, run_dir: str | Path, *, data: ImageDataset | None = None, progress: bool = True,
               resume: bool = False) -> dict[str, Any]:
    """Run the sweep and write config.json, grid.json/grid.csv (every run), table2.csv, table2.md,
    accuracy_vs_batch.png and report.md to ``run_dir``. Returns the selected rows and the summary."""
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_part, val = _prepare(cfg, data)
    n_train = train_part.x_train.shape[0]
    write_json(run_dir / "config.json", {**cfg.to_dict(), "train_examples": n_train,
                                         "val_examples": val.x_test.shape[0],
                                         "test_examples": train_part.x_test.shape[0],
                                         "lr_grids": {m: {b: lr_grid(cfg.center(m, b), cfg.lr_points, cfg.lr_step)
                                                          for b in cfg.batch_sizes} for m in cfg.methods}})
    store = GridStore(run_dir / "grid.json", resume)
    rows = run_sweep(_jobs(cfg), train_part, val, model=cfg.model, epochs=cfg.epochs, seed=cfg.seed,
                     device=cfg.device, store=store, progress=progress, desc="table2")
    write_csv(run_dir / "grid.csv", rows)
    best = []
    for b in cfg.batch_sizes:
        for meth in cfg.methods:
            sel = select_best([r for r in rows if r["batch"] == b and r["method"] == meth])
            sel["paper_test_acc"] = PAPER_TABLE2.get(b, {}).get(meth)
            best.append(sel)
    write_csv(run_dir / "table2.csv", best)
    batches = sorted(cfg.batch_sizes)
    table = _markdown(best, cfg.methods, batches, cfg.epochs)
    atomic_write_text(run_dir / "table2.md", table + "\n")
    summary = summarize_table2(best, epochs=cfg.epochs, train_examples=n_train, model=cfg.model)
    _plot(best, cfg.methods, run_dir / "accuracy_vs_batch.png",
          f"{cfg.dataset}: test accuracy vs batch size ({cfg.epochs} epoch(s), {cfg.model})")
    seconds = time.perf_counter() - t0
    total_run_s = sum(r["seconds"] for r in rows)
    report = f"""# Table 2 reproduction: {cfg.dataset} accuracy vs batch size

Model: `{cfg.model}`; {n_train} training / {val.x_test.shape[0]} validation (carved from the training set) /
{train_part.x_test.shape[0]} test examples; budget: **{cfg.epochs} epoch(s) per cell** (fixed, so large batches get few
steps); learning rate chosen per cell on the validation split from a {cfg.lr_points}-point grid (see `config.json`);
seed {cfg.seed}; device `{cfg.device}`. SSGD(m) sums m shards' unit vectors (m = paper's value per batch size);
NSGD = global unit step with a cosine-decayed lr; LARS = layer-wise trust ratio 0.001, momentum 0.9.

{table}

![accuracy vs batch size](accuracy_vs_batch.png)

## What matched, what did not, why

{summary}

Files: [table2.csv](table2.csv) (selected cells), [grid.csv](grid.csv) (every run of the lr grid),
[config.json](config.json). Wall time {seconds:.0f} s (sum of the training runs {total_run_s:.0f} s).
"""
    atomic_write_text(run_dir / "report.md", report)
    write_json(run_dir / "summary.json", {"summary": summary, "seconds": seconds, "selected": best})
    return {"selected": best, "runs": rows, "summary": summary, "table": table, "seconds": seconds}
