r"""Model poisoning against SSGD and robust aggregators: ``ssgd reproduce poisoning``.

The journal version of the paper claims SSGD resists model poisoning "to a certain
extent". This experiment measures it. ``N`` nodes (10) train one model with FedSGD on
IID shares of MNIST / Fashion-MNIST; in every round each node sends an update, ``k`` of
them malicious, and the server aggregates with one of

``mean``    the mean of the raw updates (plain FedSGD);
``ssgd``    the mean of the updates' unit vectors -- what an SSGD server computes
            (a node that sends something else is normalised, i.e. it can choose only a
            direction, the strongest thing it can do against strict validation);
``clip``    norm clipping to the round's median update norm, then the mean;
``median``  the coordinate-wise median;
``krum``    Krum (Blanchard et al. 2017) with ``f`` = 3 assumed attackers.

Attacks (on the malicious nodes' updates):

``boost``      model replacement: the gradient of a label-flipped batch, boosted x N;
``signflip``   the negated honest gradient;
``labelflip``  the gradient of a batch whose labels are flipped (y -> C-1-y), not boosted.

Every (dataset, attack, k, aggregator) runs from the same initial model with the same
batches; the learning rate is fixed per aggregator family (one for raw-gradient
aggregators, one for the unit-vector mean), chosen on clean runs, never on attacked ones.

What the numbers show (see docs/poisoning.md): SSGD bounds each node's influence on a
round to ``lr / N`` in norm whatever it sends, which defeats magnitude attacks (the boosted
model replacement); it does not stop direction attacks (sign flip, label flip), whose
unit vectors count as much as any honest one.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from ..transform import DEFAULT_EPS, batched_unit
from .contract import ExperimentResult

__all__ = ["PoisoningConfig", "AGGREGATORS", "ATTACKS", "aggregate", "run_one", "krum", "coordinate_median",
           "unit_mean", "clipped_mean", "table"]

AGGREGATORS = ("mean", "ssgd", "clip", "median", "krum")
ATTACKS = ("boost", "signflip", "labelflip")


@dataclass
class PoisoningConfig:
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    num_nodes: int = 10
    malicious: tuple[int, ...] = (0, 1, 3)
    attacks: tuple[str, ...] = ATTACKS
    aggregators: tuple[str, ...] = AGGREGATORS
    rounds: int = 300
    batch_size: int = 32
    lr: float = 0.2          # raw-gradient aggregators (mean, clip, median, krum); best clean of {0.05, 0.1, 0.2}
    ssgd_lr: float = 0.5     # the unit-vector mean; best clean of {0.1, 0.2, 0.5}
    boost: float | None = None  # model-replacement factor; None = num_nodes
    krum_f: int = 3
    model: str = "mlp"
    hidden: int = 128
    seeds: tuple[int, ...] = (0,)
    n_train: int | None = 10000  # subsample large training sets (Fashion-MNIST: 60k) for the time budget
    n_test: int | None = 2000
    eval_every: int = 25
    data_dir: str | None = None

    def validate(self) -> "PoisoningConfig":
        if self.num_nodes < 2:
            raise ValueError(f"Invalid num_nodes={self.num_nodes}; need >= 2")
        for k in self.malicious:
            if not 0 <= k < self.num_nodes:
                raise ValueError(f"Invalid malicious count k={k}; must be in [0, num_nodes={self.num_nodes})")
        for a in self.attacks:
            if a not in ATTACKS:
                raise ValueError(f"Unknown attack {a!r}; expected some of {ATTACKS}")
        for a in self.aggregators:
            if a not in AGGREGATORS:
                raise ValueError(f"Unknown aggregator {a!r}; expected some of {AGGREGATORS}")
        if "krum" in self.aggregators and self.num_nodes - self.krum_f - 2 < 1:
            raise ValueError(f"Krum needs num_nodes - f - 2 >= 1; got num_nodes={self.num_nodes}, f={self.krum_f}")
        if self.rounds < 1 or self.batch_size < 1:
            raise ValueError(f"rounds={self.rounds} and batch_size={self.batch_size} must be >= 1")
        if not (self.lr > 0 and self.ssgd_lr > 0):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, ssgd_lr={self.ssgd_lr}")
        if not self.datasets or not self.seeds or not self.malicious:
            raise ValueError(f"datasets={list(self.datasets)}, seeds={list(self.seeds)} and "
                             f"malicious={list(self.malicious)} must each name at least one value")
        if self.eval_every < 1:
            raise ValueError(f"Invalid eval_every={self.eval_every}; must be >= 1")
        return self

    @classmethod
    def quick(cls) -> "PoisoningConfig":
        """The CI-sized run: MNIST, k in {0, 1}, 60 rounds, 1 seed (about a minute on 2 cores)."""
        return cls(datasets=("mnist",), malicious=(0, 1), rounds=60, seeds=(0,), eval_every=20)

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            on_result: Callable[[dict], None] | None = None) -> ExperimentResult:
        """Run the grid into ``run_dir``: config.json, results.json (rewritten after every run, so
        ``resume=True`` continues where it stopped), results.csv, one PNG per dataset and report.md."""
        return _run(self, Path(run_dir), resume=resume, progress=progress, on_result=on_result)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- aggregators
def unit_mean(U: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Mean of the rows' unit vectors (SSGD; :func:`ssgd.batched_unit`). A row's contribution has norm <= 1 / n."""
    if U.ndim != 2:
        raise ValueError(f"unit_mean expects a (clients, dim) matrix of updates, got shape {tuple(U.shape)}")
    return batched_unit([U], scope="global", eps=eps)[0][0].mean(0)


def clipped_mean(U: Tensor, clip: float | None = None) -> Tensor:
    """Mean after clipping every row to norm ``clip`` (default: the median row norm)."""
    norms = torch.linalg.vector_norm(U, dim=1, keepdim=True)
    c = norms.median() if clip is None else torch.tensor(clip, dtype=U.dtype)
    return (U * torch.clamp(c / norms.clamp_min(1e-12), max=1.0)).mean(0)


def coordinate_median(U: Tensor) -> Tensor:
    return U.median(dim=0).values if U.shape[0] % 2 else U.sort(dim=0).values[U.shape[0] // 2 - 1:U.shape[0] // 2 + 1].mean(0)


def krum(U: Tensor, f: int) -> Tensor:
    """The row with the smallest sum of squared distances to its ``n - f - 2`` nearest rows."""
    n = U.shape[0]
    m = n - f - 2
    if m < 1:
        raise ValueError(f"Krum needs n - f - 2 >= 1; got n={n}, f={f}")
    d = torch.cdist(U.double(), U.double()).pow(2)
    d.fill_diagonal_(float("inf"))
    scores = d.topk(m, dim=1, largest=False).values.sum(1)
    return U[int(scores.argmin())]


def aggregate(name: str, U: Tensor, *, krum_f: int = 3) -> Tensor:
    if name == "mean":
        return U.mean(0)
    if name == "ssgd":
        return unit_mean(U)
    if name == "clip":
        return clipped_mean(U)
    if name == "median":
        return coordinate_median(U)
    if name == "krum":
        return krum(U, krum_f)
    raise ValueError(f"Unknown aggregator {name!r}; expected one of {AGGREGATORS}")


# ---------------------------------------------------------------------------- simulation
def _flat_grad(model, params, x, y) -> Tensor:
    loss = F.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return acc


def run_one(data, *, attack: str, k: int, aggregator: str, cfg: PoisoningConfig, seed: int,
            shares: list[Tensor]) -> dict[str, Any]:
    """One federated run; returns final accuracy and the accuracy curve."""
    from ..models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model, data.shape, data.num_classes, seed=seed,
                        **({"hidden": cfg.hidden} if cfg.model == "mlp" else {}))
    params = [p for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)
    boost = float(cfg.boost if cfg.boost is not None else cfg.num_nodes)
    lr = cfg.ssgd_lr if aggregator == "ssgd" else cfg.lr
    C = data.num_classes
    curve = []
    diverged = False
    for rnd in range(1, cfg.rounds + 1):
        rows = []
        for i, idx in enumerate(shares):
            b = idx[torch.randint(len(idx), (cfg.batch_size,), generator=gen)]
            x, y = data.x_train[b], data.y_train[b]
            if i < k and attack in ("boost", "labelflip"):
                g = _flat_grad(model, params, x, C - 1 - y)
                rows.append(g * boost if attack == "boost" else g)
            elif i < k and attack == "signflip":
                rows.append(-_flat_grad(model, params, x, y))
            else:
                rows.append(_flat_grad(model, params, x, y))
        agg = aggregate(aggregator, torch.stack(rows), krum_f=cfg.krum_f)
        if not torch.isfinite(agg).all():
            diverged = True
            break
        with torch.no_grad():
            off = 0
            for p in params:
                n = p.numel()
                p.sub_(lr * agg[off:off + n].view_as(p))
                off += n
        if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
            curve.append((rnd, _accuracy(model, data.x_test, data.y_test)))
    final = 1.0 / C if diverged else curve[-1][1]  # a diverged model is no better than chance
    return {"final_acc": final, "diverged": diverged, "curve": curve}


def _load(name: str, cfg: PoisoningConfig):
    from ..data import load_dataset, subsample

    data = load_dataset(name, cfg.data_dir if name != "mnist" else None)
    if cfg.n_train is not None or cfg.n_test is not None:
        data = subsample(data, n_train=cfg.n_train, n_test=cfg.n_test, seed=0)
    return data


def _run(cfg: PoisoningConfig, run_dir: Path, *, resume: bool, progress: bool,
         on_result: Callable[[dict], None] | None) -> ExperimentResult:
    from tqdm.auto import tqdm

    from ..data import DatasetError, iid_partition
    from ..report.io import check_saved_config, write_csv, write_json

    cfg.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_saved_config(run_dir, cfg.to_dict())
    write_json(run_dir / "config.json", cfg.to_dict())
    rows: list[dict[str, Any]] = _saved_rows(run_dir / "results.json") if resume else []
    done = {(r["dataset"], r["seed"], r["k"], r["attack"], r["aggregator"]) for r in rows}
    skipped: dict[str, str] = {}
    jobs = []
    for ds in cfg.datasets:
        for seed in cfg.seeds:
            for k in cfg.malicious:
                for attack in (cfg.attacks if k > 0 else ("none",)):
                    for agg in cfg.aggregators:
                        jobs.append((ds, seed, k, attack, agg))
    t0 = time.perf_counter()
    cache: dict[str, Any] = {}
    bar = tqdm(jobs, desc="poisoning", disable=not progress)
    for ds, seed, k, attack, agg in bar:
        if ds in skipped or (ds, seed, k, attack, agg) in done:
            continue
        if ds not in cache:
            try:
                cache[ds] = _load(ds, cfg)
            except (DatasetError, ValueError) as e:
                skipped[ds] = str(e)
                continue
        data = cache[ds]
        shares = iid_partition(data.y_train.shape[0], cfg.num_nodes, seed=seed)
        bar.set_postfix_str(f"{ds} {attack} k={k} {agg}")
        t1 = time.perf_counter()
        res = run_one(data, attack=attack, k=k, aggregator=agg, cfg=cfg, seed=seed, shares=shares)
        row = {"dataset": ds, "seed": seed, "attack": attack, "k": k, "aggregator": agg,
               "final_acc": res["final_acc"], "diverged": res["diverged"],
               "curve": res["curve"], "seconds": time.perf_counter() - t1}
        rows.append(row)
        if on_result is not None:
            on_result(row)
        write_json(run_dir / "results.json", {"rows": rows, "skipped_datasets": skipped, "partial": True})
    bar.close()
    seconds = time.perf_counter() - t0
    write_json(run_dir / "results.json", {"rows": rows, "skipped_datasets": skipped, "partial": False,
                                          "seconds": seconds})
    write_csv(run_dir / "results.csv", [{k2: v for k2, v in r.items() if k2 != "curve"} for r in rows])
    figures = _figures(run_dir, rows, cfg)
    report = _report(run_dir, rows, cfg, skipped)
    return ExperimentResult(run_dir=run_dir, report=report, tables={"runs": rows}, figures=figures,
                            summary={"skipped_datasets": skipped}, text=report.read_text(), seconds=seconds)


def _saved_rows(path: Path) -> list[dict[str, Any]]:
    """The finished runs of an interrupted run folder (``results.json``); refuses anything else."""
    import json

    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is unreadable ({e.__class__.__name__}); use a new run folder") from e
    keys = ("dataset", "seed", "k", "attack", "aggregator", "final_acc")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows):
        raise ValueError(f"{path} holds no list of poisoning runs; use a new run folder")
    return rows


def table(rows: list[dict], dataset: str, aggregators=AGGREGATORS) -> dict[tuple[str, int], dict[str, float]]:
    """{(attack, k): {aggregator: mean final accuracy over seeds}} for one dataset."""
    out: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in rows:
        if r["dataset"] != dataset:
            continue
        out.setdefault((r["attack"], r["k"]), {}).setdefault(r["aggregator"], []).append(r["final_acc"])
    return {key: {a: sum(v) / len(v) for a, v in d.items()} for key, d in out.items()}


def _figures(run_dir: Path, rows: list[dict], cfg: PoisoningConfig) -> dict[str, Path]:
    from ..report.io import new_figure, save_figure

    out = {}
    for ds in sorted({r["dataset"] for r in rows}):
        tab = table(rows, ds, cfg.aggregators)
        attacks = [a for a in cfg.attacks if any(key[0] == a for key in tab)]
        fig, axes = new_figure(1, max(len(attacks), 1), figsize=(4.2 * max(len(attacks), 1), 3.4), sharey=True,
                               squeeze=False)
        ks = sorted({r["k"] for r in rows if r["dataset"] == ds})
        width = 0.8 / max(len(ks), 1)
        for ax, attack in zip(axes[0], attacks):
            for j, k in enumerate(ks):
                key = ("none", 0) if k == 0 else (attack, k)
                vals = [tab.get(key, {}).get(a, float("nan")) for a in cfg.aggregators]
                ax.bar([i + j * width for i in range(len(cfg.aggregators))], vals, width, label=f"k={k}")
            ax.set_xticks([i + width * (len(ks) - 1) / 2 for i in range(len(cfg.aggregators))])
            ax.set_xticklabels(cfg.aggregators)
            ax.set_title(f"{ds}: {attack}")
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel("final test accuracy")
        axes[0][-1].legend(fontsize=8)
        out[ds] = save_figure(fig, run_dir / f"poisoning_{ds}.png")
    return out


def _report(run_dir: Path, rows: list[dict], cfg: PoisoningConfig, skipped: dict[str, str]) -> Path:
    from ..report.io import atomic_write_text

    lines = ["# Model poisoning: SSGD vs robust aggregators", "",
             f"{cfg.num_nodes} nodes, FedSGD, {cfg.rounds} rounds, batch {cfg.batch_size} per node, model "
             f"{cfg.model}; lr {cfg.lr} (raw-gradient aggregators), {cfg.ssgd_lr} (SSGD unit mean); "
             f"boost x{cfg.boost or cfg.num_nodes}; Krum f={cfg.krum_f}; seeds {list(cfg.seeds)}.",
             "Final test accuracy (mean over seeds). k = number of malicious nodes.", ""]
    for ds in sorted({r["dataset"] for r in rows}):
        tab = table(rows, ds, cfg.aggregators)
        lines += [f"## {ds}", "", "| attack | k | " + " | ".join(cfg.aggregators) + " |",
                  "|---|---:|" + "---:|" * len(cfg.aggregators)]
        keys = [("none", 0)] + [(a, k) for a, k in itertools.product(cfg.attacks, sorted(set(cfg.malicious) - {0}))]
        for key in keys:
            if key not in tab:
                continue
            vals = " | ".join(f"{tab[key].get(a, float('nan')):.3f}" for a in cfg.aggregators)
            lines.append(f"| {key[0]} | {key[1]} | {vals} |")
        lines += ["", f"![{ds}](poisoning_{ds}.png)", ""]
    for ds, why in skipped.items():
        lines += [f"Skipped {ds}: {why}", ""]
    lines += ["Files: [config.json](config.json), [results.csv](results.csv), [results.json](results.json)."]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
