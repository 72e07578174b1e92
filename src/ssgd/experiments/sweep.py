r"""The tuned accuracy sweep behind Table 2 and Table 6: one cell = (batch size, method[, m, n]).

Every cell gets the same treatment, whatever the method:

1. **A validation lr grid of the same size** (``lr_points``, neighbours a factor ``lr_step``
   apart, centred on ``LR_CENTER[method]``), trained at the base seed; the winner is the lr
   with the best accuracy on a validation split carved from the training set. The test set
   is only ever read for the winner.
2. **Widening at the edge.** While the winner is the smallest or the largest lr tried (and at
   least 3 were tried), one more point a factor ``lr_step`` beyond that edge is trained and the
   winner is chosen again, at most ``widen`` times. A winner still at the edge afterwards is
   flagged (``lr_at_grid_edge``).
3. **Seeds, and a pick that must hold over them.** Cells whose method is in ``seed_methods`` at
   batch >= ``seed_from_batch`` are retrained at the winning lr with ``seeds - 1`` more training
   seeds (model init and batch order; the data split stays). The lr is then chosen by its
   *validation mean over seeds* (:func:`choose_lr`): a pick whose seeds diverge (one seed's run
   blows up, as SGD at batch 1024 and lr 0.63 did) falls below the next lr, which is retrained at
   every seed in turn, until the best mean over seeds is at least every other lr's validation
   accuracy. The cell reports the test accuracy's mean and sample std at that lr, and the lrs
   rejected on the way (``lrs_rejected``).

Every finished training run is appended to ``grid.json`` at once (atomically), so an
interrupted sweep resumes at the run it stopped at; a cell is finished when
:func:`next_run` has nothing left for it. Cells run largest batch first (the cheapest per
epoch, and where the paper's claim lives).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..data import ImageDataset, load_dataset, subsample, train_val_split
from ..report.io import atomic_write_text, check_saved_config, write_csv, write_json
from .train import TrainConfig, train

__all__ = ["LR_CENTER", "MATCH_TOL", "PAPER_TOL", "SweepConfig", "Cell", "GridStore", "lr_grid", "select_best",
           "lr_ladder", "choose_lr", "next_run", "run_cells", "SweepRun", "run_sweep", "cell_result", "fmt_acc", "fmt_mean_std", "prepare_split", "welch",
           "load_results"]

# Grid centres, calibrated on validation accuracy only in two pilots (batch 64, 3 epochs; batch 4096,
# 2 epochs; see docs/reproductions.md). ssgd/nsgd: the step length in weight space (SSGD(m): when all m
# unit vectors agree, so the optimizer's lr is the grid value / m).
LR_CENTER = {"sgd": 0.2, "sgdm": 0.02, "adam": 3e-3, "ssgd": 0.6, "nsgd": 1.0, "lars": 2.0}
MATCH_TOL = 0.005  # |SSGD - SGD| <= 0.5 points counts as "matched" (one seed)
PAPER_TOL = 0.02  # |ours - paper| <= 2 points counts as "matched the paper"


def lr_grid(center: float, points: int, step: float = math.sqrt(10)) -> list[float]:
    """``points`` learning rates around ``center``, neighbours a factor ``step`` apart (default sqrt(10))."""
    if points < 1:
        raise ValueError(f"Invalid lr grid size {points}; must be >= 1 (3 is the default)")
    if not center > 0:
        raise ValueError(f"Invalid lr grid centre {center}; must be > 0")
    if not step > 1:
        raise ValueError(f"Invalid lr grid step {step}; must be > 1 (e.g. 3.16)")
    return [_round(center * step ** (k - (points - 1) / 2)) for k in range(points)]


def lr_ladder(center: float, points: int, step: float, widen: int) -> list[float]:
    """:func:`lr_grid` continued by ``widen`` points below and above (the points widening may add)."""
    return lr_grid(center, points + 2 * widen, step)


def _round(lr: float) -> float:
    return float(f"{lr:.4g}")


def select_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest ``val_acc`` (ties: the smaller lr; NaN is worst). Never looks at test_acc.

    ``lr_at_edge``: at least 3 lrs were tried and the winner is the smallest or the largest."""
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


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    if std is None or std != std:
        return fmt_acc(mean)
    return f"{fmt_acc(mean)} ± {std:.4f}"


def welch(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value for mean(a) != mean(b); ``None`` with fewer than 2 values each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return 0.0 if statistics.fmean(a) != statistics.fmean(b) else 1.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


@dataclass
class SweepConfig:
    """What every tuned sweep shares; Table 2 and Table 6 add their grid axes."""

    epochs: int = 20
    lr_points: int = 3
    lr_step: float = math.sqrt(10)
    lr_scaling: float = 0.0  # grid centre = LR_CENTER * (B/128) ** lr_scaling
    widen: int = 2  # at most this many points added beyond an edge winner, per cell
    seeds: int = 1  # training seeds for the cells named by seed_methods / seed_from_batch
    seed_methods: tuple[str, ...] = ("sgd", "ssgd", "nsgd")
    seed_from_batch: int = 1024
    val_fraction: float = 0.1
    train_size: int | None = None  # stratified subset of the training set (None: all of it)
    test_size: int | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "mlp"
    seed: int = 0
    device: str = "cpu"
    noise_eps: float | None = None  # Laplace noise on the training pixels (sensitivity 1)

    def validate(self):
        if self.epochs < 1:
            raise ValueError(f"Invalid epochs={self.epochs}; must be >= 1")
        if self.lr_points < 1:
            raise ValueError(f"Invalid lr_points={self.lr_points}; must be >= 1 (3 is the default)")
        if not self.lr_step > 1:
            raise ValueError(f"Invalid lr_step={self.lr_step}; must be > 1 (e.g. 3.16)")
        if self.widen < 0:
            raise ValueError(f"Invalid widen={self.widen}; must be >= 0 (0 turns widening off)")
        if self.seeds < 1:
            raise ValueError(f"Invalid seeds={self.seeds}; must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"Invalid val_fraction={self.val_fraction}; must be in (0, 1), e.g. 0.1")
        for name in ("train_size", "test_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"Invalid {name}={v}; must be >= 1 (or None for the whole split)")
        if self.noise_eps is not None and not self.noise_eps > 0:
            raise ValueError(f"Invalid noise_eps={self.noise_eps}; must be > 0 (the paper's Table 6 uses 2)")
        return self

    def center(self, method: str, batch: int) -> float:
        return LR_CENTER[method] * (batch / 128) ** self.lr_scaling

    def seeds_for(self, method: str, batch: int) -> list[int]:
        n = self.seeds if method in self.seed_methods and batch >= self.seed_from_batch else 1
        return [self.seed + k for k in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Cell:
    """One table cell: ``key`` identifies its runs in ``grid.json`` (batch, method, m[, n]);
    ``twin`` (optional) names the keys of an identical cell whose runs are reused."""

    key: dict[str, Any]
    method: str
    batch: int
    shards: int
    epochs: int
    grid: list[float]
    seeds: list[int]
    widen: int
    lr_step: float
    lr_divisor: int = 1  # SSGD(m): the optimizer's lr is the grid value / m
    ladder: list[float] = field(default_factory=list)  # the grid continued by ``widen`` points each way
    twin: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # reported with the cell, not part of the key


class GridStore:
    """All finished runs of a sweep in ``grid.json`` (rewritten atomically after each run),
    so an interrupted sweep resumes where it stopped (``resume=True``)."""

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            try:
                runs = json.loads(self.path.read_text())["runs"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{self.path} is unreadable ({e.__class__.__name__}); use a new run folder") from e
            if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
                raise ValueError(f"{self.path} holds no list of runs; use a new run folder")
            self.rows = runs

    def find(self, **match: Any) -> dict[str, Any] | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in match.items()):
                return r
        return None

    def select(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        write_json(self.path, {"runs": self.rows})


def _tuning_rows(cell: Cell, store: GridStore) -> list[dict[str, Any]]:
    return store.select(**cell.key, seed=cell.seeds[0])


def next_run(cell: Cell, store: GridStore) -> tuple[float, int] | None:
    """The next ``(lr, seed)`` this cell needs, or ``None`` when it is finished."""
    base = cell.seeds[0]
    for lr in cell.grid:
        if store.find(**cell.key, lr=lr, seed=base) is None:
            return lr, base
    rows = _tuning_rows(cell, store)
    best = select_best(rows)
    widened = len({r["lr"] for r in rows}) - len(cell.grid)
    if best["lr_at_edge"] and widened < cell.widen and best["val_acc"] == best["val_acc"]:
        lrs = sorted(r["lr"] for r in rows)
        up = best["lr"] == lrs[-1]
        edge = lrs[-1] if up else lrs[0]
        if edge in cell.ladder and 0 <= cell.ladder.index(edge) + (1 if up else -1) < len(cell.ladder):
            return cell.ladder[cell.ladder.index(edge) + (1 if up else -1)], base
        return _round(edge * cell.lr_step if up else edge / cell.lr_step), base
    lr, missing, _ = choose_lr(cell, store)
    return (lr, missing[0]) if missing else None


def _mean_val(rows: list[dict[str, Any]]) -> float:
    vals = [r["val_acc"] for r in rows]
    return -1.0 if any(v != v for v in vals) else statistics.fmean(vals)  # NaN (a diverged seed) is worst


def choose_lr(cell: Cell, store: GridStore) -> tuple[float, list[int], list[float]]:
    """The cell's lr by validation mean over its seeds, evaluated lazily: ``(lr, seeds it still needs,
    lrs rejected)``.

    Every lr tried at the base seed scores its validation accuracy there, or its mean over all the cell's
    seeds once they have run. The lr with the best score (ties: the smaller lr) is the pick; while it still
    lacks seeds they are its next runs. So the final pick's mean over seeds is at least every other lr's
    score, and a pick whose seeds diverge loses to the next lr (``lrs rejected``: lrs whose seeds ran but
    that lost). Call only once the base-seed grid (and its widening) is finished."""
    tuned = _tuning_rows(cell, store)
    if not tuned:
        raise ValueError(f"choose_lr: no finished base-seed runs for the cell {cell.key}")
    scores: dict[float, tuple[float, bool]] = {}
    for r in tuned:
        rows = [store.find(**cell.key, lr=r["lr"], seed=s) for s in cell.seeds]
        complete = all(x is not None for x in rows)
        scores[r["lr"]] = (_mean_val(rows) if complete else _mean_val([r]), complete)
    pick = max(scores, key=lambda lr: (scores[lr][0], -lr))
    missing = [s for s in cell.seeds if store.find(**cell.key, lr=pick, seed=s) is None]
    rejected = sorted(lr for lr, (_, complete) in scores.items() if complete and lr != pick and len(cell.seeds) > 1)
    return pick, missing, rejected


def _train_one(cell: Cell, lr: float, seed: int, train_part: ImageDataset, val: ImageDataset, cfg: SweepConfig,
               store: GridStore) -> dict[str, Any]:
    key = dict(cell.key, lr=lr, seed=seed)
    if cell.twin is not None:
        twin = store.find(**cell.twin, lr=lr, seed=seed)
        if twin is not None:
            row = {**twin, **key, "reused_from": dict(cell.twin)}
            store.add(row)
            return row
    n = train_part.x_train.shape[0]
    lr_opt = lr / cell.lr_divisor
    tc = TrainConfig(dataset=train_part.name, model=cfg.model, optimizer=cell.method, shards=cell.shards, lr=lr_opt,
                     batch_size=cell.batch, epochs=cell.epochs, seed=seed, device=cfg.device)
    res = train(tc, None, data=train_part, val=val, progress=False, checkpoint=False)
    row = dict(key, lr_optimizer=lr_opt, schedule=tc.resolved_schedule, epochs=cell.epochs,
               steps=cell.epochs * -(-n // cell.batch), val_acc=res.val_acc, test_acc=res.test_acc,
               train_loss=res.history[-1]["train_loss"], seconds=round(res.seconds, 2))
    store.add(row)
    return row


def cell_result(cell: Cell, store: GridStore) -> dict[str, Any] | None:
    """The finished cell's row (``None`` while :func:`next_run` still has work for it):
    the validation winner, its test accuracy over seeds and the lrs tried."""
    if next_run(cell, store) is not None:
        return None
    tuning = _tuning_rows(cell, store)
    lr, _, rejected = choose_lr(cell, store)
    best = next(r for r in tuning if r["lr"] == lr)
    lrs = sorted(r["lr"] for r in tuning)
    seed_rows = [store.find(**cell.key, lr=lr, seed=s) for s in cell.seeds]
    accs = [r["test_acc"] for r in seed_rows]
    finite = [a for a in accs if a == a]
    return {**cell.key, **cell.extra, "lr": best["lr"], "lr_optimizer": best["lr_optimizer"],
            "epochs": best["epochs"], "steps": best["steps"], "val_acc": best["val_acc"],
            "val_acc_mean": _mean_val(seed_rows), "lrs_rejected": rejected,
            "test_acc": best["test_acc"],
            "test_acc_mean": statistics.fmean(finite) if finite else float("nan"),
            "test_acc_std": statistics.stdev(finite) if len(finite) > 1 else None,
            "test_accs": accs, "seeds": len(accs), "lr_at_grid_edge": len(lrs) >= 3 and lr in (lrs[0], lrs[-1]),
            "lrs_tried": sorted(r["lr"] for r in tuning), "seconds": sum(
                r.get("seconds", 0.0) for r in store.select(**cell.key) if "reused_from" not in r)}


def run_cells(cells: Iterable[Cell], train_part: ImageDataset, val: ImageDataset, cfg: SweepConfig,
              store: GridStore, *, progress: bool = True, desc: str = "sweep",
              on_cell=None) -> list[dict[str, Any]]:
    """Finish every cell (in the given order); ``on_cell(results_so_far)`` after each one."""
    from tqdm.auto import tqdm

    cells = list(cells)
    done: list[dict[str, Any]] = []
    bar = tqdm(cells, desc=desc, disable=not progress)
    for cell in bar:
        while (job := next_run(cell, store)) is not None:
            lr, seed = job
            bar.set_postfix_str(f"{cell.method}@{cell.batch} lr={lr:g} seed={seed}")
            _train_one(cell, lr, seed, train_part, val, cfg, store)
        done.append(cell_result(cell, store))
        if on_cell is not None:
            on_cell(done)
    bar.close()
    return done


def prepare_split(cfg: SweepConfig, data: ImageDataset | None) -> tuple[ImageDataset, ImageDataset]:
    """Load (unless given), subsample, add training-pixel noise, carve the validation split."""
    from ..data import with_laplace_noise

    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    data = subsample(data, cfg.train_size, cfg.test_size, seed=cfg.seed)
    if cfg.noise_eps is not None:
        data = with_laplace_noise(data, cfg.noise_eps, seed=cfg.seed)
    return train_val_split(data, cfg.val_fraction, seed=cfg.seed)


@dataclass
class SweepRun:
    """What :func:`run_sweep` hands back to the table that asked: the finished cells, the results
    JSON (as written), the store of every run and the split sizes."""

    cells: list[dict[str, Any]]
    results: dict[str, Any]
    store: GridStore
    train_examples: int
    val_examples: int
    test_examples: int


def run_sweep(cfg: SweepConfig, run_dir: Path, name: str, *, make_cells, make_results, config_extra,
              markdown, resume: bool, progress: bool, data: ImageDataset | None) -> SweepRun:
    """The run-folder part every table shares: validate, split, write ``config.json`` (refusing a
    differing one on ``resume``), finish every cell into ``grid.json``, rewrite ``<name>.json`` after each
    cell (``make_results(cells, done)``), then ``grid.csv``, ``<name>.csv`` and ``<name>.md`` (``markdown``).

    ``make_cells(n_train)`` lists the cells; ``config_extra(cells)`` adds keys to the saved config."""
    cfg.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    train_part, val = prepare_split(cfg, data)
    n_train = train_part.x_train.shape[0]
    cells = make_cells(n_train)
    config = {**cfg.to_dict(), "train_examples": n_train, "val_examples": val.x_test.shape[0],
              "test_examples": train_part.x_test.shape[0], **config_extra(cells)}
    if resume:
        check_saved_config(run_dir, config)
    write_json(run_dir / "config.json", config)
    store = GridStore(run_dir / "grid.json", resume)
    results_path = run_dir / f"{name}.json"
    best = run_cells(cells, train_part, val, cfg, store, progress=progress, desc=name,
                     on_cell=lambda done: write_json(results_path, make_results(cells, done)))
    results = make_results(cells, best)
    write_json(results_path, results)
    write_csv(run_dir / "grid.csv", store.rows)
    write_csv(run_dir / f"{name}.csv", [{k: v for k, v in r.items() if k not in ("test_accs", "lrs_tried", "lrs_rejected")}
                                        for r in best])
    atomic_write_text(run_dir / f"{name}.md", markdown(results) + "\n")
    return SweepRun(best, results, store, n_train, val.x_test.shape[0], train_part.x_test.shape[0])


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a sweep's results file (``table2.json`` or ``table6.json``), refusing anything that is not one."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable results JSON ({e.__class__.__name__}: {e}); "
                         "give the table2.json/table6.json a run wrote") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("cells"), list):
        raise ValueError(f"{path}: no 'cells' list; give the table2.json/table6.json a run wrote")
    if not all(isinstance(c, dict) for c in obj["cells"]):
        raise ValueError(f"{path}: every entry of 'cells' must be an object")
    return obj
