"""The ``ssgd`` command line (also ``python -m ssgd``). One module per command group
under :mod:`ssgd.commands`; heavy imports happen inside the commands."""

from __future__ import annotations

import typer

from .commands import attack, bench, demo, flower, reproduce, train

app = typer.Typer(
    name="ssgd",
    help="SSGD: share only unit vectors of gradients, and measure what that hides.",
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


def main() -> None:
    """``ssgd`` / ``python -m ssgd``: errors a user can cause end as one line and exit status 2.

    (The commands turn them into ``typer.Exit`` themselves; this catches any that escape a
    command, outside click's context, where a ``typer.Exit`` would print a traceback.)"""
    import sys

    from .commands import USER_ERRORS

    try:
        app()
    except USER_ERRORS as e:
        typer.echo(f"Error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
