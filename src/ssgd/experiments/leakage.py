"""Gradient leakage, measured: attacks x defences x batch sizes on real images.

:func:`attack_once` is one attack on one shared update (``ssgd attack``);
:class:`LeakageConfig` is the grid behind ``ssgd reproduce leakage`` (the experiment
contract of :mod:`ssgd.experiments.contract`). For every dataset, model state (untrained /
briefly trained), batch size, attack and defence it attacks the same seeded images with the
attacks' own (strong) defaults, scores every reconstruction (optimal assignment, then PSNR /
SSIM / MSE, label accuracy) and writes per-image and per-cell tables, image grids, a
budget-vs-PSNR curve, a privacy-vs-accuracy plot and ``report.md``.

* **Cells** -- ``(dataset, state, batch, attack, defence)`` -- are the unit of work and of
  resumption: each finished cell is one JSON file under ``cells/`` (written atomically), and
  ``run(..., resume=True)`` skips the cells already there. Cells of one grid row run stacked
  (all pending defences and targets in one optimisation).
* **Order**: ``none`` and the SSGD rows first (``images`` images per cell), untrained before
  trained, batch 1 before 4 before 8; then the other defences (``other_images`` per cell).
* **Budgets**: every cell records its attack spec, iterations actually run, restarts and
  init. A cell whose mean PSNR is below ``confirm_below`` (10 dB) is rerun with twice the
  iterations and both results are kept; it counts as protection only if both stay below.
* Every defence faces an attacker told about it (the threat model "the attacker knows the
  defence"; :data:`AWARE`, :func:`adapt_attack`): ``dlg-unit`` and ``inverting-layer`` use the
  SSGD defence's scope and shard count (searching the label-to-shard deal), ``analytic`` rescales
  under layer scope, ``dlg-aware`` matches only the entries pruning kept, a surrogate of the sign,
  or the mean of :data:`AWARE_DRAWS` noisy releases; ``analytic-aware`` (:data:`ANALYTIC_AWARE`) reads
  the sign mask or fits the mean of the same releases knowing their noise std; where an aware attack
  has nothing to add it is n/a.
  A defence is protected on a cell only if every attack held (:func:`_verdict`).
* Cell files are hostile input: only ``cells/<cell id>.json`` of this config, with the grid's
  image count and finite numbers in range, are read (:func:`_read_cells`); export refuses
  anything else in one line. ``ssgd-shards:m=M`` cells whose batch is not a multiple of ``M`` are not run
  (marked n/a): the defence needs ``M`` shards of equal size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import INITS, AttackMeta, get_attack
from ..attacks.base import Attack
from ..data import ImageDataset, load_dataset
from ..defenses import Defense, get_defense
from ..loop import train_loop
from ..metrics import PSNR_MAX, label_accuracy, match, mse_per_image, psnr_per_image, ssim_per_image
from ..models import build_model, build_optimizer, evaluate
from ..report.io import atomic_write_text, check_saved_config, new_figure, save_figure, write_csv, write_json
from ..report.validate import bounded_text, md_text
from ..specs import format_spec, parse_spec
from .contract import ExperimentResult

__all__ = ["LeakageConfig", "DEFAULT_ATTACKS", "DEFAULT_DEFENSES", "PRIMARY_DEFENSES", "RESULT_KEYS", "adapt_attack",
           "attack_once", "build_state_model", "cell_images", "cells_markdown", "export_results", "prior_psnr", "results_json",
           "run_leakage", "summarize", "train_with_defense", "worst_case_markdown"]

DEFAULT_ATTACKS = ["dlg", "idlg", "dlg-unit", "inverting", "inverting-layer", "analytic", "dlg-aware", "analytic-aware"]
ANALYTIC_ATTACKS = ("analytic", "analytic-aware")  # closed form on the first linear layer: attack the MLP
PRIMARY_DEFENSES = ["none", "ssgd-global", "ssgd-layer", "ssgd-shards:m=4"]
DEFAULT_DEFENSES = PRIMARY_DEFENSES + ["prune:p=90", "noise:sigma=0.01", "sign", "fp16", "dp:clip=1,sigma=1",
                                       "ssgd-noise:sigma=0.01"]
OPT_ATTACKS = ("dlg", "idlg", "dlg-unit", "dlg-aware")
INV_ATTACKS = ("inverting", "inverting-layer")
SSGD_VARIANTS = ("ssgd-global", "ssgd-layer", "ssgd-shards")
# every defence's aware attacker (what the grid's verdict counts beside the unaware attacks): the SSGD
# variants are attacked by dlg-unit and inverting-layer told the scope and shards (and searching the
# label-to-shard deal); the baselines by dlg-aware with the parameters below. A malicious server may ask a
# node for the same batch again (docs/threat-model.md), so against additive noise the attacker averages
# AWARE_DRAWS releases (noise std / 4).
AWARE_DRAWS = 16
AWARE = {"prune": {"mask": "true"}, "sign": {"sign": "true"}, "noise": {"draws": str(AWARE_DRAWS)},
         "dp": {"draws": str(AWARE_DRAWS)}, "ssgd-noise": {"draws": str(AWARE_DRAWS), "scope": "global"}}
# the closed-form attack told the same defences (red team, issue 24): the sign mask, or the noise-debiased least
# squares over the same AWARE_DRAWS releases; its noise std per release is set from the defence (adapt_attack)
ANALYTIC_AWARE = ("sign", "noise", "dp", "ssgd-noise")
AWARE_ELSEWHERE = {"none": "no defence to know", "fp16": "dlg and idlg already match the rounded gradient",
                   **{v: "its aware attacks are dlg-unit and inverting-layer (told scope and shards)"
                      for v in SSGD_VARIANTS}}


def _is_primary(defense: str) -> bool:
    return parse_spec(defense)[0] in ("none",) + SSGD_VARIANTS


@dataclass
class LeakageConfig:
    """The grid. ``dlg_iters`` / ``inverting_iters`` / ``restarts`` / ``init`` ``None`` mean the attacks'
    own defaults (documented in :mod:`ssgd.attacks.optimization`). ``curve_budgets``: fractions of the
    default budget at which the strongest attack against each SSGD variant is rerun for the
    budget-vs-PSNR curve (``curve_images`` images; empty: no curve)."""

    datasets: list[str] = field(default_factory=lambda: ["mnist", "fashion-mnist"])
    states: list[str] = field(default_factory=lambda: ["untrained", "trained"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8])
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    images: int = 8
    other_images: int = 4
    dlg_iters: int | None = None
    inverting_iters: int | None = None
    restarts: int | None = None
    init: str | None = None
    confirm_below: float = 10.0
    curve_budgets: list[float] = field(default_factory=list)  # e.g. [0.05, 0.1, 0.25, 0.5, 1, 2]; [] = no curve
    curve_images: int = 4
    train_epochs: int = 5
    train_images: int = 4000
    accuracy_model: str = "convnet"
    accuracy_epochs: int = 2
    seed: int = 0
    budget_minutes: float = 0.0  # 0: no limit; else stop starting new cells after this many minutes
    is_quick: bool = False

    @classmethod
    def quick(cls, **kw) -> "LeakageConfig":
        """Minutes on a CPU: MNIST, untrained, B = 1 and 4, 4 images, small budgets."""
        base = dict(datasets=["mnist"], states=["untrained"], batch_sizes=[1, 4], images=4, other_images=4,
                    dlg_iters=25, inverting_iters=30, restarts=1, curve_budgets=[], train_epochs=1,
                    train_images=500, accuracy_epochs=1, is_quick=True)
        base.update(kw)
        return cls(**base)

    def validate(self) -> "LeakageConfig":
        if self.images < 1 or self.other_images < 1:
            raise ValueError(f"images={self.images} and other_images={self.other_images} must be >= 1")
        for b in self.batch_sizes:
            if b < 1 or self.images % b:
                raise ValueError(f"batch size {b} must be >= 1 and divide images={self.images}")
        for s in self.states:
            if s not in ("untrained", "trained"):
                raise ValueError(f"unknown model state {s!r}; expected 'untrained' or 'trained'")
        for name, v in (("dlg_iters", self.dlg_iters), ("inverting_iters", self.inverting_iters),
                        ("restarts", self.restarts)):
            if v is not None and v < 1:
                raise ValueError(f"{name}={v} must be >= 1 (or None for the attack's default)")
        for a in self.attacks:
            get_attack(a)
            adapt_attack(a, get_defense("none"), 1, **self._overrides(parse_spec(a)[0], 1.0))
        for d in self.defenses:
            get_defense(d)
        if not self.confirm_below >= 0:
            raise ValueError(f"confirm_below={self.confirm_below} must be >= 0 (dB)")
        if self.curve_images < 1:
            raise ValueError(f"curve_images={self.curve_images} must be >= 1")
        if any(not f > 0 for f in self.curve_budgets):
            raise ValueError(f"curve_budgets={self.curve_budgets} must be positive fractions of the default budget")
        if self.budget_minutes < 0:
            raise ValueError(f"budget_minutes={self.budget_minutes} must be >= 0 (0: no limit)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _overrides(self, attack_name: str, factor: float) -> dict[str, Any]:
        """Budget overrides for one attack, the iterations scaled by ``factor`` (confirmation, curves)."""
        out: dict[str, Any] = {}
        if attack_name in OPT_ATTACKS + INV_ATTACKS:
            it = self.dlg_iters if attack_name in OPT_ATTACKS else self.inverting_iters
            if it is None:
                it = getattr(get_attack(attack_name), "iters")
            out["iters"] = max(1, int(round(it * factor)))
            if self.restarts is not None:
                out["restarts"] = self.restarts
            if self.init is not None:
                out["init"] = self.init
        return out

    def images_for(self, defense: str, batch: int) -> int:
        """Images per cell: ``images`` for ``none`` and the SSGD rows, else ``other_images`` (rounded up to a
        multiple of the batch size)."""
        n = self.images if _is_primary(defense) else self.other_images
        return -(-n // batch) * batch

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            shard: tuple[int, int] = (0, 1), first: list[str] | tuple[str, ...] = ()) -> ExperimentResult:
        """Run the grid in ``run_dir``. ``shard=(k, n)``: only every n-th job from the k-th (0-based), so
        n processes with the same config and folder split the grid between them without running a cell
        twice; shard 0 also runs the budget curve (after its jobs) and the accuracy runs. ``first``: the
        jobs of these attacks (names from ``attacks``) run before the others, each group in grid order
        (the order of work only: the cells are the same)."""
        k, n = shard
        if not (isinstance(k, int) and isinstance(n, int) and n >= 1 and 0 <= k < n):
            raise ValueError(f"shard={shard!r}: give (k, n) with 0 <= k < n, e.g. (0, 2) and (1, 2) for two "
                             "processes")
        names = [parse_spec(a)[0] for a in self.attacks]
        bad = [a for a in first if a not in names]
        if bad:
            raise ValueError(f"first={bad}: not attacks of this grid; pick from {', '.join(names)}")
        return _run_grid(self, Path(run_dir), resume=resume, progress=progress, shard=(k, n), first=tuple(first))


def adapt_attack(attack: str, defense: Defense, batch_size: int, **overrides) -> Attack:
    """The attack as run against ``defense``: SSGD-aware attacks without explicit parameters get the
    defence's scope / shard count (they know the defence); ``overrides`` (iters, restarts, init) are
    applied where the attack has them and the spec does not set them. The result is validated."""
    name, params = parse_spec(attack)
    if name in ("dlg-unit", "inverting-layer"):
        if defense.name == "ssgd-layer":
            params.setdefault("scope", "layer")
        elif defense.name == "ssgd-shards":
            params.setdefault("scope", defense.scope)
            params.setdefault("shards", str(defense.m))
    if name == "dlg-aware":
        for k, v in AWARE.get(defense.name, {}).items():
            params.setdefault(k, v)
    if name == "analytic-aware":
        if defense.name == "sign":
            params.setdefault("sign", "true")
        elif defense.name in ANALYTIC_AWARE:
            # the noise std of one release: sigma, or DP's sigma * clip divided by the batch size
            std = defense.sigma * defense.clip / batch_size if defense.name == "dp" else defense.sigma
            params.setdefault("noise", repr(float(std)))
            params.setdefault("draws", str(AWARE_DRAWS))
    if name == "analytic" and (defense.name == "ssgd-layer" or
                               (defense.name == "ssgd-shards" and defense.scope == "layer")):
        params.setdefault("rescale", "true")
    known = {f.name for f in dataclasses.fields(type(get_attack(name))) if f.init}
    for k, v in overrides.items():
        if v is not None and k in known and k not in params:
            params[k] = str(v)
    return get_attack(format_spec(name, params))


def shards_fit(defense: Defense, batch_size: int) -> bool:
    """SSGD(m) needs ``m`` equal shards: ``m`` divides the batch (never silently lowered)."""
    return defense.name != "ssgd-shards" or (defense.m <= batch_size and batch_size % defense.m == 0)


def not_applicable(attack: str, defense: Defense, batch_size: int) -> str | None:
    """Why the grid does not run ``attack`` against ``defense`` at this batch size, or None when it does."""
    if not shards_fit(defense, batch_size):
        return f"{defense.spec} needs a batch that is a multiple of m"
    if parse_spec(attack)[0] == "dlg-aware" and defense.name not in AWARE:
        return f"dlg-aware against {defense.name}: {AWARE_ELSEWHERE.get(defense.name, 'no aware variant')}"
    if parse_spec(attack)[0] == "analytic-aware" and defense.name not in ANALYTIC_AWARE:
        return f"analytic-aware against {defense.name}: the analytic attack already sees all it can use"
    return None


def shared_for(attack: Attack, defense: Defense, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator) -> list[torch.Tensor]:
    """What the attacker holds: the node's shared update of ``(x, y)``, or, for an attack that asks for the
    same batch ``draws`` times (noise-aware), the mean of that many releases (fresh noise each)."""
    draws = getattr(attack, "draws", 1)
    first = defense.shared_update(model, x, y, generator=generator)
    if draws == 1:
        return first
    total = [t.double() for t in first]
    for _ in range(draws - 1):
        total = [a + t.double() for a, t in zip(total, defense.shared_update(model, x, y, generator=generator))]
    return [(t / draws).to(f.dtype) for t, f in zip(total, first)]


def _subset(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    if data.x_train.shape[0] <= n:
        return data
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return ImageDataset(data.name, data.x_train[idx], data.y_train[idx], data.x_test, data.y_test, data.num_classes)


def build_state_model(model: str, state: str, data: ImageDataset, *, seed: int = 0, epochs: int = 5,
                      train_images: int = 4000, progress: bool = False) -> tuple[nn.Module, float]:
    """``(model, test accuracy)``: freshly initialised (``untrained``) or trained briefly (Adam, lr 1e-3,
    batch 32, ``epochs`` epochs on ``train_images`` training images; DLG's sigmoid LeNet needs about
    three such epochs before it starts to learn)."""
    if state == "untrained":
        net = build_model(model, data.shape, data.num_classes, seed=seed)
        acc, _ = evaluate(net, data.x_test[:2000], data.y_test[:2000])
        return net, acc
    if state != "trained":
        raise ValueError(f"unknown model state {state!r}; expected 'untrained' or 'trained'")
    from .train import TrainConfig, train

    sub = _subset(data, train_images, seed)
    res = train(TrainConfig(dataset=data.name, model=model, optimizer="adam", lr=1e-3, epochs=epochs, batch_size=32,
                            seed=seed),
                data=ImageDataset(sub.name, sub.x_train, sub.y_train, sub.x_test[:2000], sub.y_test[:2000],
                                  sub.num_classes), progress=progress)
    return res.model, res.test_acc


def cell_images(data: ImageDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` evaluation images of every cell (training split, seeded; a cell with fewer images takes
    the first ones). Attack defaults were tuned on test-split images, disjoint from these."""
    g = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return data.x_train[idx], data.y_train[idx]


def prior_psnr(data: ImageDataset, n: int, seed: int) -> float:
    """Mean PSNR of the attacker's prior alone -- the test split's mean image, the optimisation
    attacks' ``mean`` init -- against the ``n`` evaluation images: what a reconstruction that
    recovered nothing of the targets scores. Cells near it leaked nothing beyond the prior."""
    x, _ = cell_images(data, n, seed)
    prior = data.x_test.mean(0, keepdim=True).expand_as(x)
    return float(statistics.fmean(psnr_per_image(prior, x)))


def _score(rec, x, y) -> tuple[list[dict[str, float]], torch.Tensor]:
    perm = match(rec.images, x)
    r = rec.images.detach().float()[perm].clamp(0, 1)
    lab = label_accuracy(rec.labels, y) if rec.labels is not None else float("nan")
    m, p, s = mse_per_image(r, x), psnr_per_image(r, x), ssim_per_image(r, x)
    return [{"psnr": p[i], "ssim": s[i], "mse": m[i], "label_acc": lab} for i in range(x.shape[0])], r


def _budget(a: Attack, rec) -> dict[str, Any]:
    return {"attack_spec": a.spec, "iterations": int(rec.iterations), "restarts": int(rec.restarts),
            "init": rec.init or "-"}


def attack_once(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, defense: str, *,
                iters: int | None = None, seed: int = 0, labels_known: bool = False, mean_image=None,
                public_images=None, progress: bool = False) -> dict[str, Any]:
    """One attack on the shared update of batch ``(x, y)``: returns scores, the budget and the matched
    reconstruction. ``ssgd-shards:m=M`` needs a batch that is a multiple of ``M`` (ValueError otherwise)."""
    d = get_defense(defense)
    if not shards_fit(d, x.shape[0]):
        raise ValueError(f"defence {d.spec}: m={d.m} shards need a batch size that is a multiple of {d.m}, got "
                         f"{x.shape[0]}; use --batch-size {d.m * max(1, x.shape[0] // d.m)} or lower m")
    if iters is not None and iters < 1:
        raise ValueError(f"iters={iters} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    a = adapt_attack(attack, d, x.shape[0], iters=iters)
    shared = shared_for(a, d, model, x, y, gen)
    meta = AttackMeta(tuple(x.shape[1:]), x.shape[0], int(shared[-1].shape[0]),
                      labels=y.clone() if labels_known else None, seed=seed, mean_image=mean_image,
                      public_images=public_images)
    rec = a.reconstruct_batch(model, [shared], [meta], progress=progress)[0]
    per, matched = _score(rec, x, y)
    out = {k: float(sum(r[k] for r in per) / len(per)) for k in ("psnr", "ssim", "mse")}
    out["label_acc"] = per[0]["label_acc"]
    out.update(attack=a.spec, defense=d.spec, seconds=rec.seconds, iterations=rec.iterations,
               restarts=rec.restarts, init=rec.init or "-", loss=rec.loss,
               recovered_labels=rec.labels.tolist() if rec.labels is not None else None, true_labels=y.tolist(),
               per_image=per)
    return {"result": out, "reconstruction": matched}


def _stats(vals: list[float]) -> tuple[float, float]:
    v = [x for x in vals if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(statistics.fmean(v)), float(statistics.pstdev(v)) if len(v) > 1 else 0.0


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-cell mean and spread (population std over images) of PSNR/SSIM/MSE and label accuracy."""
    keys = ("dataset", "state", "model", "batch", "attack", "defense")
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in cells.items():
        row = dict(zip(keys, key))
        for m in ("psnr", "ssim", "mse", "label_acc"):
            mean, sd = _stats([r[m] for r in rs])
            row[f"{m}_mean"], row[f"{m}_std"] = mean, sd
        row["images"] = len(rs)
        row["seconds_per_attack"] = float(statistics.fmean(r["seconds"] for r in rs))
        for k in ("attack_spec", "iterations", "restarts", "init"):
            row[k] = rs[0].get(k)
        out.append(row)
    return out


def train_with_defense(defense: str, data: ImageDataset, *, model: str = "convnet", epochs: int = 2,
                       batch_size: int = 64, seed: int = 0, train_images: int = 4000, progress: bool = False) -> float:
    """Test accuracy of ``model`` trained with every shared update replaced by ``defense``'s.

    The default is the project's ReLU ConvNet (DLG's sigmoid LeNet barely moves under plain SGD
    in a few epochs, which would hide every defence's cost). Plain SGD steps along the shared
    update; the learning rate suits its scale: 0.1 for
    gradient-scale updates (the project's SGD default), 0.5 for unit vectors (its SSGD default;
    divided by m for a sum of m unit vectors), 0.001 for signs. With ``ssgd-shards:m=M`` a last
    batch whose size is not a multiple of ``M`` is skipped (never trained with fewer shards)."""
    from tqdm.auto import tqdm

    d = get_defense(defense)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    sub = _subset(data, train_images, seed)
    net = build_model(model, data.shape, data.num_classes, seed=seed)
    lr = {"ssgd-global": 0.5, "ssgd-layer": 0.5, "ssgd-noise": 0.5, "sign": 1e-3}.get(d.name, 0.1)
    if d.name == "ssgd-shards":
        lr = 0.5 / d.m
    opt = build_optimizer("sgd", net.parameters(), lr=lr, momentum=0.0)
    n = sub.x_train.shape[0]
    bar = tqdm(total=epochs * -(-n // batch_size), desc=f"train {d.spec}", disable=not progress, leave=False)

    def batches(epoch: int):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            bar.update(1)
            if shards_fit(d, idx.numel()):
                yield sub.x_train[idx], sub.y_train[idx]

    def grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:  # the step is the shared update
        for p, g in zip(model.parameters(), d.shared_update(model, x, y, generator=noise_gen)):
            p.grad = g

    train_loop(net, opt, batches, epochs=epochs, grad=grad)
    bar.close()
    acc, _ = evaluate(net, data.x_test[:2000], data.y_test[:2000])
    return acc


# ----------------------------------------------------------------------------------------- the grid

def _slug(text: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in text)
    return f"{safe[:60]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _cell_path(run_dir: Path, ds: str, st: str, b: int, attack: str, defense: str) -> Path:
    return run_dir / "cells" / f"{ds}_{st}_b{b}_{_slug(attack)}_{_slug(defense)}.json"


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a foreign or damaged file: the cell is simply run again
    return obj if isinstance(obj, dict) else None


class _Grid:
    """State of one grid run: data, models, finished cells, figures."""

    def __init__(self, cfg: LeakageConfig, run_dir: Path, progress: bool):
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.t0 = time.perf_counter()
        self.datasets: dict[str, ImageDataset] = {}
        self.skipped: list[str] = []
        for name in cfg.datasets:
            try:
                self.datasets[name] = load_dataset(name)
            except (ValueError, OSError) as e:
                self.skipped.append(f"{name}: {e}")
        self.priors = {name: prior_psnr(d, cfg.images, cfg.seed) for name, d in self.datasets.items()}
        self.models: dict[tuple[str, str, str], nn.Module] = {}
        self.model_acc: dict[str, float] = {}
        self.stopped = False

    def model(self, ds: str, st: str, mname: str) -> nn.Module:
        if (ds, st, mname) not in self.models:
            net, acc = build_state_model(mname, st, self.datasets[ds], seed=self.cfg.seed,
                                         epochs=self.cfg.train_epochs, train_images=self.cfg.train_images,
                                         progress=self.progress)
            self.models[(ds, st, mname)] = net
            self.model_acc[f"{ds}/{st}/{mname}"] = acc
        return self.models[(ds, st, mname)]

    def out_of_time(self) -> bool:
        cfg = self.cfg
        if cfg.budget_minutes and (time.perf_counter() - self.t0) / 60 > cfg.budget_minutes:
            self.stopped = True
        return self.stopped

    def attack_cells(self, ds: str, st: str, b: int, attack: str, defenses: list[str], factor: float = 1.0,
                     n_images: int | None = None) -> dict[str, dict[str, Any]]:
        """Attack ``defenses`` (stacked by attack configuration) at ``factor`` x the budget; per defence the
        per-image rows, the budget and the first target's matched reconstruction."""
        cfg, data = self.cfg, self.datasets[ds]
        aname = parse_spec(attack)[0]
        net = self.model(ds, st, "mlp" if aname in ANALYTIC_ATTACKS else "lenet")
        mean_image = data.x_test.mean(0)  # the attacker's prior: public images, not the targets
        groups: dict[str, tuple[Attack, list[tuple[str, Defense, int]]]] = {}
        for dspec in defenses:
            d = get_defense(dspec)
            a = adapt_attack(attack, d, b, **cfg._overrides(aname, factor))
            n = n_images if n_images is not None else cfg.images_for(dspec, b)
            groups.setdefault(a.spec, (a, []))[1].append((dspec, d, n))
        out: dict[str, dict[str, Any]] = {}
        for spec, (a, members) in groups.items():
            shared, metas, owners = [], [], []
            for dspec, d, n in members:
                x_all, y_all = cell_images(data, n, cfg.seed)
                xs, ys = x_all.reshape(n // b, b, *data.shape), y_all.reshape(n // b, b)
                di = cfg.defenses.index(dspec) if dspec in cfg.defenses else 0
                for k in range(n // b):
                    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + di * 1009 + k)
                    shared.append(shared_for(a, d, net, xs[k], ys[k], gen))
                    metas.append(AttackMeta(tuple(data.shape), b, data.num_classes, seed=cfg.seed,
                                            mean_image=mean_image, public_images=data.x_test))
                    owners.append((dspec, d, k, xs[k], ys[k]))
            recs = a.reconstruct_batch(net, shared, metas, progress=self.progress)
            for rec, (dspec, d, k, x, y) in zip(recs, owners):
                per, matched = _score(rec, x, y)
                cell = out.setdefault(dspec, {"rows": [], "budget": _budget(a, rec), "defense_spec": d.spec,
                                              "model": "mlp" if aname in ANALYTIC_ATTACKS else "lenet"})
                if k == 0:
                    cell["first"] = matched
                for i, p in enumerate(per):
                    cell["rows"].append({"target": k, "image": k * b + i, "label": int(y[i]), **p,
                                         "seconds": rec.seconds})
        return out

    def run_job(self, ds: str, st: str, b: int, attack: str, defenses: list[str], resume: bool) -> bool:
        """Run the job's pending cells; False when there was nothing to run (all finished or n/a)."""
        cfg = self.cfg
        aname = parse_spec(attack)[0]
        pending = []
        for dspec in defenses:
            path = _cell_path(self.run_dir, ds, st, b, attack, dspec)
            reason = not_applicable(attack, get_defense(dspec), b)
            if reason is not None:
                if not path.exists():
                    write_json(path, {"dataset": ds, "state": st, "batch": b, "attack": aname, "defense": dspec,
                                      "status": "n/a", "reason": reason})
                continue
            if resume and path.exists() and (c := _load_json(path)) is not None and c.get("status") == "done" \
                    and _cell_problem(c, (ds, st, b, attack, dspec), cfg) is None:
                continue
            pending.append(dspec)
        if not pending:
            return False
        first = self.attack_cells(ds, st, b, attack, pending)
        low = [d for d in pending if aname in OPT_ATTACKS + INV_ATTACKS
               and statistics.fmean(r["psnr"] for r in first[d]["rows"]) < cfg.confirm_below]
        second = self.attack_cells(ds, st, b, attack, low, factor=2.0) if low else {}
        for dspec in pending:
            c = first[dspec]
            psnr = statistics.fmean(r["psnr"] for r in c["rows"])
            cell = {"dataset": ds, "state": st, "batch": b, "attack": aname, "defense": dspec,
                    "defense_spec": c["defense_spec"], "model": c["model"], "status": "done",
                    "images": len(c["rows"]), **c["budget"], "rows": c["rows"], "psnr_mean": psnr}
            if dspec in second:
                c2 = second[dspec]
                cell["confirm"] = {**c2["budget"], "rows": c2["rows"],
                                   "psnr_mean": statistics.fmean(r["psnr"] for r in c2["rows"])}
            # protection: below the threshold at the default budget and at twice that budget
            cell["protects"] = _protects(cell, cfg.confirm_below)
            # the first image of target 0 as reconstructed (matched), for the image grid
            cell["first_image"] = [round(v, 4) for v in c["first"][0].flatten().tolist()]
            write_json(_cell_path(self.run_dir, ds, st, b, attack, dspec), cell)
        return True


def _jobs(cfg: LeakageConfig, datasets: list[str]) -> list[tuple[str, str, int, str, list[str]]]:
    """(dataset, state, batch, attack, defences), most important first: per dataset, ``none`` and the SSGD
    rows before the other defences; untrained before trained; small batches first."""
    primary = [d for d in cfg.defenses if _is_primary(d)]
    other = [d for d in cfg.defenses if not _is_primary(d)]
    jobs = []
    for ds in datasets:
        for group in (primary, other):
            if not group:
                continue
            for st in cfg.states:
                for b in cfg.batch_sizes:
                    for a in cfg.attacks:
                        jobs.append((ds, st, b, a, group))
    return jobs


_CELL_KEYS = {"dataset": str, "state": str, "batch": int, "attack": str, "defense": str}
_DONE_KEYS = {"defense_spec": str, "model": str, "attack_spec": str, "iterations": int, "restarts": int,
              "init": str, "psnr_mean": (int, float), "protects": bool, "rows": list}
_ROW_KEYS = ("target", "image", "label", "psnr", "ssim", "mse", "label_acc", "seconds")
# the range of every per-image number a run writes (PSNR of images in [0, 1] is capped at PSNR_MAX; float32
# SSIM of identical images may exceed 1 by a rounding error)
_ROW_RANGES = {"psnr": (0.0, PSNR_MAX), "ssim": (-1.0 - 1e-5, 1.0 + 1e-5), "mse": (0.0, 1.0), "label_acc": (0.0, 1.0),
               "seconds": (0.0, 1e7)}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rows_problem(rows: Any, n: int, b: int) -> str | None:
    if not isinstance(rows, list) or len(rows) != n:
        return f"{len(rows) if isinstance(rows, list) else 'no list of'} rows where the grid has {n} images"
    for r in rows:
        if not isinstance(r, dict) or set(r) != set(_ROW_KEYS):
            return "a row whose fields are not " + ", ".join(_ROW_KEYS)
        if not all(_is_int(r[k]) for k in ("target", "image", "label")) or not (
                0 <= r["image"] < n and 0 <= r["target"] < n // b and 0 <= r["label"] < 100_000):
            return "a row with target/image/label outside the cell"
        for k, (lo, hi) in _ROW_RANGES.items():
            if not _is_num(r[k]) or not math.isfinite(r[k]) or not lo <= r[k] <= hi:
                return f"a row with {k}={r[k]!r} (expected a finite number in [{lo:g}, {hi:g}])"
    return None


def _mean_problem(obj: dict, what: str) -> str | None:
    v = obj.get("psnr_mean")
    if not _is_num(v) or not math.isfinite(v):
        return f"{what}psnr_mean={v!r} is not a finite number"
    if abs(v - statistics.fmean(r["psnr"] for r in obj["rows"])) > 1e-6 * max(1.0, abs(v)):
        return f"{what}psnr_mean={v!r} is not the mean of its rows"
    return None


def _cell_problem(c: Any, key: tuple[str, str, int, str, str], cfg: LeakageConfig) -> str | None:
    """Why the file at cell id ``key`` = (dataset, state, batch, attack as in the config, defence) is not
    that cell as a run writes it -- an n/a marker where the grid says n/a, or a finished cell with the
    grid's image count and finite numbers in range -- or None when it is."""
    ds, st, b, attack, defense = key
    if not isinstance(c, dict) or not all(isinstance(c.get(k), t) and not isinstance(c.get(k), bool)
                                          for k, t in _CELL_KEYS.items()):
        return "not a cell file (dataset, state, batch, attack, defense)"
    if (c["dataset"], c["state"], c["batch"], c["attack"], c["defense"]) != (ds, st, b, parse_spec(attack)[0],
                                                                             defense):
        return "its fields name another cell than its file name"
    reason = not_applicable(attack, get_defense(defense), b)
    if c.get("status") == "n/a":
        return None if reason is not None else "marked n/a, but the grid runs this cell"
    if c.get("status") != "done":
        return f"status={c.get('status')!r} (expected done or n/a)"
    if reason is not None:
        return f"a result for a cell the grid does not run ({reason})"
    bad = [k for k, t in _DONE_KEYS.items() if not isinstance(c.get(k), t) or (t is int and isinstance(c[k], bool))]
    if bad:
        return f"missing or mistyped {', '.join(bad)}"
    if c["iterations"] < 0 or c["restarts"] < 1:
        return f"iterations={c['iterations']} / restarts={c['restarts']} out of range"
    # the text fields are this grid's own values for this cell id, never free text (they reach report.md)
    problem = _text_problem(c, key, cfg, 1.0, "")
    if problem:
        return problem
    n = cfg.images_for(defense, b)
    problem = _rows_problem(c["rows"], n, b) or _mean_problem(c, "")
    if problem:
        return problem
    conf = c.get("confirm")
    if conf is not None:
        if not isinstance(conf, dict) or not _is_int(conf.get("iterations")) or conf["iterations"] < 1:
            return "a 2x rerun ('confirm') without its iterations"
        problem = _text_problem(conf, key, cfg, 2.0, "confirm ")
        if problem:
            return problem
        problem = _rows_problem(conf.get("rows"), n, b) or _mean_problem(conf, "confirm ")
        if problem:
            return problem
    first = c.get("first_image")
    if first is not None and not (isinstance(first, list) and all(_is_num(v) and 0 <= v <= 1 for v in first)):
        return "first_image is not a list of pixel values in [0, 1]"
    return None


def _text_problem(c: dict, key: tuple[str, str, int, str, str], cfg: LeakageConfig, factor: float,
                  what: str) -> str | None:
    """Why the text fields of cell ``key`` (or of its 2x rerun: ``factor`` 2) are not the ones this grid writes
    for it -- a spec of the attack :func:`adapt_attack` builds (the same attack once parsed: a cell written
    before the attack gained a parameter stays valid), the defence's spec, the attacked model, an init of
    :data:`ssgd.attacks.INITS` (or ``-``) -- or None when they are."""
    _, _, b, attack, defense = key
    aname = parse_spec(attack)[0]
    d = get_defense(defense)
    spec = adapt_attack(attack, d, b, **cfg._overrides(aname, factor)).spec
    stored = c.get("attack_spec")
    if not (isinstance(stored, str) and len(stored) <= 1000 and _same_attack(stored, spec)):
        return f"{what}attack_spec={bounded_text(repr(stored), 60)} is not this grid's {spec!r}"
    want = {} if what else {"defense_spec": d.spec, "model": "mlp" if aname in ANALYTIC_ATTACKS else "lenet"}
    for k, v in want.items():
        if c.get(k) != v:
            return f"{what}{k}={bounded_text(repr(c.get(k)), 60)} is not this grid's {v!r}"
    if c.get("init", "-") not in (*INITS, "-") or not isinstance(c.get("init", "-"), str):
        return f"{what}init={bounded_text(repr(c.get('init')), 60)} is not one of {', '.join(INITS)} or -"
    return None


def _same_attack(stored: str, spec: str) -> bool:
    """``stored`` is a valid spec (:func:`ssgd.attacks.get_attack` accepts it) of the attack ``spec`` names, and
    every parameter it states has ``spec``'s value. A spec written before the attack gained a parameter does not
    state it (older cells stay valid); a forged one does not parse, names another attack or states another value."""
    try:
        get_attack(stored)
        (name, params), (want_name, want) = parse_spec(stored), parse_spec(spec)
    except (ValueError, TypeError, KeyError):
        return False
    if name != want_name:
        return False
    for k, v in params.items():
        if k not in want:
            return False
        if v != want[k]:
            try:
                if float(v) != float(want[k]):
                    return False
            except ValueError:
                return False
    return True


def _code(text: Any) -> str:
    """``text`` as a Markdown code span: one bounded line, no backtick (a code span renders nothing inside)."""
    return "`" + bounded_text(text, 120).replace("`", "'") + "`"


def _cell_ids(cfg: LeakageConfig) -> dict[str, tuple[str, str, int, str, str]]:
    """File name -> cell id for every cell of the grid (the only files a grid reads from ``cells/``)."""
    return {_cell_path(Path("."), ds, st, b, a, d).name: (ds, st, b, a, d)
            for ds, st, b, a, group in _jobs(cfg, list(cfg.datasets)) for d in group}


def _read_cells(run_dir: Path, cfg: LeakageConfig) -> tuple[list[dict], list[str]]:
    """The grid's cells from ``run_dir/cells`` and, one line each, the files refused: a file whose name is
    no cell id of this grid, or whose content is not that cell with finite numbers in range
    (:func:`_cell_problem`)."""
    folder = run_dir / "cells"
    if not folder.is_dir():
        return [], []
    ids = _cell_ids(cfg)
    cells, refused = [], []
    for path in sorted(folder.iterdir()):
        key = ids.get(path.name)
        if key is None or path.is_symlink() or not path.is_file():
            refused.append(f"{path}: not a cell of this grid's config (its file name is no cell id)")
            continue
        c = _load_json(path)
        problem = "unreadable JSON" if c is None else _cell_problem(c, key, cfg)
        if problem:
            refused.append(f"{path}: {problem}")
        else:
            cells.append(c)
    return cells, refused


def _load_cells(run_dir: Path, cfg: LeakageConfig) -> list[dict]:
    """The grid's valid cells (a refused file is recomputed by ``--resume``, never half-read)."""
    return _read_cells(run_dir, cfg)[0]


def _image_rows(cells: list[dict]) -> list[dict]:
    rows = []
    for c in cells:
        if c.get("status") != "done":
            continue
        for r in c["rows"]:
            rows.append({"dataset": c["dataset"], "state": c["state"], "model": c["model"], "batch": c["batch"],
                         "attack": c["attack"], "defense": c["defense"], "defense_spec": c["defense_spec"],
                         "attack_spec": c["attack_spec"], "iterations": c["iterations"], "restarts": c["restarts"],
                         "init": c["init"], **r})
    return rows


def _protects(cell: dict, threshold: float) -> bool:
    """Protection: below ``threshold`` at the default budget and -- for an attack with a budget -- again
    at twice that budget. A closed-form attack (0 iterations) has no budget to double: its one result
    is final."""
    if not cell["psnr_mean"] < threshold:
        return False
    if cell["iterations"] == 0:
        return True
    conf = cell.get("confirm")
    return conf is not None and conf["psnr_mean"] < threshold


def _cell_table(cells: list[dict], threshold: float) -> list[dict]:
    """leakage.csv: one row per cell, with its budget, the double-budget confirmation and the verdict
    (:func:`_protects`, derived here from the numbers, not read from the file)."""
    out = []
    for s in summarize(_image_rows(cells)):
        c = next(c for c in cells if c.get("status") == "done" and all(
            c[k] == s[k] for k in ("dataset", "state", "batch", "attack", "defense")))
        conf = c.get("confirm")
        s["psnr_2x_mean"] = conf["psnr_mean"] if conf else float("nan")
        s["iterations_2x"] = conf["iterations"] if conf else 0
        s["protects"] = _protects(c, threshold)
        out.append(s)
    return out


def _epsilons(defenses: list[str], delta: float = 1e-5) -> list[str]:
    """ε of one release for every defence with a noise multiplier (the privacy layer's accountant)."""
    from ..privacy import compute_epsilon

    out = []
    for dspec in defenses:
        nm = getattr(get_defense(dspec), "noise_multiplier", None)
        if nm is not None:
            eps = compute_epsilon(nm, 1.0, 1, delta) if nm > 0 else math.inf
            out.append(f"- `{dspec}`: noise multiplier {nm:g}, ε = {eps:.3g}")
    return out


# the per-cell fields a results JSON (leakage.json, docs/results/leakage.json) keeps
RESULT_KEYS = ("dataset", "state", "model", "batch", "attack", "defense", "psnr_mean", "psnr_std", "ssim_mean",
               "label_acc_mean", "images", "attack_spec", "iterations", "restarts", "init", "psnr_2x_mean",
               "iterations_2x", "protects")


def results_json(cells: list[dict], cfg: LeakageConfig, *, accuracy: dict[str, float] | None = None,
                 model_acc: dict[str, float] | None = None, priors: dict[str, float] | None = None) -> dict[str, Any]:
    """The grid as one JSON object (``leakage.json``): the config, one row per finished cell
    (:data:`RESULT_KEYS`; ``psnr_2x_mean`` is ``None`` for a cell that needed no 2x rerun), the
    cells that cannot run (``na``), progress (``cells_done`` of ``cells_total``), accuracies and,
    per dataset, :func:`prior_psnr` (``priors``).
    The renderers :func:`worst_case_markdown` and :func:`cells_markdown` read only this."""
    rows = []
    for r in _cell_table(cells, cfg.confirm_below):
        row = {k: r[k] for k in RESULT_KEYS}
        if not row["iterations_2x"]:
            row["psnr_2x_mean"] = None
        rows.append(row)
    keys = ("dataset", "state", "batch", "attack", "defense")
    na = sorted([c[k] for k in keys] for c in cells if c.get("status") == "n/a" and all(k in c for k in keys))
    total = sum(len(j[4]) for j in _jobs(cfg, list(cfg.datasets)))
    done = len(rows) + len(na)
    return {"config": cfg.to_dict(), "cells": rows, "na": na, "cells_done": done, "cells_total": total,
            "partial": done < total, "accuracy": dict(accuracy or {}),
            "accuracy_dataset": _accuracy_dataset(list(cfg.datasets)), "model_acc": dict(model_acc or {}),
            "priors": dict(priors or {})}


def export_results(run_dir: str | Path, path: str | Path, figures_to: str | Path | None = None) -> dict[str, Any]:
    """Write ``path`` (e.g. ``docs/results/leakage.json``) from a grid's run folder -- its
    ``config.json``, ``cells/`` and ``accuracy.json`` -- finished or not; returns the object.
    ``figures_to``: also copy the folder's figures there as ``leakage_<name>.png`` (image grids,
    ``budget_vs_psnr.png``, ``privacy_vs_accuracy.png``; links are not followed).

    Raises ``ValueError`` (naming the file and the fix) when ``run_dir`` holds no grid."""
    run_dir = Path(run_dir)
    saved = _load_json(run_dir / "config.json")
    names = {f.name for f in dataclasses.fields(LeakageConfig)}
    if saved is None or not set(saved) <= names:
        raise ValueError(f"{run_dir / 'config.json'}: not a leakage grid's config; give the --out folder of "
                         "`ssgd reproduce leakage`")
    try:
        cfg = LeakageConfig(**saved).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run_dir / 'config.json'}: not a valid leakage grid config ({e})") from None
    accuracy = _numbers((_load_json(run_dir / "accuracy.json") or {}).get("accuracy"))
    model_acc = _numbers((_load_json(run_dir / "summary.json") or {}).get("model_acc"))
    priors = {}
    for name in cfg.datasets:
        try:
            priors[name] = prior_psnr(load_dataset(name), cfg.images, cfg.seed)
        except (ValueError, OSError):
            pass  # a dataset this machine lacks: no reference line for it
    cells, refused = _read_cells(run_dir, cfg)
    if refused:
        raise ValueError(f"{refused[0]}" + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
                         + "; delete it, or rerun the grid with --resume to recompute it")
    results = results_json(cells, cfg, accuracy=accuracy, model_acc=model_acc, priors=priors)
    write_json(path, results)
    if figures_to is not None:
        for fig in sorted(run_dir.glob("grid_*.png")) + [run_dir / "budget_vs_psnr.png",
                                                         run_dir / "privacy_vs_accuracy.png"]:
            if fig.is_file() and not fig.is_symlink():
                shutil.copyfile(fig, Path(figures_to) / f"leakage_{fig.name}")
    return results


def _numbers(obj: Any) -> dict[str, float]:
    """The name -> number entries of a JSON object read from disk (anything else dropped)."""
    if not isinstance(obj, dict):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _checked(results: dict[str, Any]) -> tuple[dict[tuple, dict], set[tuple], list[str], list[str]]:
    """Index a results JSON's cells; ``ValueError`` (one line naming the problem) for anything a run did not
    write: a cell outside the config's grid, a second row for one cell, a non-finite or out-of-range number."""
    cfg = results.get("config") if isinstance(results, dict) else None
    lists = ("datasets", "states", "batch_sizes", "attacks", "defenses")
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), list) for k in lists) \
            or not isinstance(results.get("cells"), list):
        raise ValueError("leakage results: no 'config' with datasets, states, batch_sizes, attacks and defenses "
                         "lists, or no 'cells' list; give the leakage.json a grid run wrote "
                         "(ssgd.experiments.leakage.export_results)")
    attacks = [str(a).split(":")[0] for a in cfg["attacks"]]
    defenses = [str(d) for d in cfg["defenses"]]
    grid = (set(map(str, cfg["datasets"])), set(map(str, cfg["states"])),
            {b for b in cfg["batch_sizes"] if _is_int(b)}, set(attacks), set(defenses))
    index = {}
    for r in results["cells"]:
        missing = [k for k in RESULT_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise ValueError(f"leakage results: a cell lacks {missing}; give the leakage.json a grid run wrote")
        key = tuple(r[k] for k in ("dataset", "state", "batch", "attack", "defense"))
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and v in g for v, g in zip(key, grid)):
            raise ValueError(f"leakage results: a cell outside the config's grid ({repr(key)[:120]}); give "
                             "the leakage.json a grid run wrote")
        if key in index:
            raise ValueError(f"leakage results: two rows for the cell {repr(key)[:120]}; give the leakage.json a grid run wrote")
        nums = {k: r[k] for k in ("psnr_mean", "psnr_std", "ssim_mean")}
        if r["psnr_2x_mean"] is not None:
            nums["psnr_2x_mean"] = r["psnr_2x_mean"]
        bad = [k for k, v in nums.items() if not _is_num(v) or not math.isfinite(v)
               or not -1.01 <= v <= PSNR_MAX]
        if bad or not isinstance(r["protects"], bool) or not _is_int(r["iterations_2x"]):
            raise ValueError(f"leakage results: the cell {repr(key)[:120]} has {', '.join(bad) or 'protects/iterations_2x'} "
                             "out of range; give the leakage.json a grid run wrote")
        index[key] = r
    na = {tuple(k) for k in results.get("na", []) if isinstance(k, list) and len(k) == 5}
    return index, na, attacks, defenses


def _combos(index: dict[tuple, dict], dataset: str | None = None) -> list[tuple]:
    return sorted({k[:3] for k in index if dataset in (None, k[0])}, key=lambda c: (c[0], c[1] != "untrained", c[2]))


def _fmt(row: dict | None, na: bool = False, compact: bool = False) -> str:
    """One attack's cell. ``held`` (bold when ``compact``): this attack stayed below the threshold at 1x and 2x
    its budget -- not a verdict on the defence, which needs every attack of its row (:func:`_verdict`)."""
    if row is None:
        return "n/a" if na else "–"
    text = f"{row['psnr_mean']:.1f}" if compact else \
        f"{row['psnr_mean']:.1f}±{row['psnr_std']:.1f} / {row['ssim_mean']:.2f}"
    if row["iterations_2x"]:
        text += f" (2×: {row['psnr_2x_mean']:.1f}{', held' if row['protects'] and not compact else ''})"
    elif row["protects"] and not compact:  # closed form: nothing to double
        text += ", held"
    return f"**{text}**" if compact and row["protects"] else text


def _verdict(index: dict[tuple, dict], na: set[tuple], attacks: list[str], combo: tuple, defense: str) -> str:
    """✓ when every attack of the grid (the defence-aware ones included) ran on this cell or is n/a there and
    all that ran stayed below the threshold at 1x and 2x; ✗ when one broke it; ⁺ while attacks are pending."""
    rs = [index[(*combo, a, defense)] for a in attacks if (*combo, a, defense) in index]
    if not rs:
        return "n/a" if any((*combo, a, defense) in na for a in attacks) else "–"
    if not all(r["protects"] for r in rs):
        return "✗"
    complete = len(rs) + sum((*combo, a, defense) in na for a in attacks) == len(attacks)
    return "✓" if complete else "⁺"


def worst_case_markdown(results: dict[str, Any], dataset: str | None = None) -> str:
    """One row per defence, one column per (dataset, model state, batch): the strongest attack's mean
    PSNR and its name. ✓ = every attack of that column stayed below the threshold at 1x and 2x its
    budget; ⁺ = some attacks of that column have not run yet (the max is over those that have)."""
    index, na, attacks, defenses = _checked(results)
    combos = _combos(index, dataset)
    acc_ds = results.get("accuracy_dataset")
    accuracy = _numbers(results.get("accuracy")) if dataset in (None, acc_ds) else {}
    head = ["defence"] + [f"{d} {s} B={b}" for d, s, b in combos]
    if accuracy:  # the accuracy runs are on one dataset: shown beside that dataset's columns only
        head.append(f"test acc. ({acc_ds}, trained with it)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in defenses:
        row = []
        for c in combos:
            rs = [index[(*c, a, d)] for a in attacks if (*c, a, d) in index]
            if not rs:
                row.append("n/a" if any((*c, a, d) in na for a in attacks) else "–")
                continue
            best = max(rs, key=lambda r: r["psnr_mean"])
            verdict = _verdict(index, na, attacks, c, d)
            complete = len(rs) + sum((*c, a, d) in na for a in attacks) == len(attacks)
            pending = "" if complete else "⁺"
            row.append(f"{best['psnr_mean']:.1f} ({best['attack']}){pending}{' ✓' if verdict == '✓' else ''}")
        if accuracy:
            acc = accuracy.get(d)
            row.append(f"{acc:.3f}" if isinstance(acc, (int, float)) else "–")
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    priors = {k: v for k, v in _numbers(results.get("priors")).items() if dataset is None or k == dataset}
    if priors:
        lines += ["", "Reference: the attacker's prior alone (the test split's mean image, the `mean` init) scores "
                  + ", ".join(f"{v:.1f} dB on {k}" for k, v in priors.items())
                  + " against these images; a cell near it recovered nothing beyond the prior."]
    if results.get("partial"):
        lines += ["", f"**Partial grid**: {results.get('cells_done')} of {results.get('cells_total')} cells finished; "
                  "– = not run yet, ⁺ = some attacks of the column still pending."]
    return "\n".join(lines)


def cells_markdown(results: dict[str, Any], only: tuple[str, str, int] | None = None, compact: bool = False) -> str:
    """Every attack x defence cell: one table per (dataset, model state, batch), headed ``## ...``;
    ``only``: that group's table alone, without a heading. ``compact``: PSNR means only, an attack that
    failed at 1x and 2x in bold. The last column is the defence's verdict (:func:`_verdict`)."""
    index, na, attacks, defenses = _checked(results)
    combos = [only] if only else _combos(index)
    lines: list[str] = []
    for c in combos:
        if not only:
            lines += [f"## {c[0]}, {c[1]} model, batch {c[2]}", ""]
        lines += ["| defence | " + " | ".join(attacks) + " | protected |", "|---|" + "---|" * (len(attacks) + 1)]
        for d in defenses:
            lines.append(f"| {d} | " + " | ".join(_fmt(index.get((*c, a, d)), (*c, a, d) in na, compact)
                                                  for a in attacks) + f" | {_verdict(index, na, attacks, c, d)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _markdown(table: list[dict], cells: list[dict], cfg: LeakageConfig, accuracy: dict[str, float],
              figures: list[str], elapsed: float, stopped: bool, model_acc: dict[str, float],
              priors: dict[str, float] | None = None) -> str:
    budgets = sorted({(r["attack"], r["attack_spec"], r["iterations"], r["restarts"], r["init"]) for r in table})
    lines = ["# Gradient leakage: attacks x defences", "",
             f"{'Quick' if cfg.is_quick else 'Full'} mode, seed {cfg.seed}. Images per cell: {cfg.images} for `none` "
             f"and the SSGD rows, {cfg.other_images} for the other defences (rounded up to a multiple of B; "
             "column `images` in `leakage.csv`); batches of B images give images/B shared updates per cell. "
             "Models: DLG's LeNet (analytic: a 2-hidden-layer ReLU MLP, whose first layer is linear); "
             f"'trained' = Adam for {cfg.train_epochs} epoch(s) on {cfg.train_images} training images. "
             + (f"Test accuracy column: {cfg.accuracy_model} trained {cfg.accuracy_epochs} epoch(s) by SGD steps "
                "along each defence's shared update. " if cfg.accuracy_epochs > 0 else "Accuracy runs: not asked for. ")
             + f"Compute time of this call {elapsed / 60:.1f} min.", "",
             "Cells: PSNR mean ± std (dB) / SSIM mean over the images (after optimal assignment). Higher = more "
             f"leakage. A cell below {cfg.confirm_below:g} dB was rerun with twice the iterations; `(2×: p)` is that "
             f"rerun's mean PSNR and ✓ marks a cell that stayed below {cfg.confirm_below:g} dB both times (the only "
             "cells that count as protection). `n/a`: SSGD(m) needs a batch that is a multiple of m. Label accuracy "
             "is in `leakage.csv`.", "", "Budgets (iterations actually run per restart x restarts, init):", ""]
    # texts from cell files: checked against the grid on loading, and written as code spans / escaped anyway
    lines += [f"- {_code(a)}: closed form ({_code(spec)})" if a in ANALYTIC_ATTACKS else
              f"- {_code(a)}: {it} x {r}, init {md_text(ini)} ({_code(spec)})" for a, spec, it, r, ini in budgets] + [""]
    dp_lines = _epsilons(cfg.defenses)
    if dp_lines:
        lines += ["Privacy of the noise defences (one release, δ = 1e-5, Opacus RDP via "
                  "`ssgd.privacy.compute_epsilon`; the defence states its noise multiplier):", ""] + dp_lines + [""]
    if stopped:
        lines += ["**The time budget ran out: cells marked – were not run.**", ""]
    results = results_json(cells, cfg, accuracy=accuracy, model_acc=model_acc, priors=priors)
    lines += ["## Worst case per defence (max over attacks of mean PSNR, dB)", "", worst_case_markdown(results), "",
              cells_markdown(results), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [
        "", "Files: `leakage.json` (every cell, with budgets and the 2× reruns; what `docs/results/leakage.json` "
        "is exported from), `leakage.csv` (the same per cell), `images.csv` (per image), "
        "`accuracy.csv`, `curve.csv`, `cells/` (one JSON per finished cell), `config.json`.", ""]
    if model_acc:
        lines += ["Model test accuracies (attacked models): "
                  + ", ".join(f"{md_text(k)} {v:.3f}" for k, v in model_acc.items()), ""]
    return "\n".join(lines)


def _grid_figure(path: Path, originals: torch.Tensor, recs: dict[tuple[str, str], torch.Tensor], attacks: list[str],
                 defenses: list[str], title: str) -> None:
    ncol = len(attacks) + 1
    fig, axes = new_figure(len(defenses), ncol, figsize=(1.3 * ncol, 1.35 * len(defenses) + 0.4), squeeze=False)
    for i, d in enumerate(defenses):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = originals if j == 0 else recs.get((attacks[j - 1], d))
            if img is not None:
                ax.imshow(img[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title("original" if j == 0 else attacks[j - 1], fontsize=7)
            if j == 0:
                ax.set_ylabel(d.split(":")[0], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.2, w_pad=0.2)
    save_figure(fig, path)


def _curve(grid: _Grid, table: list[dict], resume: bool) -> list[dict]:
    """Budget vs PSNR of the strongest attack against each SSGD variant (untrained model, first dataset,
    the smallest batch the variant runs at): the attack rerun at ``curve_budgets`` x its default budget."""
    cfg, run_dir = grid.cfg, grid.run_dir
    path = run_dir / "curve.json"
    done = (_load_json(path) or {}).get("points", []) if resume else []
    points = list(done)
    have = {(p["defense"], p["factor"]) for p in points}
    ds = next(iter(grid.datasets), None)
    if ds is None or not cfg.curve_budgets:
        return points
    for dspec in cfg.defenses:
        if parse_spec(dspec)[0] not in SSGD_VARIANTS:
            continue
        rows = [r for r in table if r["defense"] == dspec and r["dataset"] == ds and r["state"] == "untrained"
                and r["attack"] in OPT_ATTACKS + INV_ATTACKS]
        if not rows:
            continue
        b = min(r["batch"] for r in rows)
        best = max((r for r in rows if r["batch"] == b), key=lambda r: r["psnr_mean"])
        attack = next(a for a in cfg.attacks if parse_spec(a)[0] == best["attack"])
        n = -(-cfg.curve_images // b) * b
        for f in cfg.curve_budgets:
            if (dspec, f) in have or grid.out_of_time():
                continue
            res = grid.attack_cells(ds, "untrained", b, attack, [dspec], factor=f, n_images=n)[dspec]
            points.append({"defense": dspec, "attack": best["attack"], "batch": b, "factor": f,
                           "iterations": res["budget"]["iterations"], "restarts": res["budget"]["restarts"],
                           "init": res["budget"]["init"], "images": len(res["rows"]),
                           "psnr_mean": statistics.fmean(r["psnr"] for r in res["rows"]),
                           "psnr_min": min(r["psnr"] for r in res["rows"])})
            write_json(path, {"points": points})
    return points


def _curve_figure(path: Path, points: list[dict], threshold: float) -> None:
    fig, ax = new_figure(figsize=(5.5, 3.8))
    for dspec in sorted({p["defense"] for p in points}):
        ps = sorted((p for p in points if p["defense"] == dspec), key=lambda p: p["iterations"])
        ax.plot([p["iterations"] for p in ps], [p["psnr_mean"] for p in ps], marker="o",
                label=f"{dspec} ({ps[0]['attack']}, B={ps[0]['batch']})")
    ax.axhline(threshold, color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("iterations per restart (restarts fixed)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title("budget vs leakage: strongest attack per SSGD variant", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _accuracy_dataset(datasets: list[str]) -> str | None:
    """The dataset of the per-defence accuracy runs: MNIST when the grid has it, else the first."""
    return "mnist" if "mnist" in datasets else next(iter(datasets), None)


def _accuracy(grid: _Grid, resume: bool, compute: bool = True) -> dict[str, float]:
    """Test accuracy of a model trained with each defence (``accuracy.json``); ``compute=False``: only
    what is saved (another shard computes it)."""
    cfg = grid.cfg
    ds = _accuracy_dataset(list(grid.datasets))
    path = grid.run_dir / "accuracy.json"
    saved = (_load_json(path) or {}).get("accuracy", {}) if resume or not compute else {}
    acc: dict[str, float] = {d: v for d, v in saved.items() if d in cfg.defenses and isinstance(v, (int, float))}
    if ds is None or cfg.accuracy_epochs <= 0 or not compute:
        return acc
    for d in cfg.defenses:
        if d in acc or grid.out_of_time():
            continue
        acc[d] = train_with_defense(d, grid.datasets[ds], model=cfg.accuracy_model, epochs=cfg.accuracy_epochs,
                                    seed=cfg.seed, train_images=cfg.train_images, progress=grid.progress)
        write_json(path, {"dataset": ds, "accuracy": acc})
    write_csv(grid.run_dir / "accuracy.csv", [{"dataset": ds, "defense": d, "test_acc": a} for d, a in acc.items()])
    return acc


def _privacy_figure(path: Path, table: list[dict], accuracy: dict[str, float], cfg: LeakageConfig) -> bool:
    fig, ax = new_figure(figsize=(5.5, 4))
    drawn = False
    for d in cfg.defenses:
        rs = [r for r in table if r["defense"] == d]
        if not rs or d not in accuracy:
            continue
        worst = statistics.fmean(max(r["psnr_mean"] for r in rs if (r["dataset"], r["state"], r["batch"]) == c)
                                 for c in {(r["dataset"], r["state"], r["batch"]) for r in rs})
        ax.scatter(accuracy[d], worst)
        ax.annotate(d.split(":")[0], (accuracy[d], worst), fontsize=7, xytext=(3, 3), textcoords="offset points")
        drawn = True
    if not drawn:
        return False
    ax.set_xlabel(f"test accuracy: {cfg.accuracy_model} trained {cfg.accuracy_epochs} epoch(s) with it")
    ax.set_ylabel("leakage: PSNR of the strongest attack (dB)")
    ax.set_title("privacy vs accuracy (lower-right is better)", fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True


def _run_grid(cfg: LeakageConfig, run_dir: Path, *, resume: bool, progress: bool,
              shard: tuple[int, int] = (0, 1), first: tuple[str, ...] = ()) -> ExperimentResult:
    from tqdm.auto import tqdm

    cfg.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_saved_config(run_dir, cfg.to_dict(), ignore=("budget_minutes",))
    write_json(run_dir / "config.json", cfg.to_dict())
    grid = _Grid(cfg, run_dir, progress)
    if resume:  # the attacked models' accuracies of earlier calls (this call may build only some models)
        grid.model_acc.update(_numbers((_load_json(run_dir / "summary.json") or {}).get("model_acc")))
    k, n = shard
    jobs = _jobs(cfg, list(grid.datasets))
    if first:
        jobs.sort(key=lambda j: parse_spec(j[3])[0] not in first)  # stable: grid order within each group
    figures: list[str] = []
    points: list[dict] = []
    # the budget curve needs the untrained SSGD cells of the first dataset: run it right after them (split
    # over several processes, shard 0 runs it after its own jobs, when the others' cells are there too)
    curve_done = False
    curve_after = max((i for i, j in enumerate(jobs) if j[0] == next(iter(grid.datasets), None)
                       and j[1] == "untrained" and any(_is_primary(d) for d in j[4])), default=-1) if n == 1 else -1
    mine = [i for i in range(len(jobs)) if i % n == k]
    for i in tqdm(mine, desc="leakage grid" + (f" (shard {k}/{n})" if n > 1 else ""), disable=not progress):
        ds, st, b, attack, defenses = jobs[i]
        if grid.out_of_time():
            break
        if not grid.run_job(ds, st, b, attack, defenses, resume) and i != curve_after:
            continue  # nothing new: the tables and the report are rewritten once after the loop
        table = _write_tables(run_dir, _load_cells(run_dir, cfg), cfg, model_acc=grid.model_acc, priors=grid.priors)
        if i == curve_after:
            points, curve_done = _curve(grid, table, resume), True
            _write_curve(run_dir, points, cfg)
        # the mid-run report: tables after every job, a group's image grid once the group is finished
        group_done = i + 1 == len(jobs) or jobs[i + 1][:3] != (ds, st, b)
        figs = _grid_figures(grid, only=(ds, st, b)) if group_done else _existing_grid_figures(run_dir)
        _write_report(grid, {}, figs, resume_note=True)
    cells = _load_cells(run_dir, cfg)
    table = _write_tables(run_dir, cells, cfg, model_acc=grid.model_acc, priors=grid.priors)
    if not curve_done and not grid.stopped and k == 0:
        points = _curve(grid, table, resume)
    elif not curve_done:
        points = (_load_json(run_dir / "curve.json") or {}).get("points", [])
    if _write_curve(run_dir, points, cfg):
        figures.append("budget_vs_psnr.png")
    accuracy = _accuracy(grid, resume, compute=k == 0) if not grid.stopped else {}
    if accuracy:
        write_json(run_dir / "leakage.json", results_json(cells, cfg, accuracy=accuracy, model_acc=grid.model_acc,
                                                          priors=grid.priors))
    figures += _grid_figures(grid)
    if accuracy and table and _privacy_figure(run_dir / "privacy_vs_accuracy.png", table, accuracy, cfg):
        figures.append("privacy_vs_accuracy.png")
    elapsed = time.perf_counter() - grid.t0
    md = _write_report(grid, accuracy, figures)
    summary = {"cells": table, "accuracy": accuracy, "model_acc": grid.model_acc, "curve": points,
               "seconds": elapsed, "stopped_early": grid.stopped, "skipped": grid.skipped}
    write_json(run_dir / "summary.json", summary)
    report = run_dir / "report.md"
    return ExperimentResult(run_dir=run_dir, report=report,
                            tables={"cells": table, "images": _image_rows(cells), "curve": points},
                            figures={f: run_dir / f for f in figures},
                            summary={"cells": len(table), "stopped_early": grid.stopped, "accuracy": accuracy},
                            text=md, seconds=elapsed)


def _existing_grid_figures(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("grid_*.png"))


def _grid_figures(grid: _Grid, only: tuple | None = None) -> list[str]:
    """One image grid per (dataset, state, batch) from the finished cells (first image of target 0);
    with ``only``, just that one is redrawn (the others' files are kept)."""
    cfg, names = grid.cfg, []
    cells = [c for c in _load_cells(grid.run_dir, grid.cfg) if c.get("status") == "done" and "first_image" in c]
    attacks = [a.split(":")[0] for a in cfg.attacks]
    for ds, st, b in sorted({(c["dataset"], c["state"], c["batch"]) for c in cells},
                            key=lambda k: (k[0], k[1] != "untrained", k[2])):
        fname = f"grid_{ds}_{st}_b{b}.png"
        if ds not in grid.datasets or (only is not None and (ds, st, b) != only):
            if (grid.run_dir / fname).exists():
                names.append(fname)
            continue
        data = grid.datasets[ds]
        x, _ = cell_images(data, b, cfg.seed)
        recs = {(c["attack"], c["defense"]): torch.tensor(c["first_image"]).reshape(1, *data.shape)
                for c in cells if (c["dataset"], c["state"], c["batch"]) == (ds, st, b)
                and len(c["first_image"]) == math.prod(data.shape)}  # a crafted length is left out
        _grid_figure(grid.run_dir / fname, x, recs, attacks, cfg.defenses,
                     f"{ds}, {st} model, batch {b}: first image of target 0 (matched, clipped to [0,1])")
        names.append(fname)
    return names


def _write_curve(run_dir: Path, points: list[dict], cfg: LeakageConfig) -> bool:
    if not points:
        return False
    write_csv(run_dir / "curve.csv", points)
    _curve_figure(run_dir / "budget_vs_psnr.png", points, cfg.confirm_below)
    return True


def _write_report(grid: _Grid, accuracy: dict[str, float], figures: list[str], resume_note: bool = False) -> str:
    """report.md (= leakage.md) from every finished cell in the folder; also written mid-run."""
    cells = _load_cells(grid.run_dir, grid.cfg)
    table = _cell_table(cells, grid.cfg.confirm_below)
    figs = list(figures)
    if not figs and (grid.run_dir / "budget_vs_psnr.png").exists():
        figs.append("budget_vs_psnr.png")
    md = _markdown(table, cells, grid.cfg, accuracy, figs, time.perf_counter() - grid.t0, grid.stopped,
                   grid.model_acc, grid.priors)
    if resume_note:
        md += "\n**Run in progress: the tables hold the cells finished so far.**\n"
    if grid.skipped:
        md += "\nSkipped datasets: " + "; ".join(grid.skipped) + "\n"
    atomic_write_text(grid.run_dir / "leakage.md", md)
    atomic_write_text(grid.run_dir / "report.md", md)
    return md


def _write_tables(run_dir: Path, cells: list[dict], cfg: LeakageConfig, accuracy: dict[str, float] | None = None,
                  model_acc: dict[str, float] | None = None, priors: dict[str, float] | None = None) -> list[dict]:
    table = _cell_table(cells, cfg.confirm_below)
    write_csv(run_dir / "images.csv", _image_rows(cells))
    write_csv(run_dir / "leakage.csv", table)
    write_json(run_dir / "leakage.json", results_json(cells, cfg, accuracy=accuracy, model_acc=model_acc,
                                                      priors=priors))
    return table


def run_leakage(cfg: LeakageConfig, run_dir: str | Path, *, resume: bool = False,
                progress: bool = True) -> ExperimentResult:
    """``cfg.run(run_dir, resume=..., progress=...)``."""
    return cfg.run(run_dir, resume=resume, progress=progress)
