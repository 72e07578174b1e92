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
) -> None:
    """Train SGD and SSGD on the embedded MNIST and write report.md with a table and a plot."""
    from ..experiments.demo import run_demo
    from ..report.io import make_run_dir

    run_dir = make_run_dir(out, "demo")
    report = run_demo(run_dir, epochs=epochs, seed=seed, progress=progress)
    typer.echo(report.read_text())
    typer.echo(f"run folder: {run_dir}")
