"""``ssgd train``: training on the embedded data (or any registered dataset), in one process or on N (DDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data import DATASETS
from ..models import MODELS, OPTIMIZERS, SCHEDULES
from ._experiment_cli import open_run_dir

# the choices the help lists, from the registries (a registered model or dataset is listed without an edit here)
_OPTIMIZERS = " | ".join(OPTIMIZERS) + " (nsgd: normalized SGD; lars: layer-wise trust ratio)"
_MODELS = " | ".join(MODELS)
_DATASETS = " | ".join(DATASETS) + " (mnist is embedded; the others read --data-dir)"

# TrainConfig/DPConfig field -> the flag that sets it: lower layers name fields, this layer names flags
_FLAGS = {"noise_multiplier": "--noise-multiplier", "target_epsilon": "--target-epsilon", "shards": "--shards",
          "nodes": "--nodes", "optimizer": "--optimizer", "dp": "--dp", "delta": "--delta", "scope": "--scope",
          "batch_size": "--batch-size", "epochs": "--epochs", "lr": "--lr", "momentum": "--momentum",
          "weight_decay": "--weight-decay", "warmup": "--warmup", "val_fraction": "--val-fraction",
          "noise_eps": "--noise-eps", "schedule": "--schedule", "device": "--device"}


def flag_names(message: str) -> str:
    """A lower layer's error with its field names (``shards=2``) turned into this command's flags (``--shards 2``)."""
    import re

    return re.sub(r"(?<![\w-])(" + "|".join(_FLAGS) + r")=", lambda m: _FLAGS[m.group(1)] + " ", message)


def train_cmd(
    optimizer: str = typer.Option("ssgd", help=_OPTIMIZERS),
    scope: str = typer.Option("global", help="SSGD normalisation scope: global | layer"),
    shards: int = typer.Option(1, "--shards", "-m", help="SSGD(m): sum the unit vectors of m sub-batches"),
    batch_size: int = typer.Option(64, help="batch size"),
    epochs: int = typer.Option(5, help="epochs"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default depends on the optimizer)"),
    momentum: Optional[float] = typer.Option(None, help="momentum (default: 0.9 for sgdm, else 0)"),
    weight_decay: float = typer.Option(0.0, help="L2 weight decay"),
    dataset: str = typer.Option("mnist", help=_DATASETS),
    data_dir: Optional[Path] = typer.Option(None, file_okay=False, help="folder with the dataset's files"),
    model: str = typer.Option("convnet", help=_MODELS),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/train-<time>)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    schedule: Optional[str] = typer.Option(None, help=f"lr schedule: {' | '.join(SCHEDULES)} "
                                                      "(default: cosine for nsgd, else constant)"),
    warmup: float = typer.Option(0.0, help="linear lr warm-up, in epochs"),
    val_fraction: float = typer.Option(0.0, help="hold out this fraction of the training set for validation"),
    noise_eps: Optional[float] = typer.Option(None, help="Laplace noise on training pixels at privacy level eps "
                                                         "(sensitivity 1; the paper uses 5, 2, 1)"),
    resume: bool = typer.Option(False, help="continue from the checkpoint in --out (same settings)"),
    nodes: int = typer.Option(1, "--nodes", help="train on N local processes through torchrun (DDP; gloo on cpu, "
                                                 "NCCL on cuda); with --optimizer ssgd each node shares only its "
                                                 "unit vector: SSGD(m) with m = N, the same update as --shards N"),
    dp: str = typer.Option("off", "--dp", help="differential privacy: off | example (per-example unit vectors + "
                                               "noise, Poisson batches) | node (--shards m nodes, noise once on the "
                                               "sum: secure aggregation) | node-local (each node noises its vector)"),
    noise_multiplier: Optional[float] = typer.Option(None, help="DP noise std in units of the sensitivity (sigma)"),
    target_epsilon: Optional[float] = typer.Option(None, help="DP: solve sigma for this epsilon at --delta "
                                                              "after --epochs (Opacus accountant)"),
    delta: float = typer.Option(1e-5, help="DP delta (should be < 1/number of records)"),
    accountant: str = typer.Option("rdp", help="DP accountant (Opacus): rdp | prv"),
) -> None:
    """Train a model (SGD, SGDm, Adam, SSGD, NSGD or LARS); the run folder gets report.md and curves.png."""
    from ..data import DATASETS, DatasetError
    from ..experiments.train import TrainConfig
    from ..transform import NonFiniteGradientError
    from ._options import check_device, user_errors

    check_device(device)
    cfg = TrainConfig(dataset=dataset, data_dir=str(data_dir) if data_dir else None, model=model,
                      optimizer=optimizer, scope=scope, shards=shards, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, batch_size=batch_size, epochs=epochs, seed=seed, device=device,
                      schedule=schedule, warmup=warmup, val_fraction=val_fraction, noise_eps=noise_eps,
                      dp=dp, noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
                      dp_accountant=accountant)
    # everything that needs no data is checked before a run folder exists
    try:
        cfg.validate()
        if cfg.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {cfg.dataset!r}; known: {sorted(DATASETS)}")
        if nodes < 1:
            raise ValueError(f"--nodes {nodes}: must be >= 1")
        if nodes > 1:
            from ..experiments.ddp_train import check_config

            check_config(cfg, nodes)
    except ValueError as e:
        raise typer.BadParameter(flag_names(str(e))) from None
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out <run folder> holding checkpoint.pt")
    with user_errors((DatasetError,)):
        if nodes > 1:
            _train_nodes(cfg, out, nodes, resume, progress)
            return
        try:
            res = _in_run_dir(out, resume, lambda run_dir: _train_local(cfg, run_dir, resume, progress))
        except NonFiniteGradientError as e:
            typer.echo(f"Error: training diverged at --lr {cfg.lr if cfg.lr is not None else 'default'} "
                       f"(--optimizer {cfg.optimizer}): {e}", err=True)
            raise typer.Exit(2) from None
    _report(res.run_dir)
    typer.echo(f"test accuracy: {res.test_acc:.4f}  ({res.seconds:.1f} s)  run folder: {res.run_dir}")
    if res.privacy is not None:
        _echo_privacy(res.privacy)


def _in_run_dir(out: Optional[Path], resume: bool, body):
    """``body(run_dir)`` in a checked run folder (ssgd.report.make_run_dir: an existing run needs
    --resume; a file or a read-only folder is refused). A folder this call created is removed
    again if ``body`` fails before the first epoch's checkpoint (it would hold nothing to resume)."""

    created = out is None or not Path(out).exists()
    run_dir = open_run_dir(out, "train", resume=resume)
    try:
        return body(run_dir)
    except BaseException:
        if created and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"config.json"}:
            (run_dir / "config.json").unlink(missing_ok=True)
            run_dir.rmdir()
        raise


def _train_local(cfg, run_dir: Path, resume: bool, progress: bool):
    from ..experiments.train import CHECKPOINT, load_train_checkpoint, train

    if resume and (run_dir / CHECKPOINT).exists():
        load_train_checkpoint(run_dir / CHECKPOINT, cfg)  # refused in one line before any data is loaded
    try:
        return train(cfg, run_dir, progress=progress, resume=resume)
    except ValueError as e:  # e.g. an unreachable target epsilon, data that does not fit the model
        from ..report import CheckpointError, ConfigMismatchError

        if isinstance(e, (CheckpointError, ConfigMismatchError)):
            raise
        raise typer.BadParameter(flag_names(str(e))) from None


def _train_nodes(cfg, out: Optional[Path], nodes: int, resume: bool, progress: bool) -> None:
    """The same TrainConfig on N processes (ssgd.experiments.ddp_train), checked before torchrun starts."""
    from ..distributed.launch import NodeFailureError
    from ..experiments.ddp_train import check_resume, run_nodes
    from ..report import CheckpointError, ConfigMismatchError

    def body(run_dir: Path) -> tuple[Path, dict]:
        if resume:
            check_resume(cfg, run_dir, nodes)  # one line here instead of a traceback per rank
        try:
            return run_dir, run_nodes(cfg, run_dir, nodes, resume=resume, progress=progress)
        except NodeFailureError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except (CheckpointError, ConfigMismatchError):
            raise
        except ValueError as e:  # e.g. --device cuda with fewer GPUs than nodes
            raise typer.BadParameter(flag_names(str(e))) from None

    run_dir, m = _in_run_dir(out, resume, body)
    _report(run_dir)
    typer.echo(f"test accuracy: {m['test_acc']:.4f}  ({m['seconds']:.1f} s, {nodes} nodes)  run folder: {run_dir}")
    if (run_dir / "privacy.json").is_file():  # written by rank 0 when --dp is on
        import json

        _echo_privacy(json.loads((run_dir / "privacy.json").read_text()))


def _report(run_dir: Path) -> None:
    """report.md and curves.png from the finished run folder's own files (ssgd.experiments.train_report).
    A result file that fails its checks costs the report, never the trained run: one line, exit 2."""
    from ..experiments.train_report import write_train_report
    from ..report import ResultFileError

    try:
        write_train_report(run_dir)
    except ResultFileError as e:
        typer.echo(f"Error: no report.md: {e}", err=True)
        raise typer.Exit(2) from None


def _echo_privacy(p: dict) -> None:
    """The final epsilon line of ``ssgd train --dp ...`` (ssgd.privacy summary)."""
    typer.echo(f"privacy: epsilon = {float(p['epsilon']):.4g} at delta = {float(p['delta']):g} per {p['level']} "
               f"(sigma = {float(p['noise_multiplier']):.4g}, q = {float(p['sample_rate']):.4g}, {p['steps']} steps, "
               f"{str(p['accountant']).upper()} accountant)")
