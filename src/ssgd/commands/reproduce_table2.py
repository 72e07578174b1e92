"""``ssgd reproduce table2``: Fashion-MNIST accuracy vs batch size (the paper's Table 2)."""

from __future__ import annotations

from typing import Optional

import typer

from ._experiment_cli import (DataDir, Dataset, Device, LrPoints, Model, Out, Progress, Resume, Seed, TestSize,
                              TrainSize, ValFraction, Widen, apply_options, run_experiment)
from ._options import parse_choices, parse_int_list

__all__ = ["command"]


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
    """Reproduce Table 2: test accuracy vs batch size for SGD, SGDm, Adam, SSGD(m), NSGD and LARS."""
    from ..experiments.table2 import METHODS, Table2Config

    cfg = Table2Config.quick() if quick else Table2Config()
    apply_options(cfg, dict(epochs=epochs, steps=steps, batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
                            methods=parse_choices(methods, "--methods", METHODS), lr_points=lr_points, widen=widen,
                            seeds=seeds, train_size=train_size, test_size=test_size),
                  val_fraction=val_fraction, dataset=dataset, data_dir=data_dir, model=model, seed=seed, device=device)
    run_experiment(cfg, out, "table2", resume=resume, progress=progress)
