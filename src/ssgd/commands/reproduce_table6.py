"""``ssgd reproduce table6``: accuracy on Laplace-noisy Fashion-MNIST over an m x n grid (the paper's Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .reproduce_table2 import parse_int_list, parse_methods

__all__ = ["command"]


def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (m, n in 4,16; 4,000 train examples; 1 epoch)"),
    ms: Optional[str] = typer.Option(None, "--ms", help="comma-separated node/shard counts m (default 4,16,64)"),
    ns: Optional[str] = typer.Option(None, "--ns", help="comma-separated per-shard batch sizes n (default 4,16,64)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgdm,adam,ssgd (default all)"),
    eps: float = typer.Option(2.0, "--eps", help="Laplace noise privacy level on training pixels (sensitivity 1)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 2; --quick: 1)"),
    lr_points: Optional[int] = typer.Option(None, help="learning rates per method in the validation grid (default 3)"),
    train_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many training examples"),
    test_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many test examples"),
    val_fraction: float = typer.Option(0.1, help="fraction of the training set held out for choosing the lr"),
    dataset: str = typer.Option("fashion-mnist", help="dataset (fashion-mnist is the paper's)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files"),
    model: str = typer.Option("mlp", help="model: mlp (default) | convnet | lenet"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/table6-<time>)"),
    resume: bool = typer.Option(False, help="skip the runs already finished in --out (grid.json)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Reproduce Table 6: SGDm, Adam and SSGD(m) on eps-Laplace-noisy training data, m nodes x n examples."""
    from ..experiments.table6 import METHODS6, QUICK6, Table6Config, run_table6
    from ..report.io import make_run_dir

    base = dict(QUICK6) if quick else {}
    for key, val in (("ms", parse_int_list(ms, "--ms")), ("ns", parse_int_list(ns, "--ns")),
                     ("methods", parse_methods(methods, METHODS6)), ("epochs", epochs), ("lr_points", lr_points),
                     ("train_size", train_size), ("test_size", test_size)):
        if val is not None:
            base[key] = val
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    cfg = Table6Config(noise_eps=eps, dataset=dataset, data_dir=str(data_dir) if data_dir else None, model=model,
                       seed=seed, device=device, val_fraction=val_fraction, **base)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = make_run_dir(out, "table6", resume=resume)
    res = run_table6(cfg, run_dir, progress=progress, resume=resume)
    typer.echo(res["table"])
    typer.echo("")
    typer.echo(res["summary"])
    typer.echo(f"\nrun folder: {run_dir}  ({res['seconds']:.0f} s)")
