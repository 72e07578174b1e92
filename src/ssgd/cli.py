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
    from .commands._options import user_errors

    with user_errors():
        app()


if __name__ == "__main__":  # pragma: no cover
    main()
