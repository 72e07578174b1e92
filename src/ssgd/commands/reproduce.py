"""``ssgd reproduce ...``: the paper's experiments, one command each.

Each reproduction lives in its own module ``ssgd.commands.reproduce_<name>`` exposing
``command`` (a Typer command function); this group collects them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Reproduce the paper's experiments (each has --quick for a minutes-long run).",
                  no_args_is_help=True)

REPRODUCTIONS = ("table2", "table6", "leakage", "poisoning", "privacy")

for _name in REPRODUCTIONS:
    app.command(_name)(importlib.import_module(f"ssgd.commands.reproduce_{_name}").command)
