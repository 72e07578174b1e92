"""``ssgd reproduce table6``: accuracy on Laplace-noisy Fashion-MNIST over an m x n grid (the paper's Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._options import check_device, parse_choices, parse_int_list, user_errors

__all__ = ["command"]


def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (m, n in 4,16; 4,000 train examples; 1 epoch)"),
    ms: Optional[str] = typer.Option(None, "--ms", help="comma-separated node/shard counts m (default 4,16,64)"),
    ns: Optional[str] = typer.Option(None, "--ns", help="comma-separated per-shard batch sizes n (default 4,16,64)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgdm,adam,ssgd (default all)"),
    eps: float = typer.Option(2.0, "--eps", help="Laplace noise privacy level on training pixels (sensitivity 1)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 20; --quick: 1)"),
    lr_points: Optional[int] = typer.Option(None, help="learning rates per cell in the validation grid (default 3)"),
    widen: Optional[int] = typer.Option(None, help="points added at most beyond a grid edge that wins (default 2)"),
    train_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many training examples"),
    test_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many test examples"),
    val_fraction: float = typer.Option(0.1, help="fraction of the training set held out for choosing the lr"),
    dataset: str = typer.Option("fashion-mnist", help="dataset (fashion-mnist is the paper's)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files"),
    model: str = typer.Option("mlp", help="model: mlp (default) | convnet | lenet"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/table6-<time>)"),
    resume: bool = typer.Option(False, help="continue the sweep in --out: finished runs (grid.json) are kept"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Reproduce Table 6: SGDm, Adam and SSGD(m) on eps-Laplace-noisy training data, m nodes x n examples."""
    from ..experiments.table6 import METHODS6, Table6Config
    from ..report.io import make_run_dir

    cfg = Table6Config.quick() if quick else Table6Config()
    for key, val in (("ms", parse_int_list(ms, "--ms", "4,16,64")), ("ns", parse_int_list(ns, "--ns", "4,16,64")),
                     ("methods", parse_choices(methods, "--methods", METHODS6)), ("epochs", epochs),
                     ("lr_points", lr_points), ("widen", widen), ("train_size", train_size),
                     ("test_size", test_size)):
        if val is not None:
            setattr(cfg, key, val)
    cfg.noise_eps, cfg.val_fraction, cfg.dataset, cfg.model, cfg.seed = eps, val_fraction, dataset, model, seed
    cfg.data_dir = str(data_dir) if data_dir else None
    cfg.device = check_device(device)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with user_errors((ValueError,)):
        run_dir = make_run_dir(out, "table6", resume=resume)
        res = cfg.run(run_dir, progress=progress, resume=resume)
    typer.echo(res.text)
    typer.echo(f"\nrun folder: {run_dir}  ({res.seconds:.0f} s)")
