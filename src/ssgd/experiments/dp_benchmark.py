"""The field's DP benchmark: Fashion-MNIST at (ε = 3, δ = 1e-5), SSGD + noise beside Opacus DP-SGD.

Anchor: Tramèr & Boneh, *Differentially Private Learning Needs Better Features (or Much
More Data)*, ICLR 2021 -- their end-to-end CNN (the small tanh CNN of Papernot et al.
2020, ``tanh-cnn`` in :mod:`ssgd.models`) trained with DP-SGD on the full 60,000/10,000
Fashion-MNIST reaches 86.0 % at ε = 3 (batch 2048, lr 4, momentum 0.9, clip 0.1, 40 epochs);
on ScatterNet features with a linear model (``features="scatternet"``) 89.7 %.

The protocol (issue 21), all in one run folder:

1. **σ** solved by the accountant (:func:`ssgd.privacy.solve_noise_multiplier`) for ε at δ,
   ``q = 1/ceil(N/B)`` and ``epochs`` epochs; both methods use this σ, q, model, epochs,
   momentum and expected batch size.
2. **Learning rate on the validation split, with full-length runs.** ``val_fraction`` of
   the training set is held out (the test set is never looked at); each method trains
   ``epochs`` epochs (σ solved for that set) with every lr of its grid, seed ``seeds[0]``.
   The anchor's lr (Opacus 4, SSGD 4 × C: SSGD's step is a vector of norm <= 1, Opacus's a
   gradient clipped to C) must lie inside each grid; a winner at a grid's edge widens the
   grid by one more point beyond that edge (at most ``max_widen`` times).
3. **Seeds.** Every method trains on the full training set at its chosen lr with every seed
   of ``seeds``. Paired seeds: seed ``s`` gives both methods the same initialisation and the
   same Poisson masks (one generator, Opacus's sampler formula).
4. **Statistics.** Mean ± std of the final test accuracy over the seeds, Welch's p (scipy),
   ε of both from the same accountant (:func:`ssgd.privacy.compute_epsilon`; Opacus's own
   engine recorded beside it), throughput in training examples per second.

Runs are independent jobs: ``workers > 1`` runs them in parallel processes (spawn, each on the
same device). Every finished run is written to ``runs/<key>.json`` and the result file is
rewritten with ``"partial": true`` after it; ``resume=True`` keeps finished runs and continues
an unfinished one from its last epoch checkpoint.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset, load_dataset, subsample, train_val_split
from ..loop import EpochStats, train_loop
from ..models import build_model, build_optimizer, build_scheduler, evaluate
from ..privacy import DEFAULT_GAMMA, DPConfig, DPTraining, compute_epsilon, derive_seed
from ..privacy import solve_noise_multiplier
from ..privacy.accountant import check_accountant, check_delta, check_target_epsilon
from ..report.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..report.io import (ConfigMismatchError, atomic_write_text, check_saved_config, new_figure, save_figure,
                         write_csv, write_json)
from ..transform import check_gamma
from .contract import ExperimentResult

__all__ = ["ANCHORS", "ANCHOR", "BENCHMARK_METHODS", "FEATURES", "NORMALISATIONS", "DPBenchmarkConfig",
           "fit_private", "make_private", "opacus_grad", "run_dp_benchmark", "widen", "summarise"]

BENCHMARK_METHODS = ("ssgd", "opacus")
# SSGD normalisations: name -> (scope, uses gamma); "gamma" is the default of --dp example
NORMALISATIONS = {"gamma": ("global", True), "unit": ("global", False), "layer": ("layer", True)}
ANCHORS = {
    None: {"source": "Tramèr & Boneh, ICLR 2021, end-to-end CNN (DP-SGD)", "test_acc": 0.860, "epsilon": 3.0,
           "delta": 1e-5, "batch_size": 2048, "lr": 4.0, "noise_multiplier": 2.15, "epochs": 40},
    "scatternet": {"source": "Tramèr & Boneh, ICLR 2021, ScatterNet + linear (DP-SGD)", "test_acc": 0.897,
                   "epsilon": 3.0, "delta": 1e-5, "batch_size": 8192, "lr": 16.0, "noise_multiplier": 4.05,
                   "epochs": 40},
}
ANCHOR = ANCHORS[None]
# --features NAME -> (dataset, model) of the features pipeline (helper data/models code)
FEATURES = {"scatternet": ("fashion-mnist-scatternet", "scatter-linear")}
CHECKPOINT_FORMAT = "ssgd-dp-benchmark"


@dataclass
class DPBenchmarkConfig:
    """Settings of the Fashion-MNIST ε = 3 benchmark (module doc). ``n_train``/``n_test`` ``None``: full sets."""

    dataset: str = "fashion-mnist"
    model: str = "tanh-cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    features: str | None = None  # "scatternet": dataset/model of FEATURES, the anchor of ANCHORS
    epsilon: float = 3.0
    delta: float = 1e-5
    accountant: str = "rdp"
    epochs: int = 40
    batch_size: int = 2048
    momentum: float = 0.9
    schedule: str = "constant"  # per-step lr schedule (ssgd.models SCHEDULES): post-processing, no privacy cost
    ssgd_lrs: tuple[float, ...] = (0.2, 0.4, 0.8)
    opacus_lrs: tuple[float, ...] = (2.0, 4.0, 8.0)
    max_widen: int = 2  # a winner at a grid edge adds a point beyond it, at most this many times
    clip: float = 0.1  # Opacus max_grad_norm (Tramèr & Boneh's)
    normalisation: str = "gamma"  # SSGD's normalisation (NORMALISATIONS)
    gamma: float = DEFAULT_GAMMA
    seeds: tuple[int, ...] = (0, 1, 2)
    throughput_epochs: int = 2  # speed, side by side: each method alone, the last of these epochs timed (0: skip)
    val_fraction: float = 0.1
    n_train: int | None = None
    n_test: int | None = None
    device: str = "cpu"
    data_dir: str | None = None  # the dataset's folder (None: its default location)

    @property
    def anchor(self) -> dict[str, Any]:
        return ANCHORS[self.features]

    def validate(self) -> "DPBenchmarkConfig":
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)):
            raise ValueError(f"Invalid epsilon={self.epsilon!r}; the benchmark needs a finite target, e.g. 3")
        check_target_epsilon(self.epsilon)
        check_delta(self.delta)
        check_accountant(self.accountant)
        check_gamma(self.gamma)
        if self.features is not None and self.features not in FEATURES:
            raise ValueError(f"Unknown features={self.features!r}; expected one of {list(FEATURES)} or None")
        for name, val in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"Invalid {name}={val!r}; must be an integer >= 1")
        if isinstance(self.throughput_epochs, bool) or not isinstance(self.throughput_epochs, int) \
                or self.throughput_epochs < 0:
            raise ValueError(f"Invalid throughput_epochs={self.throughput_epochs!r}; must be an integer >= 0")
        if isinstance(self.max_widen, bool) or not isinstance(self.max_widen, int) or self.max_widen < 0:
            raise ValueError(f"Invalid max_widen={self.max_widen!r}; must be an integer >= 0")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"Invalid seeds={self.seeds!r}; give distinct integers >= 0, e.g. 0,1,2")
        if not (isinstance(self.clip, (int, float)) and self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"Invalid clip={self.clip!r}; Opacus's max_grad_norm must be a finite number > 0")
        for name, grid in (("ssgd_lrs", self.ssgd_lrs), ("opacus_lrs", self.opacus_lrs)):
            if not grid or any(not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)) for v in grid):
                raise ValueError(f"Invalid {name}={grid!r}; give one or more finite learning rates > 0")
        anchor = self.anchor["lr"]
        for name, grid, lr in (("opacus_lrs", self.opacus_lrs, anchor), ("ssgd_lrs", self.ssgd_lrs, anchor * self.clip)):
            if not min(grid) * (1 - 1e-9) <= lr <= max(grid) * (1 + 1e-9):
                raise ValueError(f"Invalid {name}={tuple(grid)!r}: the anchor's lr {lr:g} must lie inside the grid; "
                                 f"add it or widen the grid around it")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Invalid momentum={self.momentum!r}; must be in [0, 1)")
        from ..models.optimizers import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule={self.schedule!r}; expected one of {list(SCHEDULES)}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"Unknown normalisation {self.normalisation!r}; expected one of {list(NORMALISATIONS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"Invalid val_fraction={self.val_fraction!r}; must be in (0, 1), e.g. 0.1")
        return self

    @classmethod
    def quick(cls) -> "DPBenchmarkConfig":
        """CI-sized: 600/200 Fashion-MNIST examples, batch 128, 2 epochs, 2 seeds, grids of two."""
        return cls(epochs=2, batch_size=128, ssgd_lrs=(0.4, 0.8), opacus_lrs=(4.0, 8.0), max_widen=1, seeds=(0, 1),
                   n_train=600, n_test=200, throughput_epochs=1)

    @classmethod
    def for_features(cls, features: str | None, **kw: Any) -> "DPBenchmarkConfig":
        """The defaults for ``features`` (None: the end-to-end CNN): dataset, model, batch and grids."""
        if features is None:
            return cls(**kw)
        if features not in FEATURES:
            raise ValueError(f"Unknown features={features!r}; expected one of {list(FEATURES)}")
        dataset, model = FEATURES[features]
        a = ANCHORS[features]
        base = dict(dataset=dataset, model=model, features=features, batch_size=a["batch_size"],
                    opacus_lrs=(a["lr"] / 2, a["lr"], a["lr"] * 2),
                    ssgd_lrs=(a["lr"] * 0.1 / 2, a["lr"] * 0.1, a["lr"] * 0.1 * 2))
        base.update(kw)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            log: Callable[[str], None] = print, publish: str | Path | None = None, workers: int = 1) -> ExperimentResult:
        return run_dp_benchmark(run_dir, self, resume=resume, progress=progress, log=log, publish=publish,
                                workers=workers)


def _gamma_scope(cfg: DPBenchmarkConfig, normalisation: str) -> tuple[str, float]:
    scope, uses_gamma = NORMALISATIONS[normalisation]
    return scope, (cfg.gamma if uses_gamma else 0.0)


def _mask_generator(seed: int) -> torch.Generator:
    """The Poisson masks of seed ``seed``: one stream that both methods draw from (paired seeds)."""
    return torch.Generator().manual_seed(derive_seed(seed, "dp-benchmark-poisson"))


# ---------------------------------------------------------------------------------------------- the Opacus method
# The DP-SGD baseline: Opacus's own PrivacyEngine (per-sample clipping, Poisson sampling), never a re-implementation.


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 batch_size: int, noise_multiplier: float, max_grad_norm: float, accountant: str,
                 loader_generator: torch.Generator, noise_generator: torch.Generator) -> tuple[Any, ...]:
    """``(engine, private_model, private_optimizer, poisson_loader)`` from Opacus's ``PrivacyEngine``."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=loader_generator)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        engine = PrivacyEngine(accountant=accountant)
        pmodel, popt, ploader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=True, noise_generator=noise_generator)
    return engine, pmodel, popt, ploader


def opacus_grad(pmodel: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor | None:
    """The Opacus gradient path of :func:`ssgd.loop.train_loop`: backward through the wrapped model
    (its hooks keep per-sample gradients; the private optimizer clips and noises them at its step).
    An empty Poisson batch computes nothing: the step that follows is pure noise, as DP-SGD requires."""
    if xb.shape[0] == 0:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss = F.cross_entropy(pmodel(xb), yb)
        loss.backward()
    return loss.detach()


def fit_private(method: str, data: ImageDataset, cfg: DPBenchmarkConfig, *, lr: float, epochs: int, sigma: float,
                seed: int = 0, normalisation: str = "gamma", checkpoint: Path | None = None, resume: bool = False,
                progress: bool = False, desc: str = "", log: Callable[[str], None] | None = None,
                stop_after: int | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train one private run of ``method`` on ``data``; evaluate on ``data.x_test`` after every epoch.

    Returns the per-epoch rows ``{epoch, test_acc, test_loss, epsilon, epsilon_opacus, steps, examples,
    train_seconds, seconds}`` (``examples``/``train_seconds``: training only, evaluation excluded)
    (``epsilon`` from :func:`ssgd.privacy.compute_epsilon`, the same accountant for both methods).
    With ``checkpoint``, the state after every epoch is saved there; ``resume`` continues from it
    (bit-identical to an uninterrupted run on CPU). ``stop_after`` ends this call after that many
    epochs (an interruption, for tests); ``on_epoch(row)`` runs after every epoch.

    The one private-training experiment: the benchmark and ``ssgd reproduce privacy`` (with
    :meth:`ssgd.experiments.privacy.PrivacyReproConfig.run_config`) both call it; it trains through the
    project's one loop (:func:`ssgd.loop.train_loop`) with this method's batch source and gradient path."""
    from tqdm.auto import tqdm

    if method not in BENCHMARK_METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {BENCHMARK_METHODS}")
    device = torch.device(cfg.device)
    n = data.x_train.shape[0]
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    q = 1.0 / steps_per_epoch
    model = build_model(cfg.model, data.shape, data.num_classes, seed=seed, **cfg.model_kwargs).to(device)
    masks = _mask_generator(seed)
    opt = build_optimizer("sgd", model.parameters(), lr=lr, momentum=cfg.momentum)  # plain SGD (+ momentum)
    sched = build_scheduler(opt, cfg.schedule, max(1, steps_per_epoch * epochs))
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    if method == "ssgd":  # per-example unit vectors + noise (ssgd.privacy.DPTraining), on the paired masks
        scope, gamma = _gamma_scope(cfg, normalisation)
        dp = DPTraining(DPConfig(level="example", noise_multiplier=sigma, delta=cfg.delta, accountant=cfg.accountant),
                        model, n, cfg.batch_size, epochs, scope=scope, seed=seed, gamma=gamma)
        net, net_opt = model, opt

        def batches(epoch: int):
            # Opacus's loader: its iterator draws a base seed, then the sampler one mask per step; the same
            # draws here give the same masks as the Opacus run of this seed
            torch.empty((), dtype=torch.int64).random_(generator=masks)
            for _ in range(steps_per_epoch):
                idx = torch.nonzero(torch.rand(n, generator=masks) < q).flatten().to(device)
                yield xtr[idx], ytr[idx]

        def grad(m, x, y):
            return dp.backward(m, x, y, None)

        def state() -> dict[str, Any]:
            return {"dp": dp.state_dict(), "masks": masks.get_state()}

        def load(st: dict[str, Any]) -> None:
            dp.load_state_dict(st["dp"])
            masks.set_state(st["masks"])

        def engine_eps() -> float:
            return dp.accountant.epsilon()

        def account(epoch: int) -> None:  # a resume: the releases of `epoch` epochs, from the settings alone
            dp.accountant.replay(steps_per_epoch, epoch)
    else:  # Opacus's PrivacyEngine: its Poisson loader, per-sample clipping and noise
        noise_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "opacus-noise"))
        engine, net, net_opt, ploader = make_private(
            model, opt, xtr, ytr, batch_size=cfg.batch_size, noise_multiplier=sigma, max_grad_norm=cfg.clip,
            accountant=cfg.accountant, loader_generator=masks, noise_generator=noise_gen)
        sampler_gen = ploader.batch_sampler.generator or masks
        grad = opacus_grad

        def batches(epoch: int):
            return ploader

        def state() -> dict[str, Any]:
            return {"opacus_accountant": engine.accountant.state_dict(), "sampler_gen": sampler_gen.get_state(),
                    "noise_gen": noise_gen.get_state()}

        def load(st: dict[str, Any]) -> None:
            engine.accountant.load_state_dict(st["opacus_accountant"])
            sampler_gen.set_state(st["sampler_gen"])
            noise_gen.set_state(st["noise_gen"])

        def engine_eps() -> float:
            return math.inf if sigma == 0 else float(engine.get_epsilon(cfg.delta))

        def account(epoch: int) -> None:  # what Opacus's optimizer hook records: (sigma, 1/len(loader), steps)
            engine.accountant.history = [(sigma, q, steps_per_epoch * epoch)]

    history: list[dict[str, Any]] = []
    start, elapsed = 1, 0.0
    want = {"method": method, "lr": lr, "epochs": epochs, "sigma": sigma, "normalisation": normalisation,
            "seed": seed}
    if resume and checkpoint is not None and checkpoint.is_file():
        ck = load_checkpoint(checkpoint, format=CHECKPOINT_FORMAT,
                             required=("epoch", "model", "optimizer", "scheduler", "history", "state", "run"))
        if ck["run"] != want:
            raise ConfigMismatchError(f"checkpoint {checkpoint} belongs to the run {ck['run']}, not {want}; "
                                      "resume with the same settings or use a new run folder")
        try:  # hostile input: every state must fit, every history row be one this run writes
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            load(ck["state"])
            torch.set_rng_state(ck["torch_rng"])
            history, start, elapsed = _check_rows(ck["history"], ck["epoch"], epochs), ck["epoch"] + 1, ck["seconds"]
            # a file never sets what was spent: the accountants are rebuilt from this run's settings and the
            # epochs done, and the saved rows must show exactly those releases
            account(ck["epoch"])
            for r in history:
                steps = steps_per_epoch * r["epoch"]
                eps = compute_epsilon(sigma, q, steps, cfg.delta, cfg.accountant) if sigma > 0 else math.inf
                if r["steps"] != steps or r["epsilon"] != eps:
                    raise ValueError(f"history row {r['epoch']} records steps/epsilon this run did not spend")
            if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < math.inf:
                raise ValueError(f"seconds={elapsed!r}")
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise CheckpointError(f"refusing checkpoint {checkpoint}: its state does not fit this run "
                                  f"({type(e).__name__}: {first}); move it away to start afresh") from None
        if log is not None and start <= epochs:
            log(f"resume: {desc or method} from epoch {start}")
    t0 = time.perf_counter() - elapsed
    bar = tqdm(total=steps_per_epoch * max(0, epochs - start + 1), desc=desc or method, disable=not progress,
               leave=False)

    def end_epoch(epoch: int, stats: EpochStats) -> dict[str, Any]:
        before = history[-1] if history else {"examples": 0, "train_seconds": 0.0}
        acc, loss = evaluate(model, data.x_test, data.y_test, device=device)
        steps = steps_per_epoch * epoch
        return {"epoch": epoch, "test_acc": acc, "test_loss": loss,
                "epsilon": compute_epsilon(sigma, q, steps, cfg.delta, cfg.accountant) if sigma > 0 else math.inf,
                "epsilon_opacus": engine_eps(), "steps": steps, "examples": int(before["examples"]) + stats.examples,
                "train_seconds": float(before["train_seconds"]) + stats.seconds, "seconds": time.perf_counter() - t0}

    def epoch_done(row: dict[str, Any]) -> None:
        bar.set_postfix(acc=f"{row['test_acc']:.4f}", eps=f"{row['epsilon']:.3g}")
        if on_epoch is not None:
            on_epoch(row)
        if log is not None:
            log(f"{desc or method} epoch {row['epoch']}/{epochs}: acc {row['test_acc']:.4f} eps "
                f"{row['epsilon']:.4g} ({row['seconds']:.0f} s)")

    def save(epoch: int, history: list[dict[str, Any]]) -> None:
        save_checkpoint(checkpoint, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "history": history,
                                     "seconds": history[-1]["seconds"], "state": state(),
                                     "torch_rng": torch.get_rng_state(), "run": want},
                        format=CHECKPOINT_FORMAT)

    train_loop(net, net_opt, batches, epochs=epochs, grad=grad, scheduler=sched, start_epoch=start, history=history,
               stop_after=stop_after, after_step=lambda: bar.update(1), end_epoch=end_epoch, on_epoch=epoch_done,
               checkpoint=save if checkpoint is not None else None)
    bar.close()
    return history




_ROW = ("epoch", "test_acc", "test_loss", "epsilon", "epsilon_opacus", "steps", "examples", "train_seconds", "seconds")


def _check_rows(rows: Any, epoch: Any, epochs: int) -> list[dict[str, Any]]:
    """A saved history of :func:`fit_private`: epochs 1..``epoch`` in order, each row of exactly this run's fields,
    numbers only (finite, but ε may be +inf: σ = 0); anything else is a ValueError naming what is wrong."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch {epoch!r} does not fit a {epochs}-epoch run")
    if not isinstance(rows, list) or [r.get("epoch") if isinstance(r, dict) else None for r in rows] \
            != list(range(1, epoch + 1)):
        raise ValueError(f"its history does not hold epochs 1..{epoch} in order")
    for r in rows:
        bad = [k for k in _ROW if k not in r or isinstance(r[k], bool) or not isinstance(r[k], (int, float))
               or math.isnan(r[k]) or (math.isinf(r[k]) and k not in ("epsilon", "epsilon_opacus"))]
        if bad or len(r) != len(_ROW):
            what = (bad or [k for k in r if k not in _ROW])[0]
            raise ValueError(f"history row {r['epoch']} has a bad or unknown field {str(what)[:40]!r}")
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------------- the protocol

_DATA: dict[tuple, ImageDataset] = {}


def _load_data(cfg: DPBenchmarkConfig, split: str) -> ImageDataset:
    """``split="test"``: the training set and the test set; ``"val"``: the training set less ``val_fraction``
    and that held-out part in the test slots. Memoised per process (a worker runs many jobs)."""
    key = (cfg.dataset, cfg.n_train, cfg.n_test, cfg.val_fraction, split)
    if key not in _DATA:
        data = load_dataset(cfg.dataset, cfg.data_dir)
        if cfg.n_train is not None or cfg.n_test is not None:
            data = subsample(data, cfg.n_train, cfg.n_test, seed=0)
        if split == "val":
            part, val = train_val_split(data, cfg.val_fraction, seed=0)
            data = ImageDataset(part.name, part.x_train, part.y_train, val.x_test, val.y_test, part.num_classes)
        _DATA[key] = data
    return _DATA[key]


def _sigma(cfg: DPBenchmarkConfig, n: int) -> tuple[float, float, int]:
    spe = math.ceil(n / cfg.batch_size)
    return solve_noise_multiplier(cfg.epsilon, cfg.delta, 1.0 / spe, spe * cfg.epochs, cfg.accountant), 1.0 / spe, spe


def _key(job: dict[str, Any]) -> str:
    return f"{job['split']}-{job['method']}-lr{job['lr']:.6g}-seed{job['seed']}"


def _run_job(cfg_dict: dict[str, Any], job: dict[str, Any], run_dir: str, resume: bool) -> dict[str, Any]:
    """One run (a grid point or a seed): the unit of work of a worker process. Returns its result record."""
    cfg = DPBenchmarkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_dict.items()})
    data = _load_data(cfg, job["split"])
    sigma, _, _ = _sigma(cfg, int(data.x_train.shape[0]))
    norm = cfg.normalisation if job["method"] == "ssgd" else "gamma"
    ck = Path(run_dir) / "checkpoints" / f"{_key(job)}.ckpt"
    hist = fit_private(job["method"], data, cfg, lr=job["lr"], epochs=cfg.epochs, sigma=sigma, seed=job["seed"],
                       normalisation=norm, checkpoint=ck, resume=resume, progress=False)
    last = hist[-1]
    return {**job, "acc": last["test_acc"], "loss": last["test_loss"], "sigma": sigma, "epsilon": last["epsilon"],
            "epsilon_opacus_engine": last["epsilon_opacus"], "steps": last["steps"], "examples": last["examples"],
            "train_seconds": last["train_seconds"], "seconds": last["seconds"],
            "throughput": last["examples"] / last["train_seconds"] if last["train_seconds"] > 0 else None,
            "per_epoch": [{"epoch": r["epoch"], "acc": r["test_acc"], "epsilon": r["epsilon"]} for r in hist]}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


_RECORD_KEYS = {"split", "method", "lr", "seed", "acc", "loss", "sigma", "epsilon", "epsilon_opacus_engine", "steps",
                "examples", "train_seconds", "seconds", "throughput", "per_epoch"}


def _read_record(path: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """A finished run's record, checked field by field (a result file is data, not authority)."""
    import json

    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or set(rec) != _RECORD_KEYS or any(rec[k] != job[k] for k in job):
        return None
    for k in ("acc", "loss", "sigma", "epsilon", "train_seconds", "seconds"):
        if isinstance(rec[k], bool) or not isinstance(rec[k], (int, float)) or not math.isfinite(rec[k]):
            return None
    if not 0.0 <= rec["acc"] <= 1.0 or not isinstance(rec["per_epoch"], list):
        return None
    return rec


class _Runner:
    """Runs jobs (in-process or in a spawn pool), skipping finished ones on resume, saving each as it ends."""

    def __init__(self, run_dir: Path, cfg: DPBenchmarkConfig, *, workers: int, resume: bool,
                 log: Callable[[str], None], on_done: Callable[[], None]):
        self.run_dir, self.cfg, self.workers, self.resume, self.log, self.on_done = run_dir, cfg, workers, resume, log, on_done
        self.records: dict[str, dict[str, Any]] = {}
        self.pool = None

    def __enter__(self) -> "_Runner":
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                            initargs=(threads,))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _save(self, rec: dict[str, Any]) -> None:
        key = _key(rec)
        self.records[key] = rec
        write_json(self.run_dir / "runs" / f"{key}.json", rec)
        self.log(f"{rec['split']:>4} {rec['method']:>6} lr={rec['lr']:<7g} seed {rec['seed']}: acc {rec['acc']:.4f} "
                 f"eps {rec['epsilon']:.4g} ({rec['train_seconds']:.0f} s training, "
                 f"{rec['throughput'] or 0:.0f} examples/s)")
        self.on_done()

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = []
        for job in jobs:
            key = _key(job)
            if key in self.records:
                continue
            rec = _read_record(self.run_dir / "runs" / f"{key}.json", job) if self.resume else None
            if rec is not None:
                self.records[key] = rec
                self.log(f"resume: {key} already finished")
            else:
                todo.append(job)
        cfg_dict, rd = self.cfg.to_dict(), str(self.run_dir)
        if self.pool is None:
            for job in todo:
                self._save(_run_job(cfg_dict, job, rd, self.resume))
        else:
            from concurrent.futures import as_completed

            futures = [self.pool.submit(_run_job, cfg_dict, job, rd, self.resume) for job in todo]
            for fut in as_completed(futures):
                self._save(fut.result())
        return [self.records[_key(j)] for j in jobs]


def measure_throughput(cfg: DPBenchmarkConfig, data: ImageDataset, sigma: float, lrs: dict[str, float],
                       seed: int) -> dict[str, float | None]:
    """Training examples per second of each method *alone* on ``cfg.device`` (no other run sharing it), same
    model, data, σ, batch and seed: the last of ``cfg.throughput_epochs`` epochs is timed (the first warms up)."""
    out: dict[str, float | None] = {}
    for m in BENCHMARK_METHODS:
        if cfg.throughput_epochs < 1:
            out[m] = None
            continue
        h = fit_private(m, data, cfg, lr=lrs[m], epochs=cfg.throughput_epochs, sigma=sigma, seed=seed,
                        normalisation=cfg.normalisation if m == "ssgd" else "gamma")
        ex = h[-1]["examples"] - (h[-2]["examples"] if len(h) > 1 else 0)
        t = h[-1]["train_seconds"] - (h[-2]["train_seconds"] if len(h) > 1 else 0.0)
        out[m] = ex / t if t > 0 else None
    return out


def widen(grid: list[float], scores: dict[float, float]) -> float | None:
    """The next lr to try when the best of ``scores`` sits at an edge of ``grid`` (sorted); None when inside.

    One more point beyond that edge, at the grid's own ratio (x2 for a grid of one)."""
    grid = sorted(grid)
    best = max(grid, key=lambda lr: (scores[lr], -lr))
    ratio = grid[1] / grid[0] if len(grid) > 1 else 2.0
    if len(grid) > 1 and grid[0] < best < grid[-1]:
        return None
    if best == grid[-1]:
        return best * ratio
    return best / ratio


def summarise(accs: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    t = torch.tensor(accs, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(accs) > 1 else None}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's two-sided p for equal means (scipy); None with fewer than two values each or equal constants."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def _plot(histories: dict[str, list[list[dict[str, Any]]]], cfg: DPBenchmarkConfig, path: Path) -> Path:
    fig, ax = new_figure(figsize=(5.5, 3.6))
    for (method, runs), color in zip(histories.items(), ("C0", "C1")):
        for k, h in enumerate(runs):
            ax.plot([r["epoch"] for r in h], [r["acc"] for r in h], color=color, lw=1, alpha=0.8,
                    label=method if k == 0 else None)
    ax.axhline(cfg.anchor["test_acc"], color="grey", ls="--", lw=1, label=cfg.anchor["source"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{cfg.dataset}, {cfg.model}, ε = {cfg.epsilon:g}, δ = {cfg.delta:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def run_dp_benchmark(run_dir: str | Path, cfg: DPBenchmarkConfig, *, resume: bool = False, progress: bool = True,
                     log: Callable[[str], None] = print, publish: str | Path | None = None,
                     workers: int = 1) -> ExperimentResult:
    """Run the protocol (module doc) into ``run_dir``; ``publish``: a folder that also receives
    ``dp_benchmark.json`` and ``dp_benchmark.png`` (``dp_scatternet.*`` with features)."""
    cfg.validate()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Invalid workers={workers!r}; must be an integer >= 1")
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_saved_config(run_dir, cfg.to_dict())
    write_json(run_dir / "config.json", cfg.to_dict())
    data = _load_data(cfg, "test")
    n, n_test = int(data.x_train.shape[0]), int(data.x_test.shape[0])
    sigma, q, spe = _sigma(cfg, n)
    name = "dp_benchmark" if cfg.features is None else f"dp_{cfg.features}"
    log(f"{cfg.dataset}: {n} train / {n_test} test, q = 1/{spe}, {cfg.epochs} epochs: sigma = {sigma:.4f} for "
        f"eps = {cfg.epsilon:g} at delta = {cfg.delta:g}; {workers} worker(s)")
    grids = {"ssgd": sorted(float(v) for v in cfg.ssgd_lrs), "opacus": sorted(float(v) for v in cfg.opacus_lrs)}
    state: dict[str, Any] = {"chosen": {}, "seeds": {}, "alone": {}}

    def result(partial: bool) -> dict[str, Any]:
        tuning = [{k: r[k] for k in ("method", "lr", "acc", "epsilon", "train_seconds")}
                  for r in runner.records.values() if r["split"] == "val"]
        runs: dict[str, Any] = {}
        for m in BENCHMARK_METHODS:
            recs = state["seeds"].get(m) or []
            if not recs:
                continue
            accs = [r["acc"] for r in recs]
            st = summarise(accs)
            tp = [r["throughput"] for r in recs if r["throughput"]]
            runs[m] = {"test_acc": st["mean"], "test_acc_mean": st["mean"], "test_acc_std": st["std"],
                       "test_accs": accs, "seeds": [r["seed"] for r in recs], "lr": state["chosen"][m],
                       "noise_multiplier": sigma, "epsilon": max(r["epsilon"] for r in recs),
                       "epsilon_opacus_engine": max(r["epsilon_opacus_engine"] for r in recs),
                       "steps": recs[0]["steps"], "seconds": sum(r["seconds"] for r in recs),
                       "throughput_in_runs": sum(tp) / len(tp) if tp else None,
                       "throughput": state["alone"].get(m),
                       "per_epoch": [{"epoch": e["epoch"], "test_acc": summarise([r["per_epoch"][i]["acc"]
                                                                                   for r in recs])["mean"],
                                      "epsilon": e["epsilon"]} for i, e in enumerate(recs[0]["per_epoch"])]}
        if "ssgd" in runs:
            runs["ssgd"].update({"normalisation": cfg.normalisation, "gamma": _gamma_scope(cfg, cfg.normalisation)[1]})
        if "opacus" in runs:
            runs["opacus"]["max_grad_norm"] = cfg.clip
        both = len(runs) == 2
        return {"partial": partial, "dataset": cfg.dataset, "model": cfg.model, "features": cfg.features,
                "n_train": n, "n_test": n_test, "epsilon": cfg.epsilon, "delta": cfg.delta,
                "accountant": cfg.accountant, "epochs": cfg.epochs, "seeds": list(cfg.seeds),
                "batch_size": cfg.batch_size, "sample_rate": q, "momentum": cfg.momentum, "device": cfg.device,
                "workers": workers, "runs": runs,
                "throughput": {"unit": "training examples per second", "epochs_timed": 1,
                               "how": "each method alone on the device, same model/data/sigma/batch/seed; "
                                      "throughput_in_runs: mean over the seed runs, which shared the device with "
                                      f"up to {workers - 1} other run(s)"},
                "welch_p": welch_p(runs["ssgd"]["test_accs"], runs["opacus"]["test_accs"]) if both else None,
                "throughput_ratio": (runs["ssgd"]["throughput"] / runs["opacus"]["throughput"]
                                     if both and runs["ssgd"]["throughput"] and runs["opacus"]["throughput"]
                                     else None),
                "anchor": cfg.anchor,
                "tuning": {"split": "validation", "val_fraction": cfg.val_fraction, "epochs": cfg.epochs,
                           "seed": cfg.seeds[0], "grids": grids, "chosen": dict(state["chosen"]),
                           "rows": sorted(tuning, key=lambda r: (r["method"], r["lr"]))}}

    def save_partial() -> None:
        write_json(run_dir / f"{name}.json", result(partial=True))

    with _Runner(run_dir, cfg, workers=workers, resume=resume, log=log, on_done=save_partial) as runner:
        # 1. learning rate on the validation split, full-length runs; a winner at an edge widens the grid
        for round_ in range(cfg.max_widen + 1):
            jobs = [{"split": "val", "method": m, "lr": lr, "seed": cfg.seeds[0]}
                    for m in BENCHMARK_METHODS if m not in state["chosen"] for lr in grids[m]]
            recs = runner.run(jobs)
            for m in BENCHMARK_METHODS:
                if m in state["chosen"]:
                    continue
                scores = {r["lr"]: r["acc"] for r in recs if r["method"] == m}
                nxt = widen(grids[m], scores)
                if nxt is None or round_ == cfg.max_widen:
                    state["chosen"][m] = max(grids[m], key=lambda lr: (scores[lr], -lr))
                    if nxt is not None:
                        log(f"{m}: the best lr {state['chosen'][m]:g} still sits at the grid's edge after "
                            f"{cfg.max_widen} widenings")
                else:
                    log(f"{m}: best lr at the grid's edge; widening with lr {nxt:g}")
                    grids[m] = sorted([*grids[m], nxt])
            if len(state["chosen"]) == len(BENCHMARK_METHODS):
                break
        log(f"learning rates chosen on the validation split: {state['chosen']}")
        # 2. every seed at the chosen lr, paired across methods
        jobs = [{"split": "test", "method": m, "lr": state["chosen"][m], "seed": s}
                for s in cfg.seeds for m in BENCHMARK_METHODS]
        recs = runner.run(jobs)
        for m in BENCHMARK_METHODS:
            state["seeds"][m] = [r for r in recs if r["method"] == m]
    # 3. speed, side by side: each method alone on the device (every worker has finished)
    state["alone"] = measure_throughput(cfg, data, sigma, state["chosen"], cfg.seeds[0])
    log("throughput alone, training examples per second: " + ", ".join(f"{m} {v:.0f}" for m, v in state["alone"].items() if v))
    doc = result(partial=False)
    json_path = write_json(run_dir / f"{name}.json", doc)
    histories = {m: [r["per_epoch"] for r in state["seeds"][m]] for m in BENCHMARK_METHODS}
    figures = {"accuracy_vs_epoch": _plot(histories, cfg, run_dir / f"{name}.png")}
    if publish is not None:
        pub = Path(publish)
        write_json(pub / f"{name}.json", doc)
        figures["published"] = _plot(histories, cfg, pub / f"{name}.png")
    for m in BENCHMARK_METHODS:
        write_csv(run_dir / f"{m}_seeds.csv", [{k: v for k, v in r.items() if k != "per_epoch"}
                                               for r in state["seeds"][m]])
    text = _report(doc, cfg, sigma, spe, name, time.perf_counter() - t_start)
    report = atomic_write_text(run_dir / "report.md", text)
    s, o = doc["runs"]["ssgd"], doc["runs"]["opacus"]
    summary = {"sigma": sigma, "ssgd_test_acc": s["test_acc"], "opacus_test_acc": o["test_acc"],
               "ssgd_epsilon": s["epsilon"], "opacus_epsilon": o["epsilon"], "welch_p": doc["welch_p"],
               "json": str(json_path)}
    return ExperimentResult(run_dir=run_dir, report=report, tables={"tuning": doc["tuning"]["rows"]},
                            figures=figures, summary=summary, text=text, seconds=time.perf_counter() - t_start)


def _pm(run: dict[str, Any]) -> str:
    std = run["test_acc_std"]
    return f"{run['test_acc_mean']:.4f} ± {std:.4f}" if std is not None else f"{run['test_acc_mean']:.4f}"


def _report(doc: dict[str, Any], cfg: DPBenchmarkConfig, sigma: float, spe: int, name: str, seconds: float) -> str:
    s, o, a = doc["runs"]["ssgd"], doc["runs"]["opacus"], doc["anchor"]
    p = doc["welch_p"]
    tp = lambda r: f"{r['throughput']:.0f}" if r["throughput"] else "-"  # noqa: E731
    lines = [
        f"# SSGD + noise vs Opacus DP-SGD: {cfg.dataset} at ε = {cfg.epsilon:g}, δ = {cfg.delta:g}",
        "",
        f"Model `{cfg.model}`, {doc['n_train']} training / {doc['n_test']} test examples, {cfg.epochs} epochs, "
        f"Poisson sampling at q = 1/{spe} (expected batch {doc['n_train'] / spe:.0f}), SGD momentum "
        f"{cfg.momentum:g}, σ = {sigma:.4f} solved by the {cfg.accountant.upper()} accountant, device {cfg.device}. "
        f"Seeds {', '.join(map(str, cfg.seeds))} (paired: same initialisation and Poisson masks for both methods).",
        "",
        "| run | test accuracy (mean ± std) | per seed | lr | ε (same accountant) | ε (Opacus engine) "
        "| examples/s (alone on the device) |",
        "|---|---|---|---|---|---|---|",
        f"| anchor: {a['source']} | {a['test_acc']:.3f} | - | {a['lr']:g} | {a['epsilon']:g} | - | - |",
        f"| ssgd + noise ({cfg.normalisation}, γ = {s['gamma']:g}) | {_pm(s)} | "
        f"{' / '.join(f'{v:.4f}' for v in s['test_accs'])} | {s['lr']:g} | {s['epsilon']:.4g} "
        f"| {s['epsilon_opacus_engine']:.4g} | {tp(s)} |",
        f"| opacus DP-SGD (C = {cfg.clip:g}) | {_pm(o)} | {' / '.join(f'{v:.4f}' for v in o['test_accs'])} "
        f"| {o['lr']:g} | {o['epsilon']:.4g} | {o['epsilon_opacus_engine']:.4g} | {tp(o)} |",
        "",
        f"Difference of means (ssgd - opacus): {s['test_acc_mean'] - o['test_acc_mean']:+.4f}; Welch's p = "
        + (f"{p:.3g}" if p is not None else "n/a (fewer than two seeds)") + ". "
        + (f"Training throughput: SSGD + noise {doc['throughput_ratio']:.2f}x Opacus's on the same model."
           if doc["throughput_ratio"] else ""),
        "",
        f"![test accuracy vs epoch]({name}.png)",
        "",
        f"## Learning rate on the validation split ({cfg.val_fraction:g} of the training set, {cfg.epochs} epochs, "
        f"seed {cfg.seeds[0]})",
        "",
        f"Anchor's lr inside each grid (Opacus {a['lr']:g}, SSGD {a['lr'] * cfg.clip:g} = {a['lr']:g} × C); "
        "a winner at a grid's edge widens the grid.",
        "",
        "| method | lr | validation accuracy | chosen |",
        "|---|---|---|---|",
        *[f"| {r['method']} | {r['lr']:g} | {r['acc']:.4f} | {'yes' if doc['tuning']['chosen'][r['method']] == r['lr'] else ''} |"
          for r in doc["tuning"]["rows"]],
        "",
        f"All numbers: [{name}.json]({name}.json). Total time of this call: {seconds:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def results_markdown(doc: dict[str, Any]) -> str:
    """The README's table for one published benchmark JSON (``docs/results/dp_benchmark.json`` or
    ``dp_scatternet.json``): the anchor, both methods' mean ± std over paired seeds, ε from the same accountant,
    throughput, and the verdicts against the anchor and against Opacus, all read from the file."""
    s, o, a = doc["runs"]["ssgd"], doc["runs"]["opacus"], doc["anchor"]
    seeds = doc.get("seeds") or []
    tp = lambda r: f"{r['throughput']:,.0f}" if r.get("throughput") else "-"  # noqa: E731
    per = lambda r: " / ".join(f"{v:.4f}" for v in r["test_accs"])  # noqa: E731
    diff = s["test_acc_mean"] - o["test_acc_mean"]
    p = doc.get("welch_p")
    gap_anchor = s["test_acc_mean"] - a["test_acc"]
    lines = [
        f"| {doc['dataset']}, `{doc['model']}`, ε = {doc['epsilon']:g}, δ = {doc['delta']:g}, {doc['epochs']} epochs"
        f" | test accuracy (mean ± std, {len(seeds)} seeds) | per seed | lr | ε | examples/s ({doc['device']}) |",
        "|---|---|---|---|---|---|",
        f"| {a['source']} (anchor) | {a['test_acc']:.3f} | - | {a['lr']:g} | {a['epsilon']:g} | - |",
        f"| **SSGD + noise** | **{_pm(s)}** | {per(s)} | {s['lr']:g} | {s['epsilon']:.3f} | {tp(s)} |",
        f"| Opacus DP-SGD (C = {o['max_grad_norm']:g}) | {_pm(o)} | {per(o)} | {o['lr']:g} | {o['epsilon']:.3f} "
        f"| {tp(o)} |",
        "",
        f"SSGD + noise − Opacus: {100 * diff:+.2f} points (Welch's p = "
        + (f"{p:.2f}" if p is not None else "n/a") + "); SSGD + noise − anchor: "
        f"{100 * gap_anchor:+.2f} points"
        + (f"; throughput {doc['throughput_ratio']:.2f}× Opacus's." if doc.get("throughput_ratio") else ".")
        + (" **Partial: not every run has finished.**" if doc.get("partial") else ""),
    ]
    return "\n".join(lines) + "\n"


def load_published(path: str | Path) -> dict[str, Any]:
    """Read a published benchmark JSON as hostile input: every field :func:`results_markdown` prints is checked
    (type, finite, accuracies in [0, 1]); anything else is a one-line ValueError."""
    import json
    import math

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({type(e).__name__})") from None

    def num(v: Any, what: str, low: float = -math.inf, high: float = math.inf, none: bool = False) -> None:
        if v is None and none:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
            raise ValueError(f"{path}: {what} must be a finite number in [{low:g}, {high:g}], got {str(v)[:40]!r}")

    def text(v: Any, what: str) -> None:
        if not isinstance(v, str) or len(v) > 200 or any(c in v for c in "|\n<>[]"):
            raise ValueError(f"{path}: {what} must be a short plain string")

    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), dict) or not isinstance(doc.get("anchor"), dict):
        raise ValueError(f"{path}: not a dp_benchmark.json (needs 'runs' and 'anchor'); give the file a run wrote")
    for k in ("dataset", "model", "device"):
        text(doc.get(k), k)
    for k in ("epsilon", "delta"):
        num(doc.get(k), k, 0)
    num(doc.get("epochs"), "epochs", 1, 10_000)
    num(doc.get("n_train"), "n_train", 1, 1e9)
    num(doc.get("sample_rate"), "sample_rate", 0, 1)
    num(doc.get("welch_p"), "welch_p", 0, 1, none=True)
    num(doc.get("throughput_ratio"), "throughput_ratio", 0, none=True)
    if not isinstance(doc.get("seeds"), list) or not isinstance(doc.get("partial", False), bool):
        raise ValueError(f"{path}: 'seeds' must be a list and 'partial' a boolean")
    a = doc["anchor"]
    text(a.get("source"), "anchor.source")
    num(a.get("test_acc"), "anchor.test_acc", 0, 1)
    num(a.get("lr"), "anchor.lr", 0)
    num(a.get("epsilon"), "anchor.epsilon", 0)
    for m in ("ssgd", "opacus"):
        r = doc["runs"].get(m)
        if not isinstance(r, dict) or not isinstance(r.get("test_accs"), list) or not r["test_accs"]:
            raise ValueError(f"{path}: runs.{m} needs a non-empty 'test_accs' list")
        for v in r["test_accs"]:
            num(v, f"runs.{m}.test_accs", 0, 1)
        num(r.get("test_acc_mean"), f"runs.{m}.test_acc_mean", 0, 1)
        num(r.get("test_acc_std"), f"runs.{m}.test_acc_std", 0, 1, none=True)
        num(r.get("lr"), f"runs.{m}.lr", 0)
        num(r.get("epsilon"), f"runs.{m}.epsilon", 0)
        num(r.get("throughput"), f"runs.{m}.throughput", 0, none=True)
    num(doc["runs"]["opacus"].get("max_grad_norm"), "runs.opacus.max_grad_norm", 0)
    return doc


def throughput_markdown(doc: dict[str, Any]) -> str:
    """One line: both methods' training throughput from a benchmark JSON (each timed alone on its device)."""
    s, o = doc["runs"]["ssgd"], doc["runs"]["opacus"]
    if not s.get("throughput") or not o.get("throughput"):
        return "(no throughput in this file)\n"
    return (f"On `{doc['device']}` (`{doc['model']}`, {doc['n_train']} examples, expected batch "
            f"{doc['n_train'] * doc['sample_rate']:.0f}): SSGD + noise {s['throughput']:,.0f} examples/s, Opacus "
            f"{o['throughput']:,.0f} examples/s, ratio {s['throughput'] / o['throughput']:.2f}×.\n")
