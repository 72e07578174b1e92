"""``ssgd demo``: the main job -- SGD vs SSGD side by side on the embedded MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo_cmd(
    epochs: int = typer.Option(5, help="epochs per optimizer (>= 1)"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/demo-<time>)"),
    progress: bool = typer.Option(True, help="show progress bars"),
    attack_iters: int = typer.Option(100, help="L-BFGS iterations of the dlg / dlg-unit attacks on one shared "
                                               "update of the SGD and SSGD runs (0: skip the attacks)"),
    threads: int = typer.Option(1, help="torch threads of the demo (fixed so its numbers reproduce; the "
                                        "README's use 1)"),
) -> None:
    """Train SGD, SSGD and SSGD(m=4) on the embedded MNIST, attack one shared update of the SGD and SSGD
    runs with DLG and the SSGD-aware dlg-unit, and write report.md with tables, a plot and the reconstructions."""
    from ..experiments.demo import run_demo
    from ._experiment_cli import open_run_dir

    if epochs < 1:
        raise typer.BadParameter(f"--epochs {epochs} must be >= 1: the demo compares trained models (default 5)")
    if attack_iters < 0:
        raise typer.BadParameter(f"--attack-iters {attack_iters} must be >= 0 (0 skips the attacks)")
    if threads < 1:
        raise typer.BadParameter(f"--threads {threads} must be >= 1")
    run_dir = open_run_dir(out, "demo", resumable=False)
    report = run_demo(run_dir, epochs=epochs, seed=seed, progress=progress, attack_iters=attack_iters,
                      threads=threads)
    typer.echo(report.read_text())
    typer.echo(f"run folder: {run_dir}")
