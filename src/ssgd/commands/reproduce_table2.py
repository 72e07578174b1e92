"""``ssgd reproduce table2``: Fashion-MNIST accuracy vs batch size (the paper's Table 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._options import check_device, parse_choices, parse_int_list, user_errors

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
    lr_points: Optional[int] = typer.Option(None, help="learning rates per cell in the validation grid (default 3)"),
    widen: Optional[int] = typer.Option(None, help="points added at most beyond a grid edge that wins (default 2)"),
    seeds: Optional[int] = typer.Option(None, help="training seeds for SGD, SSGD(m), NSGD at batch >= 1024 "
                                                   "(default 3)"),
    train_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many training examples"),
    test_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many test examples"),
    val_fraction: float = typer.Option(0.1, help="fraction of the training set held out for choosing the lr"),
    dataset: str = typer.Option("fashion-mnist", help="dataset (fashion-mnist is the paper's)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files"),
    model: str = typer.Option("mlp", help="model: mlp (784-256-256-10, default) | convnet | lenet"),
    seed: int = typer.Option(0, help="base seed (data split, first training seed)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/table2-<time>)"),
    resume: bool = typer.Option(False, help="continue the sweep in --out: finished runs (grid.json) are kept"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Reproduce Table 2: test accuracy vs batch size for SGD, SGDm, Adam, SSGD(m), NSGD and LARS."""
    from ..experiments.table2 import METHODS, Table2Config
    from ..report.io import make_run_dir

    cfg = Table2Config.quick() if quick else Table2Config()
    for key, val in (("epochs", epochs), ("steps", steps), ("batch_sizes", parse_int_list(batch_sizes, "--batch-sizes")),
                     ("methods", parse_choices(methods, "--methods", METHODS)), ("lr_points", lr_points),
                     ("widen", widen), ("seeds", seeds), ("train_size", train_size), ("test_size", test_size)):
        if val is not None:
            setattr(cfg, key, val)
    cfg.val_fraction, cfg.dataset, cfg.model, cfg.seed = val_fraction, dataset, model, seed
    cfg.data_dir = str(data_dir) if data_dir else None
    cfg.device = check_device(device)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with user_errors((ValueError,)):
        run_dir = make_run_dir(out, "table2", resume=resume)
        res = cfg.run(run_dir, progress=progress, resume=resume)
    typer.echo(res.text)
    typer.echo(f"\nrun folder: {run_dir}  ({res.seconds:.0f} s)")
