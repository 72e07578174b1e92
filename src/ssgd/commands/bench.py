"""``ssgd bench ...``: the benchmarks under ``benchmarks/``, runnable from the CLI.

Each benchmark prints ratios against a baseline run in the same process. The
logic lives in :mod:`ssgd.experiments` (``bench_step``); ``benchmarks/*.py`` call
these same commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._experiment_cli import open_run_dir

from ._options import parse_choices

__all__ = ["app", "step_cmd"]

app = typer.Typer(help="Benchmarks (ratios against a baseline run in the same process).", no_args_is_help=True)


@app.command("step")
def step_cmd(
    sizes: str = typer.Option("resnet18,gpt2", help="comma-separated parameter-list sizes: tiny, resnet18 = 11.7M "
                              "(62 tensors), gpt2 = 124M (148 tensors), gpt1b = 1B (220 tensors); the aliases "
                              "11.7M, 124M, 1B; 'none' to skip the isolated step"),
    models: str = typer.Option("mlp,convnet", help="whole training step (forward+backward+step) of these models: "
                               "mlp, convnet, resnet18 (slow on CPU); 'none' to skip"),
    device: str = typer.Option("cpu", help="cpu | cuda[:k]"),
    repeats: int = typer.Option(20, min=1, help="timed steps per optimizer"),
    warmup: int = typer.Option(3, min=0, help="untimed steps first"),
    quick: bool = typer.Option(False, "--quick", help="a short run: resnet18 size and the mlp whole step, "
                               "5 repeats, 1 warmup"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch.set_num_threads (default: torch's choice)"),
    batch: Optional[int] = typer.Option(None, min=1, help="whole step: this batch size for every model "
                                        "(default: each model's own, mlp 256, convnet 64, resnet18 32)"),
    out: Optional[Path] = typer.Option(None, help="also write results.json, results.csv and report.md here"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """SSGD vs torch.optim.SGD(foreach=True): the isolated step (global, layer; momentum 0 and 0.9)
    and the whole training step, with host syncs and ops per step."""
    from ..experiments.bench_step import (TRAIN_MODELS, StepBenchConfig, TrainBenchConfig, config_dict,
                                          format_table, format_train_table, run_step_bench, run_train_bench)

    if quick:
        sizes, models, repeats, warmup = "resnet18", "mlp", 5, 1
    names = tuple(s.strip() for s in sizes.split(",") if s.strip() and s.strip() != "none")
    whole = () if models.strip() == "none" else (parse_choices(models, "--models", list(TRAIN_MODELS)) or ())
    cfg = StepBenchConfig(sizes=names, device=device, repeats=repeats, warmup=warmup, threads=threads)
    tcfg = TrainBenchConfig(models=whole, device=device, repeats=repeats, warmup=warmup, threads=threads, batch=batch)
    try:
        cfg.validate()
        tcfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    rows = run_step_bench(cfg, progress=progress) if names else []
    trows = run_train_bench(tcfg, progress=progress) if whole else []
    table = format_table(rows) if rows else ""
    ttable = format_train_table(trows) if trows else ""
    if table:
        typer.echo("Isolated optimizer step\n\n" + table + "\n")
    if ttable:
        typer.echo("Whole training step (forward + backward + step)\n\n" + ttable)
    if out is not None:
        from ..report.io import atomic_write_text, write_csv, write_json

        run_dir = open_run_dir(out, "bench-step", resumable=False)
        write_json(run_dir / "config.json", {"step": config_dict(cfg), "train": config_dict(tcfg)})
        write_json(run_dir / "results.json", {"rows": rows, "train_rows": trows})
        if rows:
            write_csv(run_dir / "results.csv", rows)
        if trows:
            write_csv(run_dir / "train_results.csv", trows)
        atomic_write_text(run_dir / "report.md",
                          "# Optimizer step benchmark\n\nSSGD vs torch.optim.SGD(foreach=True), same process, "
                          f"optimizers alternating, {cfg.repeats} timed steps each; config in "
                          "[config.json](config.json), raw numbers in results.csv / train_results.csv.\n\n"
                          f"## Isolated step\n\n{table}\n\n## Whole training step\n\n{ttable}\n")
        typer.echo(f"run folder: {run_dir}")
