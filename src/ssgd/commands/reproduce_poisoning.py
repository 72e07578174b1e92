"""``ssgd reproduce poisoning``: model poisoning (boosted model replacement, sign flip, label
flip) against the mean, SSGD's unit-vector mean, norm clipping, the coordinate-wise median and Krum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._experiment_cli import Out, Progress, Resume, run_experiment
from ._options import parse_choices, parse_int_list, parse_list

__all__ = ["command"]


def command(
    quick: bool = typer.Option(False, "--quick", help="a CI-sized run: MNIST, k in {0,1}, 60 rounds, 1 seed"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated datasets (default mnist,fashion-mnist)"),
    nodes: Optional[int] = typer.Option(None, help="number of nodes N (default 10)"),
    malicious: Optional[str] = typer.Option(None, help="comma-separated numbers of malicious nodes k (default 0,1,3)"),
    attacks: Optional[str] = typer.Option(None, help="comma-separated attacks (default boost,signflip,labelflip)"),
    aggregators: Optional[str] = typer.Option(None, help="comma-separated aggregators "
                                                         "(default mean,ssgd,clip,median,krum)"),
    rounds: Optional[int] = typer.Option(None, help="FedSGD rounds (default 300; --quick: 60)"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds (default 0,1; --quick: 0)"),
    lr: Optional[float] = typer.Option(None, help="learning rate of the raw-gradient aggregators (default 0.2)"),
    ssgd_lr: Optional[float] = typer.Option(None, help="learning rate of the SSGD unit-vector mean (default 0.5)"),
    data_dir: Optional[Path] = typer.Option(None, file_okay=False, help="folder with Fashion-MNIST's IDX files"),
    out: Out = None,
    resume: Resume = False,
    progress: Progress = True,
) -> None:
    """Final accuracy of SGD-mean, SSGD, clipping, median and Krum under k malicious nodes (table + plot)."""
    from ..data import DATASETS
    from ..experiments.poisoning import AGGREGATORS, ATTACKS, PoisoningConfig

    cfg = PoisoningConfig.quick() if quick else PoisoningConfig(seeds=(0, 1))
    for key, val in (("datasets", parse_choices(datasets, "--datasets", sorted(DATASETS))),
                     ("num_nodes", nodes),
                     ("malicious", parse_int_list(malicious, "--malicious", "0,1,3", minimum=0)),
                     ("attacks", parse_choices(attacks, "--attacks", ATTACKS)),
                     ("aggregators", parse_choices(aggregators, "--aggregators", AGGREGATORS)),
                     ("rounds", rounds), ("seeds", parse_list(seeds, "--seeds", int, "0,1")),
                     ("lr", lr), ("ssgd_lr", ssgd_lr)):
        if val is not None:
            setattr(cfg, key, val)
    cfg.data_dir = str(data_dir) if data_dir else None
    run_experiment(cfg, out, "poisoning", resume=resume, progress=progress)
