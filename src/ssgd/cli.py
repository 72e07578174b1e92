"""The ``ssgd`` command line (also ``python -m ssgd``). One module per command group
under :mod:`ssgd.commands`; heavy imports happen inside the commands.

What every command shares lives here: ``--version``, ``--threads`` (:func:`choose_threads`),
errors as one line (:func:`main`), the ``--resume`` hint on Ctrl-C, and the note when
Opacus's accountant says its ε bound may be loose."""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Optional, Sequence

import typer

from .commands import attack, bench, demo, flower, reproduce, train
from .models import OPTIMIZERS

app = typer.Typer(
    name="ssgd",
    help="SSGD: share only unit vectors of gradients, and measure what that hides.\n\n"
         f"Optimizers: {', '.join(OPTIMIZERS)} (ssgd: the unit vector; SSGD(m) with --shards m).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("train")(train.train_cmd)
app.command("demo")(demo.demo_cmd)
app.command("attack")(attack.attack_cmd)
app.add_typer(bench.app, name="bench")
app.add_typer(reproduce.app, name="reproduce")
app.add_typer(flower.app, name="flower")

THREADS_ENV = "SSGD_THREADS"


def choose_threads(requested: int | None = None) -> int:
    """Torch's intra-op threads for this process, the one rule of the CLI.

    ``--threads N``, else ``$SSGD_THREADS``, else ``$OMP_NUM_THREADS`` when the user set it, else the
    cores this process may run on (its CPU affinity) minus those already busy (the 1-minute load
    average, rounded), at least 1. Torch's own default (every core) collapses when another busy
    process shares the cores: its threads wait on each other (issue 23: 94 s instead of 21.5 s)."""
    if requested is not None:
        return int(requested)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:  # pragma: no cover
        busy = 0
    return max(1, min(cores, cores - busy))


def apply_threads(n: int) -> None:
    """Use ``n`` threads: before torch is imported through the environment (read at import), after it directly."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("ssgd")
        except PackageNotFoundError:  # pragma: no cover - source tree without install
            v = "unknown (not installed)"
        typer.echo(f"ssgd {v}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, envvar=THREADS_ENV, show_envvar=True,
                                          help="torch threads (default: the free cores of this process; README, Threads)"),
) -> None:
    apply_threads(choose_threads(threads))


_LOOSE = re.compile(r"Optimal order is the (smallest|largest) alpha")


def _note_loose_bound() -> None:
    """Opacus's 'Optimal order is the smallest alpha' warning, told once in the user's terms."""
    shown = warnings.showwarning
    told = []

    def show(message, category, filename, lineno, file=None, line=None):
        if _LOOSE.search(str(message)):
            if not told:
                told.append(1)
                typer.echo("note: the RDP accountant's optimum lies at the edge of its orders, so the epsilon "
                           "reported is a valid upper bound but may be loose (--accountant prv gives a tighter "
                           "one)", err=True)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _one_line(e: Exception) -> str:
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    # click and typer both suggest a command: keep one suggestion
    msg = re.sub(r"\s*\(Did you mean one of: [^)]*\)", "", " ".join(str(msg).split()))
    msg = re.sub(r"(\s*Did you mean [^?]*\?)(\1)+", r"\1", msg)
    ctx = getattr(e, "ctx", None)
    hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    return f"Error: {msg}{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """``ssgd`` / ``python -m ssgd``. Errors a user can cause end as ONE line and exit status 2;
    Ctrl-C exits 130 and prints the command that resumes the run."""
    import click

    from .commands import USER_ERRORS
    from .commands import interrupted_hint

    args = list(sys.argv[1:] if argv is None else argv)
    _note_loose_bound()
    try:
        rv = app(args=args, prog_name="ssgd", standalone_mode=False)
    except click.exceptions.UsageError as e:  # typer.BadParameter, unknown command/option, missing value
        typer.echo(_one_line(e), err=True)
        rv = 2
    except click.exceptions.Abort:
        rv = 130
    except click.ClickException as e:
        typer.echo(_one_line(e), err=True)
        rv = e.exit_code
    except USER_ERRORS as e:
        typer.echo(f"Error: {' '.join(str(e).split())}", err=True)
        rv = 2
    rv = rv if isinstance(rv, int) else 0
    if rv == 130:
        typer.echo(interrupted_hint(args), err=True)
    if argv is None:
        sys.exit(rv)
    return rv


if __name__ == "__main__":  # pragma: no cover
    main()
