"""``ssgd bench ...``: the benchmarks under ``benchmarks/``, runnable from the CLI.

Each benchmark prints ratios against a baseline run in the same process. The
logic lives in :mod:`ssgd.experiments` (``bench_step``); ``benchmarks/*.py`` call
these same commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["app", "step_cmd"]

app = typer.Typer(help="Benchmarks (ratios against a baseline run in the same process).", no_args_is_help=True)


@app.command("step")
def step_cmd(
    sizes: str = typer.Option("resnet18,gpt2", help="comma-separated parameter-list sizes: tiny, resnet18 "
                              "(11.7M in 62 tensors), gpt2 (124M in 148 tensors)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    repeats: int = typer.Option(20, min=1, help="timed steps per optimizer"),
    warmup: int = typer.Option(3, min=0, help="untimed steps first"),
    quick: bool = typer.Option(False, "--quick", help="a short run: resnet18 only, 5 repeats, 1 warmup"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch.set_num_threads (default: torch's choice)"),
    out: Optional[Path] = typer.Option(None, help="also write results.json, results.csv and report.md here"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Median step time of ssgd.SSGD (global, layer; momentum 0 and 0.9) vs torch.optim.SGD(foreach=True)."""
    from ..experiments.bench_step import StepBenchConfig, config_dict, format_table, run_step_bench

    if quick:
        sizes, repeats, warmup = "resnet18", 5, 1
    names = tuple(s.strip() for s in sizes.split(",") if s.strip())
    cfg = StepBenchConfig(sizes=names, device=device, repeats=repeats, warmup=warmup, threads=threads)
    try:
        cfg.validate()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    rows = run_step_bench(cfg, progress=progress)
    table = format_table(rows)
    typer.echo(table)
    if out is not None:
        from ..report.io import atomic_write_text, make_run_dir, write_csv, write_json

        run_dir = make_run_dir(out, "bench-step")
        write_json(run_dir / "config.json", config_dict(cfg))
        write_json(run_dir / "results.json", {"rows": rows})
        write_csv(run_dir / "results.csv", rows)
        atomic_write_text(run_dir / "report.md",
                          "# Optimizer step benchmark\n\nSSGD vs torch.optim.SGD(foreach=True), median step "
                          f"time over {cfg.repeats} steps; config in [config.json](config.json), "
                          f"raw numbers in [results.csv](results.csv).\n\n{table}\n")
        typer.echo(f"run folder: {run_dir}")
