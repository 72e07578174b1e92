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
    _modname = f"ssgd.commands.reproduce_{_name}"
    try:
        _mod = importlib.import_module(_modname)
    except ModuleNotFoundError as _e:  # being built
        if _e.name == _modname:
            continue
        raise
    app.command(_name)(_mod.command)
