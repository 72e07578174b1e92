"""``ssgd reproduce table2``: Fashion-MNIST accuracy vs batch size (the paper's Table 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["command", "parse_int_list", "parse_methods"]


def parse_int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated integers, e.g. 16,128,1024; got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise typer.BadParameter(f"{name} must be positive integers, e.g. 16,128,1024; got {text!r}")
    return vals


def parse_methods(text: str | None, known: tuple[str, ...]) -> tuple[str, ...] | None:
    if text is None:
        return None
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in known]
    if bad or not vals:
        raise typer.BadParameter(f"unknown method(s) {bad or text!r}; choose from {','.join(known)}")
    return vals


def command(
    quick: bool = typer.Option(False, "--quick", help="reduced grid (batch 16,128,1024; 4,000 train examples; "
                                                      "1 epoch): about a minute on 2 cores"),
    epochs: Optional[int] = typer.Option(None, help="epochs per cell (default 2; --quick: 1)"),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes (default 16,32,...,8192)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: sgd,sgdm,adam,ssgd,nsgd,lars (default all)"),
    lr_points: Optional[int] = typer.Option(None, help="learning rates per method in the validation grid (default 3)"),
    train_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many training examples"),
    test_size: Optional[int] = typer.Option(None, help="use a stratified subset of this many test examples"),
    val_fraction: float = typer.Option(0.1, help="fraction of the training set held out for choosing the lr"),
    dataset: str = typer.Option("fashion-mnist", help="dataset (fashion-mnist is the paper's)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files"),
    model: str = typer.Option("mlp", help="model: mlp (784-256-256-10, default) | convnet | lenet"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/table2-<time>)"),
    resume: bool = typer.Option(False, help="skip the runs already finished in --out (grid.json)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Reproduce Table 2: test accuracy vs batch size for SGD, SGDm, Adam, SSGD(m), NSGD and LARS."""
    from ..experiments.table2 import METHODS, QUICK, Table2Config, run_table2
    from ..report.io import make_run_dir

    base = dict(QUICK) if quick else {}
    for key, val in (("epochs", epochs), ("batch_sizes", parse_int_list(batch_sizes, "--batch-sizes")),
                     ("methods", parse_methods(methods, METHODS)), ("lr_points", lr_points),
                     ("train_size", train_size), ("test_size", test_size)):
        if val is not None:
            base[key] = val
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    cfg = Table2Config(dataset=dataset, data_dir=str(data_dir) if data_dir else None, model=model, seed=seed,
                       device=device, val_fraction=val_fraction, **base)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = make_run_dir(out, "table2", resume=resume)
    res = run_table2(cfg, run_dir, progress=progress, resume=resume)
    typer.echo(res["table"])
    typer.echo("")
    typer.echo(res["summary"])
    typer.echo(f"\nrun folder: {run_dir}  ({res['seconds']:.0f} s)")
