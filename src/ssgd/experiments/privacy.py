"""``ssgd reproduce privacy``: accuracy vs ε for SSGD+noise and Opacus DP-SGD, and attack PSNR vs ε.

Accuracy part. For every dataset and every target ε (at δ), one noise multiplier σ is
solved with Opacus's accountant for the run's sampling rate ``q = 1/ceil(N/B)`` and
step count, then two private trainings run with the *same* σ, q, steps, model,
initialisation, optimizer and learning rate -- each one run of the DP benchmark's experiment
(:func:`ssgd.experiments.dp_benchmark.fit_private` on :meth:`PrivacyReproConfig.run_config`,
paired Poisson masks):

* ``ssgd+noise`` -- :class:`ssgd.privacy.DPTraining` at example level (what ``ssgd train
  --dp example`` runs): Poisson-sampled batches, every example's gradient normalised
  (``g/(||g|| + γ)``, the ``--dp example`` default; ``torch.func`` per-sample gradients),
  summed, ``N(0, σ²)`` added, divided by the expected batch size;
* ``opacus`` -- ``opacus.PrivacyEngine.make_private`` (Poisson sampling, per-sample
  clipping to ``max_grad_norm``, ``N(0, σ²C²)``): DP-SGD as Opacus ships it.

ε = ∞ means σ = 0 (normalisation resp. clipping only, no noise): the non-private
reference of each mechanism. Both accountants' ε are recorded (they must agree).

Attack part. For every ε the σ of the accuracy runs is what one released step adds to
a node's sum of unit vectors; the attack grid (``ssgd.attacks``) attacks the
``ssgd-noise:sigma=σ`` defence (a single example's unit vector + ``N(0, σ²)``, exactly
the example-level release for a batch of one) and reports PSNR/SSIM of the
reconstructions, with the SSGD-aware attacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import ImageDataset, load_dataset, subsample
from ..models import build_model
from ..privacy import compute_epsilon, derive_seed, solve_noise_multiplier
from ..report.io import atomic_write_text, check_saved_config, new_figure, read_csv, save_figure, write_csv, write_json
from .contract import ExperimentResult
from .dp_benchmark import DPBenchmarkConfig, fit_private

__all__ = ["PrivacyReproConfig", "METHODS", "run_accuracy_grid", "run_attack_grid", "run_privacy_repro",
           "format_eps"]

# this reproduction's method names -> the DP benchmark's (the same private-training experiment, fit_private)
METHODS = ("ssgd+noise", "opacus")
BENCHMARK_METHOD = {"ssgd+noise": "ssgd", "opacus": "opacus"}


@dataclass
class PrivacyReproConfig:
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    epsilons: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, math.inf)
    delta: float = 1e-5
    accountant: str = "rdp"
    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"hidden": 128, "depth": 1})
    n_train: int | None = 4000  # per dataset (MNIST embedded has 4000); Fashion-MNIST is subsampled to match
    n_test: int | None = 1000
    batch_size: int = 256
    epochs: int = 8
    optimizer: str = "sgd"  # "sgd" | "sgdm" (momentum 0.9), the same for both methods
    lr: float = 1.0  # used as is when lr_grid is empty
    lr_grid: tuple[float, ...] = (1.0, 4.0)  # per method, picked on a validation split at tune_epsilon
    tune_epsilon: float = 4.0
    val_fraction: float = 0.1
    schedule: str = "cosine"  # "cosine" (to 0 over the run) | "constant"; post-processing, no privacy cost
    clip: float = 1.0  # Opacus max_grad_norm (the unit vectors' norm is 1: same sensitivity)
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    # attack grid
    # the SSGD-aware attacks, and Inverting Gradients' global cosine, which is blind to the global modulus
    attacks: tuple[str, ...] = ("dlg-unit", "inverting", "inverting-layer")
    attack_model: str = "lenet"
    attack_images: int = 4
    attack_iters: int | None = None  # None: the attack's default
    attack_sigmas: tuple[float, ...] = ()  # extra sigma points for the attack grid (their training epsilon is shown)

    def validate(self) -> "PrivacyReproConfig":
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"Unknown method {m!r}; expected a subset of {METHODS}")
        for e in self.epsilons:
            if not e > 0:
                raise ValueError(f"Invalid epsilon {e!r} in the grid; every epsilon must be > 0 (inf allowed)")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"Invalid schedule={self.schedule!r}; expected 'cosine' or 'constant'")
        if self.optimizer not in ("sgd", "sgdm"):
            raise ValueError(f"Invalid optimizer={self.optimizer!r}; expected 'sgd' or 'sgdm'")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"Invalid batch_size={self.batch_size}/epochs={self.epochs}; both must be >= 1")
        return self

    @classmethod
    def quick(cls) -> "PrivacyReproConfig":
        """CI-sized: one MNIST slice, ε 4 and ∞, 2 epochs, one short attack."""
        return cls(datasets=("mnist",), epsilons=(4.0, math.inf), n_train=256, n_test=100, batch_size=64, epochs=2,
                   lr_grid=(), lr=1.0, attacks=("dlg-unit",), attack_images=1, attack_iters=20)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_config(self) -> DPBenchmarkConfig:
        """The settings of one private run: this grid's model, batch, optimizer, schedule, clip and accountant
        as the DP benchmark's config -- both experiments train through :func:`fit_private`."""
        return DPBenchmarkConfig(model=self.model, model_kwargs=dict(self.model_kwargs), batch_size=self.batch_size,
                                 momentum=0.9 if self.optimizer == "sgdm" else 0.0, schedule=self.schedule,
                                 clip=self.clip, delta=self.delta, accountant=self.accountant)

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
            log: Callable[[str], None] = print) -> ExperimentResult:
        """The :mod:`ssgd.experiments.contract` entry point (see :func:`run_privacy_repro`)."""
        t0 = time.perf_counter()
        report = run_privacy_repro(run_dir, self, progress=progress, log=log, resume=resume,
                                   attack=bool(self.attacks))
        run_dir = Path(run_dir)
        tables = {"accuracy": read_csv(run_dir / "accuracy.csv")}
        if (run_dir / "attack.csv").is_file() and self.attacks:
            tables["attack"] = read_csv(run_dir / "attack.csv")
        figures = {p.stem: p for p in sorted(run_dir.glob("*.png"))}
        return ExperimentResult(run_dir=run_dir, report=report, tables=tables, figures=figures,
                                text=report.read_text(), seconds=time.perf_counter() - t0)


def format_eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def _load(name: str, cfg: PrivacyReproConfig) -> ImageDataset:
    return subsample(load_dataset(name), cfg.n_train, cfg.n_test, seed=cfg.seed)


def tune_lr(run_dir: Path, cfg: PrivacyReproConfig, *, progress: bool = True,
            log: Callable[[str], None] = print, resume: bool = False) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Pick each method's learning rate from ``cfg.lr_grid`` by *validation* accuracy.

    On ``cfg.datasets[0]``: a stratified ``val_fraction`` of the training set is held out,
    both methods train at ``tune_epsilon`` on the rest (σ solved for that reduced set)
    and are scored on the held-out part -- the test set is never looked at. (As in most
    DP papers, the privacy cost of this tuning is not accounted.)"""
    from ..data import train_val_split

    if len(cfg.lr_grid) <= 1:
        lr = cfg.lr_grid[0] if cfg.lr_grid else cfg.lr
        return {m: lr for m in cfg.methods}, []
    done = read_csv(run_dir / "lr_tuning.csv") if resume else []
    if done and {(r["method"], r["lr"]) for r in done} >= {(m, lr) for m in cfg.methods for lr in cfg.lr_grid}:
        best = {m: max((r for r in done if r["method"] == m), key=lambda r: r["val_acc"])["lr"] for m in cfg.methods}
        log(f"resume: learning rates from lr_tuning.csv: {best}")
        return best, done
    part, val = train_val_split(_load(cfg.datasets[0], cfg), cfg.val_fraction, seed=cfg.seed)
    tune_data = ImageDataset(part.name, part.x_train, part.y_train, val.x_test, val.y_test, part.num_classes)
    n = tune_data.x_train.shape[0]
    spe = math.ceil(n / cfg.batch_size)
    sigma = solve_noise_multiplier(cfg.tune_epsilon, cfg.delta, 1.0 / spe, spe * cfg.epochs, cfg.accountant)
    rows, best = [], {}
    for method in cfg.methods:
        for lr in cfg.lr_grid:
            last = fit_private(BENCHMARK_METHOD[method], tune_data, cfg.run_config(), lr=lr, epochs=cfg.epochs,
                               sigma=sigma, seed=cfg.seed, progress=progress, desc=f"{method} sigma={sigma:.3g}")[-1]
            rows.append({"method": method, "lr": lr, "val_acc": last["test_acc"], "sigma": sigma,
                         "epsilon": last["epsilon"]})
            log(f"tune {method:>10} lr={lr:g}: val acc {last['test_acc']:.4f} (eps {format_eps(cfg.tune_epsilon)})")
        best[method] = max((r for r in rows if r["method"] == method), key=lambda r: r["val_acc"])["lr"]
    write_csv(run_dir / "lr_tuning.csv", rows)
    return best, rows


def run_accuracy_grid(run_dir: Path, cfg: PrivacyReproConfig, *, progress: bool = True,
                      log: Callable[[str], None] = print,
                      lrs: dict[str, float] | None = None, resume: bool = False) -> list[dict[str, Any]]:
    """Every (dataset, ε, method) run; with ``resume`` the rows already in accuracy.csv are kept, not rerun."""
    rows: list[dict[str, Any]] = read_csv(run_dir / "accuracy.csv") if resume else []
    done = {(r["dataset"], float(r["target_epsilon"]), r["method"]) for r in rows}
    for ds in cfg.datasets:
        data = _load(ds, cfg)
        n = data.x_train.shape[0]
        q = 1.0 / math.ceil(n / cfg.batch_size)
        steps = math.ceil(n / cfg.batch_size) * cfg.epochs
        for eps in cfg.epsilons:
            sigma = solve_noise_multiplier(eps, cfg.delta, q, steps, cfg.accountant)
            for method in cfg.methods:
                if (ds, float(eps), method) in done:
                    log(f"resume: {ds} eps={format_eps(eps)} {method} already in accuracy.csv")
                    continue
                lr = (lrs or {}).get(method, cfg.lr)
                hist = fit_private(BENCHMARK_METHOD[method], data, cfg.run_config(), lr=lr, epochs=cfg.epochs,
                                   sigma=sigma, seed=cfg.seed, progress=progress, desc=f"{method} sigma={sigma:.3g}")
                last = hist[-1]
                row = {"dataset": ds, "target_epsilon": eps, "method": method, "sigma": sigma, "sample_rate": q,
                       **{k: last[k] for k in ("steps", "test_acc", "epsilon", "epsilon_opacus", "seconds")},
                       "lr": lr, "n_train": n}
                rows.append(row)
                write_csv(run_dir / "accuracy" / f"{ds}-{method}-eps{format_eps(eps)}.csv",
                          [{k: r[k] for k in ("epoch", "test_acc", "epsilon", "steps", "seconds")} for r in hist])
                write_csv(run_dir / "accuracy.csv", rows)  # after every run: partial results survive
                log(f"{ds:>13} eps={format_eps(eps):>4} sigma={sigma:7.4f} {method:>10}: "
                    f"acc={row['test_acc']:.4f} eps(ours)={row['epsilon']:.4g} "
                    f"eps(opacus)={row['epsilon_opacus']:.4g} ({row['seconds']:.0f} s)")
    return rows


def run_attack_grid(run_dir: Path, cfg: PrivacyReproConfig, sigmas: dict[float, float], *, progress: bool = True,
                    log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], list[str]]:
    """PSNR vs ε for the ``ssgd-noise`` defence, with the attack harness (``ssgd.attacks``).

    ``sigmas`` maps each target ε to the σ of the accuracy runs. Every attack in
    ``cfg.attacks`` attacks ``cfg.attack_images`` single test images (batch of one, the
    attacker's best case) through ``cfg.attack_model`` at initialisation (DLG's setting),
    once with no defence (reference) and once per ε with ``ssgd-noise:sigma=σ``.
    Returns the rows and the report's Markdown lines; writes attack.csv and one image
    grid per attack.
    """
    from ..attacks import AttackMeta, get_attack
    from ..defenses import get_defense
    from ..metrics import score_batch

    data = _load(cfg.datasets[0], cfg)
    # one test image per class (the first of each class), so the targets are not all alike
    firsts = [int(torch.nonzero(data.y_test == c)[0]) for c in range(data.num_classes) if bool((data.y_test == c).any())]
    pick = torch.tensor(firsts[:cfg.attack_images])
    k_img = pick.numel()
    xs, ys = data.x_test[pick], data.y_test[pick]
    model = build_model(cfg.attack_model, data.shape, data.num_classes, seed=cfg.seed)
    cells: list[tuple[str, float, float]] = [("none", math.nan, math.inf)]
    for eps in sorted(sigmas, key=lambda e: -1 if math.isinf(e) else e):
        cells.append((f"ssgd-noise:sigma={sigmas[eps]:.6g}", sigmas[eps], eps))
    rows: list[dict[str, Any]] = []
    images: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for spec in cfg.attacks:
        attack = get_attack(spec, iters=cfg.attack_iters)
        for dspec, sigma, eps in cells:
            defence = get_defense(dspec)
            shared = []
            for k in range(k_img):
                g = torch.Generator().manual_seed(derive_seed(cfg.seed, "attack-noise", dspec, k))
                shared.append(defence.shared_update(model, xs[k:k + 1], ys[k:k + 1], generator=g))
            metas = [AttackMeta(tuple(data.shape), 1, data.num_classes, labels=None, seed=cfg.seed + k)
                     for k in range(k_img)]
            t0 = time.perf_counter()
            recs = attack.reconstruct_batch(model, shared, metas, progress=progress)
            scores = [score_batch(r.images, xs[k:k + 1], r.labels, ys[k:k + 1]) for k, r in enumerate(recs)]
            single = (math.inf if not sigma > 0 else compute_epsilon(sigma / 2.0, 1.0, 1, cfg.delta, cfg.accountant))
            row = {"attack": spec, "attack_spec": attack.spec, "defence": dspec, "target_epsilon": eps if dspec != "none" else math.nan,
                   "sigma": sigma, "epsilon_one_release_local": single if dspec != "none" else math.nan,
                   "psnr": sum(s["psnr"] for s in scores) / k_img, "ssim": sum(s["ssim"] for s in scores) / k_img,
                   "label_acc": sum(s["label_acc"] for s in scores) / k_img,
                   "psnr_per_image": [round(s["psnr"], 3) for s in scores], "seconds": time.perf_counter() - t0}
            rows.append(row)
            images.setdefault(spec, []).append(
                ("no defence" if dspec == "none" else f"eps={format_eps(eps)}",
                 torch.cat([r.images.detach().float().cpu().clamp(0, 1) for r in recs])))
            write_csv(run_dir / "attack.csv", rows)
            log(f"attack {spec:>16} vs {dspec:<28} eps={format_eps(eps):>4}: PSNR {row['psnr']:.2f} dB "
                f"SSIM {row['ssim']:.3f} labels {row['label_acc']:.2f} ({row['seconds']:.0f} s)")
    # reference: an attacker who ignores the gradient and outputs the mean training image
    mean_img = data.x_train.mean(0, keepdim=True).expand(k_img, -1, -1, -1)
    prior = score_batch(mean_img, xs)
    rows.append({"attack": "prior-only (mean training image)", "attack_spec": "-", "defence": "-",
                 "target_epsilon": math.nan, "sigma": math.nan, "epsilon_one_release_local": math.nan,
                 "psnr": prior["psnr"], "ssim": prior["ssim"], "label_acc": math.nan, "psnr_per_image": [],
                 "seconds": 0.0})
    write_csv(run_dir / "attack.csv", rows)
    figs = []
    for spec, ims in images.items():
        name = "attack_" + spec.replace(":", "_").replace(",", "_").replace("=", "") + ".png"
        _image_grid(xs, ims, run_dir / name, spec)
        figs.append(name)
    _plot_psnr(rows, cfg, run_dir / "psnr_vs_epsilon.png")
    lines = [
        "## Attack PSNR vs ε (`ssgd-noise`)",
        "",
        f"Attacks on {k_img} single {cfg.datasets[0]} test images (batch 1), `{cfg.attack_model}` at initialisation. "
        "The defence shares the image's unit gradient plus N(0, σ²) with the σ of the training runs at that ε "
        "(what one step of example-level SSGD+noise releases about a batch of one). Higher PSNR = more leakage. "
        "'ε one release (local)' is the guarantee of that single release on its own in the local model "
        "(sensitivity 2, no sampling): the training ε is the one that composes over the whole run.",
        "",
        "| attack | defence | target ε (training) | σ | ε one release (local) | PSNR dB | SSIM | label acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["defence"] == "-":
            lines.append(f"| {r['attack']} | - | - | - | - | {r['psnr']:.2f} | {r['ssim']:.3f} | - |")
            continue
        lines.append(f"| {r['attack']} | {r['defence'].split(':')[0]} | "
                     f"{'-' if r['defence'] == 'none' else format_eps(r['target_epsilon'])} | "
                     f"{'-' if math.isnan(r['sigma']) else format(r['sigma'], '.4g')} | "
                     f"{'-' if r['defence'] == 'none' else format(r['epsilon_one_release_local'], '.4g')} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['label_acc']:.2f} |")
    lines += ["", "![PSNR vs epsilon](psnr_vs_epsilon.png)", ""]
    lines += [f"![{f}]({f})" for f in figs] + [""]
    return rows, lines


def _image_grid(originals: torch.Tensor, rows: list[tuple[str, torch.Tensor]], path: Path, title: str) -> None:
    k = originals.shape[0]
    all_rows = [("original", originals)] + rows
    fig, axes = new_figure(len(all_rows), k, figsize=(1.3 * k + 1.2, 1.3 * len(all_rows)), squeeze=False)
    for i, (label, ims) in enumerate(all_rows):
        for j in range(k):
            ax = axes[i][j]
            img = ims[j].permute(1, 2, 0).squeeze(-1).numpy() if j < ims.shape[0] else None
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    save_figure(fig, path)


def _plot_psnr(rows: list[dict[str, Any]], cfg: PrivacyReproConfig, path: Path) -> None:
    finite = sorted({r["target_epsilon"] for r in rows
                     if r["defence"] not in ("none", "-") and not math.isinf(r["target_epsilon"])})
    inf_x = (max(finite) * 2) if finite else 1.0
    fig, ax = new_figure(figsize=(5, 3.5))
    for spec in dict.fromkeys(r["attack"] for r in rows):
        if spec.startswith("prior-only"):
            ax.axhline(next(r["psnr"] for r in rows if r["attack"] == spec), color="grey", ls="--", lw=1,
                       label="prior only (mean image)")
            continue
        pts = [(r["target_epsilon"], r["psnr"]) for r in rows if r["attack"] == spec and r["defence"] != "none"]
        line, = ax.plot([inf_x if math.isinf(e) else e for e, _ in pts], [p for _, p in pts], marker="o", label=spec)
        ref = [r["psnr"] for r in rows if r["attack"] == spec and r["defence"] == "none"]
        if ref:
            ax.axhline(ref[0], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ticks = finite + ([inf_x] if any(math.isinf(r["target_epsilon"]) for r in rows
                                      if r["defence"] not in ("none", "-")) else [])
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([format_eps(e) for e in finite] + (["inf"] if len(ticks) > len(finite) else []))
    ax.set_xlabel("target epsilon of the training run")
    ax.set_ylabel("attack PSNR (dB)")
    ax.set_title("ssgd-noise (dotted: no defence)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_accuracy(rows: list[dict[str, Any]], cfg: PrivacyReproConfig, path: Path) -> None:
    fig, axes = new_figure(1, len(cfg.datasets), figsize=(4.5 * len(cfg.datasets), 3.4), squeeze=False)
    finite = [e for e in cfg.epsilons if not math.isinf(e)]
    inf_x = (max(finite) * 2) if finite else 1.0
    for ax, ds in zip(axes[0], cfg.datasets):
        for method, marker in zip(cfg.methods, "os"):
            pts = [(r["target_epsilon"], r["test_acc"]) for r in rows if r["dataset"] == ds and r["method"] == method]
            xs = [inf_x if math.isinf(e) else e for e, _ in pts]
            ax.plot(xs, [a for _, a in pts], marker=marker, label=method)
        ax.set_xscale("log", base=2)
        ticks = finite + ([inf_x] if any(math.isinf(e) for e in cfg.epsilons) else [])
        ax.set_xticks(ticks)
        ax.set_xticklabels([format_eps(e) for e in finite] + (["inf"] if len(ticks) > len(finite) else []))
        ax.set_xlabel(f"epsilon (delta={cfg.delta:g})")
        ax.set_ylabel("test accuracy")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def _acc_table(rows: list[dict[str, Any]], cfg: PrivacyReproConfig) -> list[str]:
    lines = ["| dataset | target ε | σ | " + " | ".join(f"{m} acc" for m in cfg.methods)
             + " | ε (ssgd accountant) | ε (Opacus engine) |",
             "|---|---|---|" + "---|" * len(cfg.methods) + "---|---|"]
    for ds in cfg.datasets:
        for eps in cfg.epsilons:
            rs = {r["method"]: r for r in rows if r["dataset"] == ds and r["target_epsilon"] == eps}
            if not rs:
                continue
            any_r = next(iter(rs.values()))
            accs = " | ".join(f"{rs[m]['test_acc']:.4f}" if m in rs else "-" for m in cfg.methods)
            e_ours = rs.get("ssgd+noise", any_r)["epsilon"]
            e_op = rs.get("opacus", any_r)["epsilon_opacus"]
            lines.append(f"| {ds} | {format_eps(eps)} | {any_r['sigma']:.4f} | {accs} | {e_ours:.4g} | {e_op:.4g} |")
    return lines


def run_privacy_repro(run_dir: str | Path, cfg: PrivacyReproConfig, *, progress: bool = True,
                      attack: bool = True, log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Run both grids and write config.json, accuracy.csv/json, attack.csv, PNGs and report.md.

    ``resume=True`` keeps the learning-rate choice and the accuracy runs already recorded in
    ``run_dir`` (same config) and runs only what is missing; the attack grid always reruns."""
    cfg.validate()
    run_dir = Path(run_dir)
    if resume:  # the attack grid always reruns: its settings may change between calls
        check_saved_config(run_dir, cfg.to_dict(), ignore=("attacks", "attack_images", "attack_iters",
                                                           "attack_model", "attack_sigmas"))
    write_json(run_dir / "config.json", cfg.to_dict())
    t0 = time.perf_counter()
    lrs, tune_rows = tune_lr(run_dir, cfg, progress=progress, log=log, resume=resume)
    rows = run_accuracy_grid(run_dir, cfg, progress=progress, log=log, lrs=lrs, resume=resume)
    write_json(run_dir / "accuracy.json", {"rows": rows})
    _plot_accuracy(rows, cfg, run_dir / "accuracy_vs_epsilon.png")
    lines = [
        "# SSGD + calibrated noise vs Opacus DP-SGD",
        "",
        f"Model `{cfg.model}` {cfg.model_kwargs}, {cfg.epochs} epochs, expected batch {cfg.batch_size} "
        f"(Poisson sampling), {cfg.optimizer} with {cfg.schedule} schedule, learning rates {lrs}, "
        f"δ = {cfg.delta:g}, {cfg.accountant.upper()} accountant, "
        f"seed {cfg.seed}. Training sets: {cfg.n_train} examples, test sets {cfg.n_test}. "
        "Both methods use the same σ (solved for the target ε), q, steps, model init and optimizer; "
        f"Opacus clips to C = {cfg.clip:g}, ssgd+noise normalises every example's gradient to norm 1.",
        "",
        *_acc_table(rows, cfg),
        "",
        "![accuracy vs epsilon](accuracy_vs_epsilon.png)",
        "",
        "Per-epoch curves: [accuracy/](accuracy/); all rows: [accuracy.csv](accuracy.csv).",
        "",
    ]
    if tune_rows:
        lines += [f"Learning rates were picked per method from {list(cfg.lr_grid)} by validation accuracy "
                  f"({cfg.val_fraction:g} of the {cfg.datasets[0]} training set held out, ε = "
                  f"{format_eps(cfg.tune_epsilon)}; the test set was not used): "
                  + ", ".join(f"{r['method']} lr {r['lr']:g} → {r['val_acc']:.4f}" for r in tune_rows)
                  + " ([lr_tuning.csv](lr_tuning.csv)).", ""]
    if attack and cfg.attacks:
        first = [r for r in rows if r["dataset"] == cfg.datasets[0]]
        sigmas = {r["target_epsilon"]: r["sigma"] for r in first}
        if first and cfg.attack_sigmas:  # extra points: the epsilon a training run with this sigma would have
            q, steps = float(first[0]["sample_rate"]), int(first[0]["steps"])
            for sg in cfg.attack_sigmas:
                sigmas[compute_epsilon(sg, q, steps, cfg.delta, cfg.accountant)] = sg
        try:
            arows, alines = run_attack_grid(run_dir, cfg, sigmas, progress=progress, log=log)
            lines += alines
        except ImportError as e:  # the attack harness is optional at build time
            lines += ["## Attack grid", "", f"not run: {e}", ""]
    lines.append(f"Total time: {time.perf_counter() - t0:.0f} s.")
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
