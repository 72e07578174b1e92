"""``ssgd bench ...``: the benchmarks under ``benchmarks/``, runnable from the CLI."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks (ratios against a baseline run in the same process).", no_args_is_help=True)
