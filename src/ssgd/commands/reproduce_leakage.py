"""``ssgd reproduce leakage``: the attacks x defences x batch-size grid (see ssgd.experiments.leakage)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._experiment_cli import open_run_dir

from ._options import parse_choices, parse_float_list, parse_int_list, parse_list, user_errors

__all__ = ["command"]


def _specs(text: Optional[str], option: str, example: str) -> Optional[list[str]]:
    """Spec lists: ';'-separated (needed when a spec carries several parameters, 'dp:clip=1,sigma=1'); without
    ';' a text with ':' is one spec, anything else a ','-separated list of names."""
    if text is None:
        return None
    if ";" in text or ":" in text:
        items = [t.strip() for t in text.split(";") if t.strip()]
        if not items:
            raise typer.BadParameter(f"{option} is empty; give a list, e.g. {example}")
        return items
    return list(parse_list(text, option, str, example))


def command(
    quick: bool = typer.Option(False, "--quick", help="a minutes-long CI version (MNIST, untrained, B=1/4, 4 images)"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated datasets (default: mnist,fashion-mnist)"),
    attacks: Optional[str] = typer.Option(None, help="attacks, comma- (or ';' if specs have ':') separated"),
    defenses: Optional[str] = typer.Option(None, help="defences, ';'-separated specs, e.g. 'none;noise:sigma=0.1'"),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes (default 1,4,8)"),
    states: Optional[str] = typer.Option(None, help="untrained,trained"),
    images: Optional[int] = typer.Option(None, help="images per cell for none and the SSGD rows (default 8)"),
    other_images: Optional[int] = typer.Option(None, help="images per cell for the other defences (default 4)"),
    dlg_iters: Optional[int] = typer.Option(None, help="L-BFGS iterations of dlg/idlg/dlg-unit (default: theirs)"),
    inverting_iters: Optional[int] = typer.Option(None, help="Adam iterations of inverting/inverting-layer "
                                                             "(default: theirs)"),
    restarts: Optional[int] = typer.Option(None, help="restarts of the optimisation attacks (default: theirs)"),
    init: Optional[str] = typer.Option(None, help="dummy init of the optimisation attacks: uniform | randn | mean "
                                                  "(default: theirs, uniform)"),
    curve_budgets: Optional[str] = typer.Option(None, help="budget-vs-PSNR curve: fractions of the default budget at "
                                                           "which the strongest attack on each SSGD variant is rerun, "
                                                           "e.g. 0.05,0.1,0.25,0.5,1,2 (default: no curve)"),
    curve_images: Optional[int] = typer.Option(None, help="images per curve point (default 4)"),
    accuracy_epochs: Optional[int] = typer.Option(None, help="epochs of the per-defence accuracy runs (0: skip)"),
    budget_minutes: float = typer.Option(0.0, help="stop starting new cells after this many minutes (0: no limit)"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/leakage-<time>)"),
    resume: bool = typer.Option(False, help="continue the grid in --out: finished cells (cells/*.json) are kept"),
    shard: Optional[str] = typer.Option(None, help="K/N: run only every N-th job from the K-th (0-based), to split "
                                                   "the grid over N processes sharing --out (each skips finished "
                                                   "cells; the folder is created or joined, its config must match)"),
    first: Optional[str] = typer.Option(None, help="comma-separated attacks whose cells run first (order of work "
                                                   "only), e.g. dlg-aware"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Gradient leakage: every attack against every defence; tables, image grids, budget curve, privacy vs accuracy."""
    from ..experiments.leakage import LeakageConfig

    kw = {}
    for key, val in (("datasets", parse_list(datasets, "--datasets", str, "mnist,fashion-mnist")),
                     ("attacks", _specs(attacks, "--attacks", "dlg,inverting-layer")),
                     ("defenses", _specs(defenses, "--defenses", "none;ssgd-shards:m=4")),
                     ("batch_sizes", parse_int_list(batch_sizes, "--batch-sizes", "1,4,8")),
                     ("states", parse_choices(states, "--states", ("untrained", "trained"))),
                     ("images", images), ("other_images", other_images), ("dlg_iters", dlg_iters),
                     ("inverting_iters", inverting_iters), ("restarts", restarts), ("init", init),
                     ("curve_budgets", parse_float_list(curve_budgets, "--curve-budgets", "0.1,0.5,1,2")),
                     ("curve_images", curve_images),
                     ("accuracy_epochs", accuracy_epochs)):
        if val is not None:
            kw[key] = list(val) if isinstance(val, tuple) else val
    kw.update(seed=seed, budget_minutes=budget_minutes)
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out <run folder>")
    part = _shard(shard)
    if part[1] > 1 and out is None:
        raise typer.BadParameter("--shard needs --out <run folder> shared by the shards")
    try:
        cfg = (LeakageConfig.quick(**kw) if quick else LeakageConfig(**kw)).validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with user_errors():
        shared = part[1] > 1
        run_dir = open_run_dir(out, "leakage", resume=resume or (shared and out.is_dir()))
        res = cfg.run(run_dir, resume=resume or shared, progress=progress, shard=part,
                      first=tuple(parse_list(first, "--first", str, "dlg-aware") or ()))
    typer.echo(res.text)
    typer.echo(f"run folder: {run_dir}  ({res.seconds:.0f} s)")


def _shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 0 <= K < N; ``None`` -> ``(0, 1)`` (the whole grid)."""
    if text is None:
        return 0, 1
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard {text!r}: give K/N, e.g. 0/2 and 1/2 for two processes") from None
    if not (n >= 1 and 0 <= k < n):
        raise typer.BadParameter(f"--shard {text!r}: K must be in 0..N-1 and N >= 1, e.g. 0/2 and 1/2")
    return k, n
