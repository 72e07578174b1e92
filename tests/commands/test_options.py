"""The shared option helpers of the command layer: option groups and list parsing."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from ssgd.commands._options import Options, parse_int_list, with_options


def _group(alpha: int = typer.Option(1, "--alpha", help="first"), beta: str = typer.Option("b", "--beta")):
    """Two options shared by several commands."""


def _app(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_options(shared=_group)
    def cmd(before: int = typer.Option(0, "--before"), shared: Options = None,
            after: bool = typer.Option(False, "--after")):
        seen.append((before, shared, after))

    return app


def test_group_options_appear_in_place_and_arrive_as_one_namespace():
    seen: list = []
    app = _app(seen)
    r = CliRunner().invoke(app, ["--alpha", "5", "--after", "--before", "2"])
    assert r.exit_code == 0, r.output
    before, shared, after = seen[0]
    assert (before, after) == (2, True) and isinstance(shared, Options)
    assert (shared.alpha, shared.beta) == (5, "b")
    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    order = [text.index(o) for o in ("--before", "--alpha", "--beta", "--after")]
    assert order == sorted(order), "the group's options stand where its parameter stood"
    bad = CliRunner().invoke(app, ["--alpha", "x"])
    assert bad.exit_code != 0 and "--alpha" in bad.output


def test_group_without_its_parameter_is_a_programming_error():
    with pytest.raises(TypeError, match="no parameter \\['shared'\\]"):
        @with_options(shared=_group)
        def cmd(other: int = 0):
            pass


def test_parse_int_list_names_the_option_and_an_example():
    assert parse_int_list("4, 16,64", "--ms", example="4,16,64") == (4, 16, 64)
    with pytest.raises(typer.BadParameter, match="--ms"):
        parse_int_list("4,x", "--ms", example="4,16,64")
