"""``ssgd reproduce poisoning``: model poisoning (boosted model replacement, sign flip, label
flip) against the mean, SSGD's unit-vector mean, norm clipping, the coordinate-wise median and Krum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["command"]


def _csv(value: str, allowed: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise typer.BadParameter(f"empty {what} list; give a comma-separated list")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise typer.BadParameter(f"unknown {what} {bad}; choose from {', '.join(allowed)}")
    return items


def command(
    quick: bool = typer.Option(False, "--quick", help="a CI-sized run: MNIST, k in {0,1}, 60 rounds, 1 seed"),
    datasets: str = typer.Option("mnist,fashion-mnist", help="comma-separated datasets"),
    nodes: int = typer.Option(10, help="number of nodes N"),
    malicious: str = typer.Option("0,1,3", help="comma-separated numbers of malicious nodes k"),
    attacks: str = typer.Option("boost,signflip,labelflip", help="comma-separated attacks"),
    aggregators: str = typer.Option("mean,ssgd,clip,median,krum", help="comma-separated aggregators"),
    rounds: int = typer.Option(300, help="FedSGD rounds"),
    seeds: str = typer.Option("0,1", help="comma-separated seeds"),
    lr: float = typer.Option(0.2, help="learning rate of the raw-gradient aggregators"),
    ssgd_lr: float = typer.Option(0.5, help="learning rate of the SSGD unit-vector mean"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with Fashion-MNIST's IDX files"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/poisoning-<time>)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Final accuracy of SGD-mean, SSGD, clipping, median and Krum under k malicious nodes (table + plot)."""
    from ..experiments.poisoning import AGGREGATORS, ATTACKS, PoisoningConfig, run_poisoning
    from ..report.io import make_run_dir

    try:
        ks = tuple(int(v) for v in _csv(malicious, None, "malicious count"))
        seed_list = tuple(int(v) for v in _csv(seeds, None, "seed"))
    except ValueError as e:
        raise typer.BadParameter(f"--malicious and --seeds take comma-separated integers ({e})") from e
    cfg = PoisoningConfig(datasets=_csv(datasets, None, "dataset"), num_nodes=nodes, malicious=ks,
                          attacks=_csv(attacks, ATTACKS, "attack"), aggregators=_csv(aggregators, AGGREGATORS,
                                                                                      "aggregator"),
                          rounds=rounds, seeds=seed_list, lr=lr, ssgd_lr=ssgd_lr,
                          data_dir=str(data_dir) if data_dir else None)
    if quick:
        cfg.datasets, cfg.malicious, cfg.rounds, cfg.seeds, cfg.eval_every = ("mnist",), (0, 1), 60, (0,), 20
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = make_run_dir(out, "poisoning")
    run_poisoning(cfg, run_dir, progress=progress)
    typer.echo((run_dir / "report.md").read_text())
    typer.echo(f"run folder: {run_dir}")
