"""``ssgd train``: single-process training on the embedded data (or any registered dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_cmd(
    optimizer: str = typer.Option("ssgd", help="sgd | sgdm | adam | ssgd"),
    scope: str = typer.Option("global", help="SSGD normalisation scope: global | layer"),
    shards: int = typer.Option(1, "--shards", "-m", help="SSGD(m): sum the unit vectors of m sub-batches"),
    batch_size: int = typer.Option(64, help="batch size"),
    epochs: int = typer.Option(5, help="epochs"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default depends on the optimizer)"),
    momentum: Optional[float] = typer.Option(None, help="momentum (default: 0.9 for sgdm, else 0)"),
    weight_decay: float = typer.Option(0.0, help="L2 weight decay"),
    dataset: str = typer.Option("mnist", help="dataset name (mnist is embedded)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files"),
    model: str = typer.Option("convnet", help="lenet | mlp | convnet | resnet18"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/train-<time>)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Train a model with SGD, SGD+momentum, Adam or SSGD and report test accuracy."""
    from ..experiments.train import TrainConfig, train
    from ..report.io import make_run_dir

    cfg = TrainConfig(dataset=dataset, data_dir=str(data_dir) if data_dir else None, model=model,
                      optimizer=optimizer, scope=scope, shards=shards, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, batch_size=batch_size, epochs=epochs, seed=seed, device=device)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = make_run_dir(out, "train")
    res = train(cfg, run_dir, progress=progress)
    typer.echo(f"test accuracy: {res.test_acc:.4f}  ({res.seconds:.1f} s)  run folder: {run_dir}")
