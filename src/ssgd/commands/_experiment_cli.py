"""What the reproduction commands share: the sweep options of Table 2 and Table 6, and the
validate -> run folder -> run -> print tail of every command that runs an experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._options import Options, check_device, user_errors

__all__ = ["TrainSize", "TestSize", "ValFraction", "Dataset", "DataDir", "Model", "Seed", "Device", "Out", "Resume",
           "Progress", "LrPoints", "Widen", "sweep_options", "apply_options", "run_sweep", "run_experiment",
           "open_run_dir", "interrupted_hint"]

TrainSize = Annotated[Optional[int], typer.Option(help="use a stratified subset of this many training examples")]
TestSize = Annotated[Optional[int], typer.Option(help="use a stratified subset of this many test examples")]
ValFraction = Annotated[float, typer.Option(help="fraction of the training set held out for choosing the lr")]
Dataset = Annotated[str, typer.Option(help="dataset (fashion-mnist is the paper's)")]
DataDir = Annotated[Optional[Path], typer.Option(help="folder with the dataset's files", file_okay=False)]
Model = Annotated[str, typer.Option(help="model: mlp (784-256-256-10, default) | convnet | lenet")]
Seed = Annotated[int, typer.Option(help="base seed (data split, first training seed)")]
Device = Annotated[str, typer.Option(help="cpu | cuda")]
Out = Annotated[Optional[Path], typer.Option(help="run folder (default runs/<experiment>-<time>)")]
Resume = Annotated[bool, typer.Option(help="continue the run in --out: finished runs are kept; a changed "
                                           "config is refused")]
Progress = Annotated[bool, typer.Option(help="show progress bars")]
LrPoints = Annotated[Optional[int], typer.Option(help="learning rates per cell in the validation grid (default 3)")]
Widen = Annotated[Optional[int], typer.Option(help="points added at most beyond a grid edge that wins (default 2)")]


def sweep_options(
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
    """The options that end the option list of Table 2 and of Table 6 (an option group: ``with_options``)."""


def run_sweep(cfg: Any, sweep: Options, prefix: str, **overrides: Any) -> None:
    """Set ``overrides`` that are not ``None`` and the :func:`sweep_options` on ``cfg``, then run it
    (:func:`run_experiment`) in the run folder ``sweep.out``."""
    apply_options(cfg, dict(overrides, train_size=sweep.train_size, test_size=sweep.test_size),
                  val_fraction=sweep.val_fraction, dataset=sweep.dataset, data_dir=sweep.data_dir, model=sweep.model,
                  seed=sweep.seed, device=sweep.device)
    run_experiment(cfg, sweep.out, prefix, resume=sweep.resume, progress=sweep.progress)


def apply_options(cfg: Any, overrides: dict[str, Any], **always: Any) -> Any:
    """Set ``overrides`` whose value is not ``None`` and every ``always`` on ``cfg``; ``device`` is checked
    and ``data_dir`` made a string."""
    for key, val in overrides.items():
        if val is not None:
            setattr(cfg, key, val)
    if "device" in always:
        always["device"] = check_device(always["device"])
    if "data_dir" in always:
        always["data_dir"] = str(always["data_dir"]) if always["data_dir"] else None
    for key, val in always.items():
        setattr(cfg, key, val)
    return cfg


def run_experiment(cfg: Any, out: Path | None, prefix: str, *, resume: bool, progress: bool) -> None:
    """Validate (bad values: a one-line usage error), make the run folder, run, print the result."""
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with user_errors((ValueError,)):
        run_dir = open_run_dir(out, prefix, resume=resume)
        res = cfg.run(run_dir, progress=progress, resume=resume)
    typer.echo(res.text)
    typer.echo(f"\nrun folder: {run_dir}  ({res.seconds:.0f} s)")


_RUN: dict[str, Any] = {}  # the run folder of this process's command, for the Ctrl-C hint


def open_run_dir(out: Path | None, prefix: str, *, resume: bool = False, resumable: bool = True,
                 **kwargs: Any) -> Path:
    """Make (or reopen) the run folder and say where it is at once, so an interrupted user knows what
    to ``--resume``. Every command that writes a run folder opens it here, after its validation."""
    from ..report.io import make_run_dir

    run_dir = make_run_dir(out, prefix, resume=resume, **kwargs)
    typer.echo(f"run folder: {run_dir}")
    _RUN.update(run_dir=Path(run_dir), resumable=resumable)
    return run_dir


def interrupted_hint(args: list[str]) -> str:
    """What Ctrl-C prints: the exact command that continues the run (``args``: the command line after ``ssgd``)."""
    import shlex

    run_dir = _RUN.get("run_dir")
    if run_dir is None:
        return "interrupted (no run folder was written)"
    if not _RUN.get("resumable", True):
        return f"interrupted; the partial run is in {run_dir} (this command has no --resume: run it again)"
    keep: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        if a.startswith("--out=") or a in ("--resume", "--no-resume"):
            continue
        keep.append(a)
    return "interrupted; continue with:\n  " + shlex.join(["ssgd", *keep, "--out", str(run_dir), "--resume"])
