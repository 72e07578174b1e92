"""The field's DP benchmark: Fashion-MNIST at (ε = 3, δ = 1e-5), SSGD + noise beside Opacus DP-SGD.

Anchor: Tramèr & Boneh, *Differentially Private Learning Needs Better Features (or Much
More Data)*, ICLR 2021 -- their end-to-end CNN (the small tanh CNN of Papernot et al.
2020, ``tanh-cnn`` in :mod:`ssgd.models`) trained with DP-SGD on the full 60,000/10,000
Fashion-MNIST reaches 86.0 % at ε = 3 (batch 2048, lr 4, momentum 0.9, clip 0.1,
σ = 2.15, 40 epochs).

One :class:`DPBenchmarkConfig` runs, in one run folder:

1. **σ** solved by the accountant (``ssgd.privacy.solve_noise_multiplier``, Opacus's RDP/PRV)
   for ε at δ, the sampling rate ``q = 1/ceil(N/B)`` and ``epochs`` epochs. Both methods
   use this σ, q, model, initialisation, epochs, momentum and expected batch size.
2. **Pilot** on a validation split (``val_fraction`` of the training set held out, the
   test set never looked at): each method trains ``pilot_epochs`` epochs with every learning
   rate of its grid (grids of the same size; Opacus's lr multiplies a gradient clipped to
   ``clip``, SSGD's a vector of norm <= 1, so SSGD's grid is Opacus's times ``clip``), and
   the lr with the best validation accuracy is kept. The other SSGD normalisations
   (``compare``: pure unit vectors, layer-wise) are measured in the same pilot at SSGD's
   chosen lr (layer-wise: divided by √L, the same step length) -- the normalisation
   comparison of docs/privacy.md. As in most DP papers the tuning is not accounted.
3. **Final runs** on the full training set, test accuracy and ε after every epoch:

   * ``ssgd`` -- :class:`ssgd.privacy.DPTraining` (Poisson sampler, calibrated noise,
     accountant) with :func:`ssgd.privacy.private_unit_grad_`: every example's gradient
     normalised to ``g/(||g|| + gamma)`` (sensitivity 1), summed, ``N(0, σ²)`` added;
   * ``opacus`` -- ``opacus.PrivacyEngine.make_private`` with Poisson sampling and its own
     per-sample clipping to ``clip`` and noise ``N(0, σ²C²)``: DP-SGD as Opacus ships it.

   ε of both comes from the same accountant (:func:`ssgd.privacy.compute_epsilon` on σ, q
   and the steps taken); Opacus's own ``get_epsilon`` is recorded beside it as a check.

Every epoch of a final run is checkpointed (:mod:`ssgd.report.checkpoint`: plain data,
``weights_only`` loading, a format tag); ``resume=True`` continues from the last epoch
and keeps the pilot rows already measured, after :func:`ssgd.report.io.check_saved_config`
has confirmed the folder holds this configuration.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from ..data import ImageDataset, load_dataset, subsample, train_val_split
from ..models import build_model, evaluate
from ..privacy import DPConfig, DPTraining, compute_epsilon, private_unit_grad_, solve_noise_multiplier
from ..privacy import DEFAULT_GAMMA
from ..transform import check_gamma
from ..report.checkpoint import load_checkpoint, save_checkpoint
from ..report.io import atomic_write_text, check_saved_config, new_figure, read_csv, save_figure, write_csv, write_json
from .contract import ExperimentResult
from .opacus_baseline import make_private, train_epoch

__all__ = ["ANCHOR", "BENCHMARK_METHODS", "NORMALISATIONS", "DPBenchmarkConfig", "fit_private", "run_dp_benchmark"]

BENCHMARK_METHODS = ("ssgd", "opacus")
# SSGD normalisations: name -> (scope, uses gamma); "gamma" is the default of --dp example
NORMALISATIONS = {"gamma": ("global", True), "unit": ("global", False), "layer": ("layer", True)}
ANCHOR = {"source": "Tramèr & Boneh, ICLR 2021, end-to-end CNN (DP-SGD)", "test_acc": 0.860, "epsilon": 3.0,
          "delta": 1e-5, "batch_size": 2048, "lr": 4.0, "noise_multiplier": 2.15, "epochs": 40}
CHECKPOINT_FORMAT = "ssgd-dp-benchmark"


@dataclass
class DPBenchmarkConfig:
    """Settings of the Fashion-MNIST ε = 3 benchmark (module doc). ``n_train``/``n_test`` ``None``: full sets."""

    dataset: str = "fashion-mnist"
    model: str = "tanh-cnn"
    epsilon: float = 3.0
    delta: float = 1e-5
    accountant: str = "rdp"
    epochs: int = 20
    batch_size: int = 2048
    momentum: float = 0.9
    ssgd_lrs: tuple[float, ...] = (0.2, 0.4, 0.8)
    opacus_lrs: tuple[float, ...] = (2.0, 4.0, 8.0)
    clip: float = 0.1  # Opacus max_grad_norm (Tramèr & Boneh's)
    normalisation: str = "gamma"  # SSGD's normalisation in the final run (NORMALISATIONS)
    gamma: float = DEFAULT_GAMMA
    compare: tuple[str, ...] = ("unit", "layer")  # further SSGD normalisations measured in the pilot
    pilot_epochs: int = 2
    val_fraction: float = 0.1
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "DPBenchmarkConfig":
        from ..privacy.accountant import check_accountant, check_delta, check_target_epsilon

        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)):
            raise ValueError(f"Invalid epsilon={self.epsilon!r}; the benchmark needs a finite target, e.g. 3")
        check_target_epsilon(self.epsilon)
        check_delta(self.delta)
        check_accountant(self.accountant)
        check_gamma(self.gamma)
        for name, val in (("epochs", self.epochs), ("batch_size", self.batch_size),
                          ("pilot_epochs", self.pilot_epochs)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"Invalid {name}={val!r}; must be an integer >= 1")
        for name, grid in (("ssgd_lrs", self.ssgd_lrs), ("opacus_lrs", self.opacus_lrs)):
            if not grid or any(not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)) for v in grid):
                raise ValueError(f"Invalid {name}={grid!r}; give one or more finite learning rates > 0")
        if len(self.ssgd_lrs) != len(self.opacus_lrs):
            raise ValueError(f"the learning-rate grids differ in size (ssgd_lrs {len(self.ssgd_lrs)}, opacus_lrs "
                             f"{len(self.opacus_lrs)}); give both methods a grid of the same size")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"Invalid clip={self.clip!r}; Opacus's max_grad_norm must be a finite number > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Invalid momentum={self.momentum!r}; must be in [0, 1)")
        for n in (self.normalisation, *self.compare):
            if n not in NORMALISATIONS:
                raise ValueError(f"Unknown normalisation {n!r}; expected one of {list(NORMALISATIONS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"Invalid val_fraction={self.val_fraction!r}; must be in (0, 1), e.g. 0.1")
        return self

    @classmethod
    def quick(cls) -> "DPBenchmarkConfig":
        """CI-sized: 600/200 Fashion-MNIST examples, batch 128, 2 epochs, grids of two."""
        return cls(epochs=2, batch_size=128, ssgd_lrs=(0.4, 0.8), opacus_lrs=(4.0, 8.0), pilot_epochs=1,
                   n_train=600, n_test=200)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            log: Callable[[str], None] = print, publish: str | Path | None = None) -> ExperimentResult:
        return run_dp_benchmark(run_dir, self, resume=resume, progress=progress, log=log, publish=publish)


def _gamma_scope(cfg: DPBenchmarkConfig, normalisation: str) -> tuple[str, float]:
    scope, uses_gamma = NORMALISATIONS[normalisation]
    return scope, (cfg.gamma if uses_gamma else 0.0)


def fit_private(method: str, data: ImageDataset, cfg: DPBenchmarkConfig, *, lr: float, epochs: int, sigma: float,
                normalisation: str = "gamma", checkpoint: Path | None = None, resume: bool = False,
                progress: bool = False, desc: str = "", log: Callable[[str], None] | None = None,
                stop_after: int | None = None) -> list[dict[str, Any]]:
    """Train one private run of ``method`` on ``data``; evaluate on ``data.x_test`` after every epoch.

    Returns the per-epoch rows ``{epoch, test_acc, test_loss, epsilon, epsilon_opacus, steps, seconds}``
    (``epsilon`` from :func:`ssgd.privacy.compute_epsilon`, the same accountant for both methods).
    With ``checkpoint``, the state after every epoch is saved there; ``resume`` continues from it
    (bit-identical to an uninterrupted run on CPU). ``stop_after`` ends this call after that many
    epochs (an interruption, for tests)."""
    from tqdm.auto import tqdm

    if method not in BENCHMARK_METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {BENCHMARK_METHODS}")
    device = torch.device(cfg.device)
    n = data.x_train.shape[0]
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    q = 1.0 / steps_per_epoch
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    if method == "ssgd":
        scope, gamma = _gamma_scope(cfg, normalisation)
        dp = DPTraining(DPConfig(level="example", noise_multiplier=sigma, delta=cfg.delta, accountant=cfg.accountant),
                        model, n, cfg.batch_size, epochs, scope=scope, seed=cfg.seed)
        all_idx = torch.arange(n, device=device)

        def one_epoch(bar) -> None:
            for _ in range(steps_per_epoch):
                idx = dp.batch_indices(all_idx)
                opt.zero_grad(set_to_none=True)
                private_unit_grad_(model, F.cross_entropy, xtr[idx], ytr[idx], dp.noise,
                                   expected_batch_size=dp.expected_batch_size, scope=scope, gamma=gamma)
                dp.accountant.step()
                opt.step()
                bar.update(1)

        def state() -> dict[str, Any]:
            return {"dp": dp.state_dict()}

        def load(st: dict[str, Any]) -> None:
            dp.load_state_dict(st["dp"])

        def engine_eps() -> float:
            return dp.accountant.epsilon()
    else:
        from ..privacy import derive_seed

        loader_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "opacus-loader"))
        noise_gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "opacus-noise"))
        engine, pmodel, popt, ploader = make_private(
            model, opt, xtr, ytr, batch_size=cfg.batch_size, noise_multiplier=sigma, max_grad_norm=cfg.clip,
            accountant=cfg.accountant, loader_generator=loader_gen, noise_generator=noise_gen)
        sampler_gen = ploader.batch_sampler.generator or loader_gen

        def one_epoch(bar) -> None:
            train_epoch(pmodel, popt, ploader, after_step=lambda: bar.update(1))

        def state() -> dict[str, Any]:
            return {"opacus_accountant": engine.accountant.state_dict(), "sampler_gen": sampler_gen.get_state(),
                    "noise_gen": noise_gen.get_state()}

        def load(st: dict[str, Any]) -> None:
            engine.accountant.load_state_dict(st["opacus_accountant"])
            sampler_gen.set_state(st["sampler_gen"])
            noise_gen.set_state(st["noise_gen"])

        def engine_eps() -> float:
            return math.inf if sigma == 0 else float(engine.get_epsilon(cfg.delta))

    history: list[dict[str, Any]] = []
    start, elapsed = 1, 0.0
    if resume and checkpoint is not None and checkpoint.is_file():
        ck = load_checkpoint(checkpoint, format=CHECKPOINT_FORMAT,
                             required=("epoch", "model", "optimizer", "history", "state", "run"))
        want = {"method": method, "lr": lr, "epochs": epochs, "sigma": sigma, "normalisation": normalisation}
        if ck["run"] != want:
            from ..report.io import ConfigMismatchError

            raise ConfigMismatchError(f"checkpoint {checkpoint} belongs to the run {ck['run']}, not {want}; "
                                      "resume with the same settings or use a new run folder")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        load(ck["state"])
        history, start, elapsed = list(ck["history"]), int(ck["epoch"]) + 1, float(ck["seconds"])
        torch.set_rng_state(ck["torch_rng"])
        if log is not None and start <= epochs:
            log(f"resume: {desc or method} from epoch {start}")
    t0 = time.perf_counter() - elapsed
    bar = tqdm(total=steps_per_epoch * max(0, epochs - start + 1), desc=desc or method, disable=not progress,
               leave=False)
    for epoch in range(start, epochs + 1):
        if stop_after is not None and epoch - start >= stop_after:
            break
        model.train()
        one_epoch(bar)
        acc, loss = evaluate(model, data.x_test, data.y_test, device=device)
        steps = steps_per_epoch * epoch
        row = {"epoch": epoch, "test_acc": acc, "test_loss": loss,
               "epsilon": compute_epsilon(sigma, q, steps, cfg.delta, cfg.accountant) if sigma > 0 else math.inf,
               "epsilon_opacus": engine_eps(), "steps": steps, "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(acc=f"{acc:.4f}", eps=f"{row['epsilon']:.3g}")
        if log is not None:
            log(f"{desc or method} epoch {epoch}/{epochs}: acc {acc:.4f} eps {row['epsilon']:.4g} "
                f"({row['seconds']:.0f} s)")
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                         "history": history, "seconds": row["seconds"], "state": state(),
                                         "torch_rng": torch.get_rng_state(),
                                         "run": {"method": method, "lr": lr, "epochs": epochs, "sigma": sigma,
                                                 "normalisation": normalisation}},
                            format=CHECKPOINT_FORMAT)
    bar.close()
    return history


def _load_data(cfg: DPBenchmarkConfig) -> ImageDataset:
    data = load_dataset(cfg.dataset)
    if cfg.n_train is not None or cfg.n_test is not None:
        data = subsample(data, cfg.n_train, cfg.n_test, seed=cfg.seed)
    return data


def _pilot(run_dir: Path, cfg: DPBenchmarkConfig, data: ImageDataset, sigma: float, *, resume: bool, progress: bool,
           log: Callable[[str], None]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Learning rates by validation accuracy, and the normalisation comparison (module doc, step 2)."""
    part, val = train_val_split(data, cfg.val_fraction, seed=cfg.seed)
    tune = ImageDataset(part.name, part.x_train, part.y_train, val.x_test, val.y_test, part.num_classes)
    path = run_dir / "pilot.csv"
    rows = read_csv(path) if resume else []

    def done(method: str, norm: str, lr: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["method"] == method and r["normalisation"] == norm
                     and math.isclose(float(r["lr"]), lr, rel_tol=1e-12)), None)

    def measure(method: str, norm: str, lr: float) -> dict[str, Any]:
        row = done(method, norm, lr)
        if row is not None:
            return row
        hist = fit_private(method, tune, cfg, lr=lr, epochs=cfg.pilot_epochs, sigma=sigma, normalisation=norm,
                           progress=progress, desc=f"pilot {method} {norm} lr={lr:g}")
        row = {"method": method, "normalisation": norm, "lr": lr, "val_acc": hist[-1]["test_acc"],
               "val_loss": hist[-1]["test_loss"], "epochs": cfg.pilot_epochs, "sigma": sigma,
               "seconds": hist[-1]["seconds"]}
        rows.append(row)
        write_csv(path, rows)  # after every run: a resumed pilot keeps what was measured
        log(f"pilot {method:>6} {norm:>6} lr={lr:<6g} val acc {row['val_acc']:.4f} ({row['seconds']:.0f} s)")
        return row

    best: dict[str, float] = {}
    for method, grid, norm in (("ssgd", cfg.ssgd_lrs, cfg.normalisation), ("opacus", cfg.opacus_lrs, "clip")):
        scored = [measure(method, norm, float(lr)) for lr in grid]
        best[method] = float(max(scored, key=lambda r: r["val_acc"])["lr"])
    n_tensors = sum(1 for p in build_model(cfg.model, data.shape, data.num_classes).parameters() if p.requires_grad)
    for norm in cfg.compare:
        if norm == cfg.normalisation:
            continue
        lr = best["ssgd"] / math.sqrt(n_tensors) if NORMALISATIONS[norm][0] == "layer" else best["ssgd"]
        measure("ssgd", norm, lr)
    return best, rows


def _plot(histories: dict[str, list[dict[str, Any]]], cfg: DPBenchmarkConfig, path: Path) -> Path:
    fig, ax = new_figure(figsize=(5.5, 3.6))
    for method, marker in zip(histories, "os"):
        h = histories[method]
        ax.plot([r["epoch"] for r in h], [r["test_acc"] for r in h], marker=marker, ms=3, label=method)
    ax.axhline(ANCHOR["test_acc"], color="grey", ls="--", lw=1, label="Tramèr & Boneh DP-SGD (40 epochs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{cfg.dataset}, {cfg.model}, ε = {cfg.epsilon:g}, δ = {cfg.delta:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def run_dp_benchmark(run_dir: str | Path, cfg: DPBenchmarkConfig, *, resume: bool = False, progress: bool = True,
                     log: Callable[[str], None] = print, publish: str | Path | None = None) -> ExperimentResult:
    """Run the benchmark into ``run_dir`` (pilot, both final runs, JSON, PNG, report.md).

    ``publish``: a folder that also receives ``dp_benchmark.json`` and ``dp_benchmark.png``
    (the repository's ``docs/results``)."""
    cfg.validate()
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_saved_config(run_dir, cfg.to_dict())
    write_json(run_dir / "config.json", cfg.to_dict())
    data = _load_data(cfg)
    n = data.x_train.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    q = 1.0 / steps_per_epoch
    sigma = solve_noise_multiplier(cfg.epsilon, cfg.delta, q, steps_per_epoch * cfg.epochs, cfg.accountant)
    log(f"{cfg.dataset}: {n} train / {data.x_test.shape[0]} test, q = 1/{steps_per_epoch}, "
        f"{cfg.epochs} epochs: sigma = {sigma:.4f} for eps = {cfg.epsilon:g} at delta = {cfg.delta:g}")
    lrs, pilot_rows = _pilot(run_dir, cfg, data, sigma, resume=resume, progress=progress, log=log)
    log(f"learning rates chosen on the validation split: {lrs}")
    histories: dict[str, list[dict[str, Any]]] = {}
    for method in BENCHMARK_METHODS:
        histories[method] = fit_private(method, data, cfg, lr=lrs[method], epochs=cfg.epochs, sigma=sigma,
                                        normalisation=cfg.normalisation, checkpoint=run_dir / f"{method}.ckpt",
                                        resume=resume, progress=progress, desc=f"final {method}", log=log)
        write_csv(run_dir / f"{method}_history.csv", histories[method])
    runs = {m: {"test_acc": h[-1]["test_acc"], "lr": lrs[m], "noise_multiplier": sigma, "epsilon": h[-1]["epsilon"],
                "epsilon_opacus_engine": h[-1]["epsilon_opacus"], "steps": h[-1]["steps"],
                "seconds": h[-1]["seconds"], "per_epoch": [{k: r[k] for k in ("epoch", "test_acc", "epsilon")}
                                                          for r in h]}
            for m, h in histories.items()}
    runs["ssgd"].update({"normalisation": cfg.normalisation, "gamma": _gamma_scope(cfg, cfg.normalisation)[1]})
    runs["opacus"]["max_grad_norm"] = cfg.clip
    result = {"dataset": cfg.dataset, "model": cfg.model, "n_train": n, "n_test": int(data.x_test.shape[0]),
              "epsilon": cfg.epsilon, "delta": cfg.delta, "accountant": cfg.accountant, "epochs": cfg.epochs,
              "batch_size": cfg.batch_size, "sample_rate": q, "momentum": cfg.momentum, "device": cfg.device,
              "runs": runs, "anchor": ANCHOR,
              "pilot": {"epochs": cfg.pilot_epochs, "val_fraction": cfg.val_fraction, "rows": pilot_rows}}
    json_path = write_json(run_dir / "dp_benchmark.json", result)
    png = _plot(histories, cfg, run_dir / "dp_benchmark.png")
    figures = {"accuracy_vs_epoch": png}
    if publish is not None:
        pub = Path(publish)
        write_json(pub / "dp_benchmark.json", result)
        figures["published"] = _plot(histories, cfg, pub / "dp_benchmark.png")
    s, o = runs["ssgd"], runs["opacus"]
    lines = [
        f"# SSGD + noise vs Opacus DP-SGD: {cfg.dataset} at ε = {cfg.epsilon:g}, δ = {cfg.delta:g}",
        "",
        f"Model `{cfg.model}`, {n} training / {result['n_test']} test examples, {cfg.epochs} epochs, Poisson "
        f"sampling at q = 1/{steps_per_epoch} (expected batch {n * q:.0f}), SGD momentum {cfg.momentum:g}, "
        f"σ = {sigma:.4f} solved by the {cfg.accountant.upper()} accountant, device {cfg.device}.",
        "",
        "| run | test accuracy | lr | σ | ε (same accountant) | ε (Opacus engine) | time |",
        "|---|---|---|---|---|---|---|",
        f"| anchor: {ANCHOR['source']} | {ANCHOR['test_acc']:.3f} | {ANCHOR['lr']:g} | {ANCHOR['noise_multiplier']:g} "
        f"| {ANCHOR['epsilon']:g} | - | - |",
        f"| ssgd + noise ({cfg.normalisation}, γ = {s['gamma']:g}) | {s['test_acc']:.4f} | {s['lr']:g} | {sigma:.4f} "
        f"| {s['epsilon']:.4g} | {s['epsilon_opacus_engine']:.4g} | {s['seconds']:.0f} s |",
        f"| opacus DP-SGD (C = {cfg.clip:g}) | {o['test_acc']:.4f} | {o['lr']:g} | {sigma:.4f} | {o['epsilon']:.4g} "
        f"| {o['epsilon_opacus_engine']:.4g} | {o['seconds']:.0f} s |",
        "",
        "![test accuracy vs epoch](dp_benchmark.png)",
        "",
        f"## Pilot on the validation split ({cfg.pilot_epochs} epochs, {cfg.val_fraction:g} of the training set)",
        "",
        "| method | normalisation | lr | validation accuracy |",
        "|---|---|---|---|",
        *[f"| {r['method']} | {r['normalisation']} | {float(r['lr']):g} | {float(r['val_acc']):.4f} |"
          for r in pilot_rows],
        "",
        f"Per-epoch rows: [ssgd_history.csv](ssgd_history.csv), [opacus_history.csv](opacus_history.csv); "
        f"all numbers: [dp_benchmark.json](dp_benchmark.json). Total time of this call: "
        f"{time.perf_counter() - t_start:.0f} s.",
    ]
    report = atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    summary = {"sigma": sigma, "ssgd_test_acc": s["test_acc"], "opacus_test_acc": o["test_acc"],
               "ssgd_epsilon": s["epsilon"], "opacus_epsilon": o["epsilon"], "json": str(json_path)}
    return ExperimentResult(run_dir=run_dir, report=report,
                            tables={"pilot": pilot_rows, **{f"{m}_history": h for m, h in histories.items()}},
                            figures=figures, summary=summary, text="\n".join(lines),
                            seconds=time.perf_counter() - t_start)
