"""``ssgd reproduce table6``: accuracy on Laplace-noisy Fashion-MNIST over an m x n grid (the paper's Table 6)."""

from __future__ import annotations

from typing import Optional

import typer

from ._experiment_cli import LrPoints, Widen, run_sweep, sweep_options
from ._options import Options, parse_choices, parse_int_list, with_options

__all__ = ["command"]


@with_options(sweep=sweep_options)
def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (m, n in 4,16; 4,000 train examples; 1 epoch)"),
    ms: Optional[str] = typer.Option(None, "--ms", help="comma-separated node/shard counts m (default 4,16,64)"),
    ns: Optional[str] = typer.Option(None, "--ns", help="comma-separated per-shard batch sizes n (default 4,16,64)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgdm,adam,ssgd (default all)"),
    eps: float = typer.Option(2.0, "--eps", help="Laplace noise privacy level on training pixels (sensitivity 1)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 20; --quick: 1)"),
    lr_points: LrPoints = None,
    widen: Widen = None,
    sweep: Options = None,  # --train-size ... --progress: sweep_options
) -> None:
    """Reproduce Table 6: SGDm, Adam and SSGD(m) on eps-Laplace-noisy training data, m nodes x n examples."""
    from ..experiments.table6 import METHODS6, Table6Config

    cfg = Table6Config.quick() if quick else Table6Config()
    run_sweep(cfg, sweep, "table6", ms=parse_int_list(ms, "--ms", "4,16,64"), ns=parse_int_list(ns, "--ns", "4,16,64"),
              methods=parse_choices(methods, "--methods", METHODS6), epochs=epochs, lr_points=lr_points, widen=widen,
              noise_eps=eps)
