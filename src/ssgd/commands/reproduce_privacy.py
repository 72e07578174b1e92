"""``ssgd reproduce privacy``: accuracy vs epsilon (SSGD+noise vs Opacus DP-SGD) and attack PSNR vs epsilon."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

__all__ = ["command", "parse_epsilons", "QUICK"]

# --quick: a CI-sized run (one dataset slice, two epsilons, 2 epochs, one tiny attack)
QUICK = dict(datasets=("mnist",), epsilons=(4.0, math.inf), n_train=256, n_test=100, batch_size=64, epochs=2,
             lr_grid=(), lr=1.0,
             attacks=("dlg-unit",), attack_images=1, attack_iters=20)


def parse_epsilons(text: str | None) -> tuple[float, ...] | None:
    """``"1,2,4,8,inf"`` -> ``(1.0, 2.0, 4.0, 8.0, inf)``; clear error on a bad entry."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            v = float(part)
        except ValueError:
            raise typer.BadParameter(f"--epsilons: {part!r} is not a number; use e.g. 1,2,4,8,inf") from None
        if not v > 0:
            raise typer.BadParameter(f"--epsilons: {part!r} must be > 0 (inf = no noise)")
        out.append(v)
    if not out:
        raise typer.BadParameter("--epsilons is empty; use e.g. 1,2,4,8,inf")
    return tuple(out)


def _floats(text: str, opt: str, allow_zero: bool = False) -> tuple[float, ...]:
    out = []
    for part in text.split(","):
        try:
            v = float(part.strip())
        except ValueError:
            raise typer.BadParameter(f"{opt}: {part.strip()!r} is not a number") from None
        if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
            raise typer.BadParameter(f"{opt}: {part.strip()!r} must be a finite number {'>= 0' if allow_zero else '> 0'}")
        out.append(v)
    return tuple(out)


def command(
    quick: bool = typer.Option(False, "--quick", help="CI-sized run: MNIST slice, eps 4 and inf, 2 epochs, one "
                                                      "short attack"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated datasets (default mnist,fashion-mnist)"),
    epsilons: Optional[str] = typer.Option(None, help="comma-separated target epsilons (default 1,2,4,8,inf)"),
    delta: float = typer.Option(1e-5, help="delta of every (epsilon, delta) guarantee"),
    accountant: str = typer.Option("rdp", help="Opacus accountant: rdp | prv"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: ssgd+noise,opacus (default both)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per run"),
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
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/privacy-<time>)"),
    resume: bool = typer.Option(False, help="keep the lr choice and accuracy runs already in --out (same "
                                            "settings); rerun only the missing ones and the attack grid"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Accuracy vs epsilon for SSGD + calibrated noise and Opacus DP-SGD, and attack PSNR vs epsilon."""
    from ..experiments.privacy import PrivacyReproConfig, run_privacy_repro
    from ..report.io import make_run_dir

    kw: dict = dict(QUICK) if quick else {}
    if datasets is not None:
        kw["datasets"] = tuple(d.strip() for d in datasets.split(",") if d.strip())
    eps = parse_epsilons(epsilons)
    if eps is not None:
        kw["epsilons"] = eps
    if methods is not None:
        kw["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    if attacks is not None:
        kw["attacks"] = () if attacks.strip() == "none" else tuple(a.strip() for a in attacks.split(",") if a.strip())
    if attack_sigmas is not None:
        kw["attack_sigmas"] = _floats(attack_sigmas, "--attack-sigmas", allow_zero=True)
    if lr_grid is not None:
        kw["lr_grid"] = _floats(lr_grid, "--lr-grid")
    if lr is not None:
        kw["lr"], kw["lr_grid"] = lr, ()  # a given lr is used as is (no validation grid)
    for key, val in (("epochs", epochs), ("batch_size", batch_size), ("n_train", train_size),
                     ("attack_images", attack_images)):
        if val is not None:
            kw[key] = val
    cfg = PrivacyReproConfig(delta=delta, accountant=accountant, seed=seed, **kw)
    try:
        cfg.validate()
        from ..privacy.accountant import check_accountant, check_delta

        check_delta(delta)
        check_accountant(accountant)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out <run folder>")
    run_dir = make_run_dir(out, "privacy", resume=resume)
    try:
        report = run_privacy_repro(run_dir, cfg, progress=progress, log=typer.echo, resume=resume)
    except ValueError as e:  # e.g. resuming a folder made with other settings, an unknown dataset
        raise typer.BadParameter(str(e)) from e
    typer.echo(report.read_text())
    typer.echo(f"run folder: {run_dir}")
