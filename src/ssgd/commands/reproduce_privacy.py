"""``ssgd reproduce privacy``: accuracy vs epsilon (SSGD+noise vs Opacus DP-SGD) and attack PSNR vs epsilon;
with ``--benchmark``, the field's benchmark (Fashion-MNIST, tanh CNN, ε = 3) beside Opacus and the anchor."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._experiment_cli import open_run_dir

from ._options import USER_ERRORS, check_device, parse_choices, parse_float_list, parse_list, user_errors

__all__ = ["command", "parse_epsilons"]


def parse_epsilons(text: str | None) -> tuple[float, ...] | None:
    """``"1,2,4,8,inf"`` -> ``(1.0, 2.0, 4.0, 8.0, inf)``; a clear ``BadParameter`` on a bad entry."""
    return parse_list(text, "--epsilons", float, "1,2,4,8,inf", check=lambda v: v > 0,
                      must="must be > 0 (inf = no noise)")


def _finite(text: str | None, option: str, *, allow_zero: bool = False) -> tuple[float, ...] | None:
    import math

    vals = parse_float_list(text, option, "0.1,0.01" if allow_zero else "1,4", positive=not allow_zero)
    if vals is not None and any(not math.isfinite(v) or v < 0 for v in vals):
        raise typer.BadParameter(f"{option}: every value must be a finite number {'>= 0' if allow_zero else '> 0'}; "
                                 f"got {text!r}")
    return vals


def command(
    quick: bool = typer.Option(False, "--quick", help="CI-sized run: MNIST slice, eps 4 and inf, 2 epochs, one "
                                                      "short attack (with --benchmark: 600 images, 2 epochs)"),
    benchmark: bool = typer.Option(False, "--benchmark", help="the field's DP benchmark instead: full "
                                   "Fashion-MNIST, the tanh CNN, eps 3, SSGD + noise beside Opacus DP-SGD"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated datasets (default mnist,fashion-mnist)"),
    epsilons: Optional[str] = typer.Option(None, help="comma-separated target epsilons (default 1,2,4,8,inf)"),
    delta: float = typer.Option(1e-5, help="delta of every (epsilon, delta) guarantee"),
    accountant: str = typer.Option("rdp", help="Opacus accountant: rdp | prv"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: ssgd+noise,opacus (default both)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per run (benchmark: sigma is solved for them)"),
    batch_size: Optional[int] = typer.Option(None, help="expected (Poisson) batch size"),
    lr: Optional[float] = typer.Option(None, help="learning rate for both methods (default: each method's best of "
                                                  "1, 4 on a validation split at epsilon 4)"),
    train_size: Optional[int] = typer.Option(None, help="training examples per dataset (stratified subset)"),
    attacks: Optional[str] = typer.Option(None, help="comma-separated attack specs for the PSNR grid "
                                                     "(default dlg-unit,inverting,inverting-layer; 'none' skips it)"),
    attack_images: Optional[int] = typer.Option(None, help="images attacked per epsilon"),
    attack_sigmas: Optional[str] = typer.Option(None, help="extra comma-separated noise levels sigma for the "
                                                           "attack grid (e.g. 0.1,0.01), shown with their epsilon"),
    lr_grid: Optional[str] = typer.Option(None, help="comma-separated learning rates to pick from on the "
                                                     "validation split (default 1,4)"),
    ssgd_lrs: Optional[str] = typer.Option(None, help="benchmark: SSGD's learning-rate grid (default 0.2,0.4,0.8)"),
    opacus_lrs: Optional[str] = typer.Option(None, help="benchmark: Opacus's learning-rate grid, same size "
                                                        "(default 2,4,8)"),
    seeds: Optional[str] = typer.Option(None, help="benchmark: comma-separated seeds, paired across methods "
                                                   "(default 0,1,2)"),
    features: Optional[str] = typer.Option(None, help="benchmark: train a linear model on these features instead "
                                                      "of the end-to-end CNN: scatternet"),
    max_widen: Optional[int] = typer.Option(None, help="benchmark: a best lr at a grid's edge adds one point "
                                                       "beyond it, at most this many times (default 2)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", file_okay=False,
                                            help="benchmark: Fashion-MNIST IDX folder (default: Debian's "
                                                 "/usr/share/datasets/fashion-mnist)"),
    workers: int = typer.Option(1, help="benchmark: independent runs (grid points, seeds) in parallel "
                                        "processes, each on --device"),
    normalisation: Optional[str] = typer.Option(None, help="benchmark: SSGD's normalisation gamma | unit | layer "
                                                           "(default gamma: g/(||g|| + 0.01))"),
    device: str = typer.Option("cpu", help="benchmark: cpu | cuda[:k]"),
    publish: Optional[Path] = typer.Option(None, help="benchmark: also write dp_benchmark.json/png into this "
                                                      "folder (e.g. docs/results)"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/privacy-<time>)"),
    resume: bool = typer.Option(False, help="continue the run in --out (same settings): keep the lr choice and "
                                            "runs already done (benchmark: from the last epoch's checkpoint)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Accuracy vs epsilon for SSGD + calibrated noise and Opacus DP-SGD, and attack PSNR vs epsilon."""

    if resume and out is None:
        raise typer.BadParameter("--resume needs --out <run folder>")
    if benchmark:
        if workers < 1:
            raise typer.BadParameter(f"--workers {workers}: must be >= 1 (independent runs in parallel processes)")
        cfg = _benchmark_config(quick, delta, accountant, epochs, batch_size, ssgd_lrs, opacus_lrs, seeds, features,
                                max_widen, normalisation, device)
        if data_dir is not None:
            if not data_dir.is_dir():
                raise typer.BadParameter(f"--data-dir {data_dir}: no such folder; give the folder with the "
                                         "Fashion-MNIST *-ubyte.gz files")
            import dataclasses

            cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
        with user_errors():
            run_dir = open_run_dir(out, "dp-benchmark", resume=resume)
            try:
                res = cfg.run(run_dir, resume=resume, progress=progress, log=typer.echo, publish=publish,
                              workers=workers)
            except USER_ERRORS:
                raise
            except ValueError as e:  # e.g. a dataset that is not installed
                raise typer.BadParameter(str(e)) from e
        typer.echo(res.text)
        typer.echo(f"run folder: {run_dir}")
        return
    from ..experiments.privacy import PrivacyReproConfig

    cfg = PrivacyReproConfig.quick() if quick else PrivacyReproConfig()
    kw: dict = {}
    if datasets is not None:
        kw["datasets"] = parse_list(datasets, "--datasets", str, "mnist,fashion-mnist")
    eps = parse_epsilons(epsilons)
    if eps is not None:
        kw["epsilons"] = eps
    if methods is not None:
        from ..experiments.privacy import METHODS

        kw["methods"] = parse_choices(methods, "--methods", METHODS)
    if attacks is not None:
        kw["attacks"] = () if attacks.strip() == "none" else parse_list(attacks, "--attacks", str, "dlg-unit")
    if attack_sigmas is not None:
        kw["attack_sigmas"] = _finite(attack_sigmas, "--attack-sigmas", allow_zero=True)
    if lr_grid is not None:
        kw["lr_grid"] = _finite(lr_grid, "--lr-grid")
    if lr is not None:
        kw["lr"], kw["lr_grid"] = lr, ()  # a given lr is used as is (no validation grid)
    for key, val in (("epochs", epochs), ("batch_size", batch_size), ("n_train", train_size),
                     ("attack_images", attack_images)):
        if val is not None:
            kw[key] = val
    import dataclasses

    cfg = dataclasses.replace(cfg, delta=delta, accountant=accountant, seed=seed, **kw)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with user_errors():
        run_dir = open_run_dir(out, "privacy", resume=resume)
        try:
            res = cfg.run(run_dir, resume=resume, progress=progress, log=typer.echo)
        except USER_ERRORS:
            raise
        except ValueError as e:  # e.g. an unknown dataset
            raise typer.BadParameter(str(e)) from e
    typer.echo(res.report.read_text())
    typer.echo(f"run folder: {run_dir}")


# DPBenchmarkConfig field -> the flag that sets it (the command layer names flags; the experiment names fields)
_BENCHMARK_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "ssgd_lrs": "--ssgd-lrs",
                    "opacus_lrs": "--opacus-lrs", "seeds": "--seeds", "max_widen": "--max-widen",
                    "normalisation": "--normalisation", "delta": "--delta", "accountant": "--accountant",
                    "features": "--features"}


def _benchmark_config(quick, delta, accountant, epochs, batch_size, ssgd_lrs, opacus_lrs, seeds, features,
                      max_widen, normalisation, device):
    import dataclasses

    from ..experiments.dp_benchmark import FEATURES, NORMALISATIONS, DPBenchmarkConfig

    if features is not None:
        features = parse_choices(features, "--features", tuple(FEATURES))[0]
    cfg = DPBenchmarkConfig.for_features(features)
    if quick:
        q = DPBenchmarkConfig.quick()
        cfg = dataclasses.replace(cfg, epochs=q.epochs, batch_size=q.batch_size, max_widen=q.max_widen,
                                  seeds=q.seeds, n_train=q.n_train, n_test=q.n_test,
                                  **({} if features else {"ssgd_lrs": q.ssgd_lrs, "opacus_lrs": q.opacus_lrs}))
    kw: dict = {"delta": delta, "accountant": accountant, "device": check_device(device)}
    grids = (("ssgd_lrs", _finite(ssgd_lrs, "--ssgd-lrs")), ("opacus_lrs", _finite(opacus_lrs, "--opacus-lrs")))
    seed_list = parse_list(seeds, "--seeds", int, "0,1,2", check=lambda v: v >= 0, must="must be >= 0")
    for key, val in (("epochs", epochs), ("batch_size", batch_size), ("max_widen", max_widen),
                     ("seeds", seed_list), *grids):
        if val is not None:
            kw[key] = val
    if normalisation is not None:
        kw["normalisation"] = parse_choices(normalisation, "--normalisation", tuple(NORMALISATIONS))[0]
    cfg = dataclasses.replace(cfg, **kw)
    try:
        return cfg.validate()
    except ValueError as e:
        msg = str(e)
        for field, flag in _BENCHMARK_FLAGS.items():
            msg = msg.replace(f"{field}=", f"{flag} ")
        raise typer.BadParameter(msg) from e
