"""The ``ssgd`` command line (also ``python -m ssgd``). One module per command group
under :mod:`ssgd.commands`; heavy imports happen inside the commands."""

from __future__ import annotations

import typer

from .commands import bench, demo, train

app = typer.Typer(
    name="ssgd",
    help="SSGD: share only unit vectors of gradients, and measure what that hides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("train")(train.train_cmd)
app.command("demo")(demo.demo_cmd)
app.add_typer(bench.app, name="bench")


def _register_optional() -> None:
    """Command groups contributed by the other layers (attack, reproduce, flower)."""
    import importlib

    for mod, name, kind in (
        ("ssgd.commands.attack", "attack", "command"),
        ("ssgd.commands.reproduce", "reproduce", "group"),
        ("ssgd.commands.flower", "flower", "group"),
    ):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        if kind == "command":
            app.command(name)(getattr(m, f"{name}_cmd"))
        else:
            app.add_typer(m.app, name=name)


_register_optional()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
