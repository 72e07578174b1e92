"""``ssgd demo``: the main job -- SGD vs SSGD side by side on the embedded MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo_cmd(
    epochs: int = typer.Option(5, help="epochs per optimizer"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/demo-<time>)"),
    progress: bool = typer.Option(True, help="show progress bars"),
    attack_iters: int = typer.Option(100, help="L-BFGS iterations of the dlg / dlg-unit attacks on one shared "
                                               "update of each run (0: skip the attacks)"),
) -> None:
    """Train SGD and SSGD on the embedded MNIST, attack one shared update of each with DLG and the
    SSGD-aware dlg-unit, and write report.md with tables, a plot and the reconstructions."""
    from ..experiments.demo import run_demo
    from ..report.io import make_run_dir

    if attack_iters < 0:
        raise typer.BadParameter(f"--attack-iters {attack_iters} must be >= 0")
    run_dir = make_run_dir(out, "demo")
    report = run_demo(run_dir, epochs=epochs, seed=seed, progress=progress, attack_iters=attack_iters)
    typer.echo(report.read_text())
    typer.echo(f"run folder: {run_dir}")
