"""``ssgd reproduce table6``: accuracy on Laplace-noisy Fashion-MNIST over an m x n grid (the paper's Table 6)."""

from __future__ import annotations

from typing import Optional

import typer

from ._experiment_cli import (DataDir, Dataset, Device, LrPoints, Model, Out, Progress, Resume, Seed, TestSize,
                              TrainSize, ValFraction, Widen, apply_options, run_experiment)
from ._options import parse_choices, parse_int_list

__all__ = ["command"]


def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (m, n in 4,16; 4,000 train examples; 1 epoch)"),
    ms: Optional[str] = typer.Option(None, "--ms", help="comma-separated node/shard counts m (default 4,16,64)"),
    ns: Optional[str] = typer.Option(None, "--ns", help="comma-separated per-shard batch sizes n (default 4,16,64)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgdm,adam,ssgd (default all)"),
    eps: float = typer.Option(2.0, "--eps", help="Laplace noise privacy level on training pixels (sensitivity 1)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 20; --quick: 1)"),
    lr_points: LrPoints = None,
    widen: Widen = None,
    train_size: TrainSize = None,
    test_size: TestSize = None,
    val_fraction: ValFraction = 0.1,
    dataset: Dataset = "fashion-mnist",
    data_dir: DataDir = None,
    model: Model = "mlp",
    seed: Seed = 0,
    device: Device = "cpu",
    out: Out = None,
    resume: Resume = False,
    progress: Progress = True,
) -> None:
    """Reproduce Table 6: SGDm, Adam and SSGD(m) on eps-Laplace-noisy training data, m nodes x n examples."""
    from ..experiments.table6 import METHODS6, Table6Config

    cfg = Table6Config.quick() if quick else Table6Config()
    apply_options(cfg, dict(ms=parse_int_list(ms, "--ms", "4,16,64"), ns=parse_int_list(ns, "--ns", "4,16,64"),
                            methods=parse_choices(methods, "--methods", METHODS6), epochs=epochs,
                            lr_points=lr_points, widen=widen, train_size=train_size, test_size=test_size),
                  noise_eps=eps, val_fraction=val_fraction, dataset=dataset, data_dir=data_dir, model=model, seed=seed,
                  device=device)
    run_experiment(cfg, out, "table6", resume=resume, progress=progress)
