"""``ssgd reproduce table2``: Fashion-MNIST accuracy vs batch size (the paper's Table 2)."""

from __future__ import annotations

from typing import Optional

import typer

from ._experiment_cli import LrPoints, Widen, run_sweep, sweep_options
from ._options import Options, parse_choices, parse_int_list, with_options

__all__ = ["command"]


@with_options(sweep=sweep_options)
def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (batch 16,128,1024; 4,000 train examples; "
                                                      "1 epoch; 2 seeds at 1024): about a minute on 2 cores"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 20; --quick: 1)"),
    steps: Optional[int] = typer.Option(None, help="fixed-steps view: about this many steps per cell "
                                                   "(overrides --epochs)"),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes "
                                                         "(default the paper's 16,64,128,512,1024,4096,8192)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgd,sgdm,adam,ssgd,nsgd,lars (default all)"),
    lr_points: LrPoints = None,
    widen: Widen = None,
    seeds: Optional[int] = typer.Option(None, help="training seeds for SGD, SSGD(m), NSGD at batch >= 1024 "
                                                   "(default 3)"),
    sweep: Options = None,  # --train-size ... --progress: sweep_options
) -> None:
    """Reproduce Table 2: test accuracy vs batch size for SGD, SGDm, Adam, SSGD(m), NSGD and LARS."""
    from ..experiments.table2 import METHODS, Table2Config

    cfg = Table2Config.quick() if quick else Table2Config()
    run_sweep(cfg, sweep, "table2", epochs=epochs, steps=steps,
              batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
              methods=parse_choices(methods, "--methods", METHODS), lr_points=lr_points, widen=widen, seeds=seeds)
