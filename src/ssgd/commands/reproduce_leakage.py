"""``ssgd reproduce leakage``: the attacks x defences x batch-size grid (see ssgd.experiments.leakage)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["command"]


def _csv(text: Optional[str], cast=str) -> Optional[list]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(";" if ":" in text else ",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError as e:
        raise typer.BadParameter(f"could not parse {text!r}: {e}") from e


def command(
    quick: bool = typer.Option(False, "--quick", help="a minutes-long CI version (MNIST, untrained, B=1/4, 4 images)"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated datasets (default: mnist,fashion-mnist)"),
    attacks: Optional[str] = typer.Option(None, help="attacks, comma- (or ';' if specs have ':') separated"),
    defenses: Optional[str] = typer.Option(None, help="defences, ';'-separated specs, e.g. 'none;noise:sigma=0.1'"),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes (default 1,4,8)"),
    states: Optional[str] = typer.Option(None, help="untrained,trained"),
    images: Optional[int] = typer.Option(None, help="images per cell (default 16; 4 with --quick)"),
    dlg_iters: Optional[int] = typer.Option(None, help="L-BFGS iterations of dlg/idlg/dlg-unit"),
    inverting_iters: Optional[int] = typer.Option(None, help="Adam iterations of inverting/inverting-layer"),
    restarts: Optional[int] = typer.Option(None, help="restarts of inverting/inverting-layer"),
    accuracy_epochs: Optional[int] = typer.Option(None, help="epochs of the per-defence accuracy runs (0: skip)"),
    budget_minutes: float = typer.Option(0.0, help="stop starting new attacks after this many minutes (0: no limit)"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/leakage-<time>)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Gradient leakage: every attack against every defence; tables, image grids, privacy vs accuracy."""
    from ..experiments.leakage import LeakageConfig, run_leakage
    from ..report.io import make_run_dir

    kw = {}
    for key, val in (("datasets", _csv(datasets)), ("attacks", _csv(attacks)), ("defenses", _csv(defenses)),
                     ("batch_sizes", _csv(batch_sizes, int)), ("states", _csv(states)), ("images", images),
                     ("dlg_iters", dlg_iters), ("inverting_iters", inverting_iters), ("restarts", restarts),
                     ("accuracy_epochs", accuracy_epochs)):
        if val is not None:
            kw[key] = val
    kw.update(seed=seed, budget_minutes=budget_minutes)
    try:
        cfg = (LeakageConfig.quick_config(**kw) if quick else LeakageConfig(**kw)).validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = make_run_dir(out, "leakage")
    report = run_leakage(cfg, run_dir, progress=progress)
    typer.echo(report.read_text())
    typer.echo(f"run folder: {run_dir}")
