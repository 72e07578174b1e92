"""Option parsing shared by every command: comma-separated lists, choices, devices, and option
groups that several commands take (:func:`with_options`).

Each helper raises ``typer.BadParameter`` naming the option, the bad value and an
example of a good one, so every command refuses bad input the same way."""

from __future__ import annotations

import contextlib
import functools
import inspect
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence, TypeVar

import typer

__all__ = ["parse_list", "parse_int_list", "parse_float_list", "parse_choices", "check_device", "user_errors",
           "USER_ERRORS", "Options", "with_options"]

T = TypeVar("T")
R = TypeVar("R")

Options = SimpleNamespace  # the values of one option group, as a command gets them (see with_options)


def parse_list(text: str | None, option: str, cast: Callable[[str], T], example: str, *,
               check: Callable[[T], bool] | None = None, must: str = "") -> tuple[T, ...] | None:
    """``None`` stays ``None``; ``"a,b"`` becomes ``(cast(a), cast(b))``; empty or bad items are refused."""
    if text is None:
        return None
    try:
        vals = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} must be a comma-separated list, e.g. {example}; got {text!r}")
    if not vals:
        raise typer.BadParameter(f"{option} is empty; give a comma-separated list, e.g. {example}")
    if check is not None:
        bad = [v for v in vals if not check(v)]
        if bad:
            raise typer.BadParameter(f"{option}: {bad} {must or 'invalid'}, e.g. {example}; got {text!r}")
    return vals


def parse_int_list(text: str | None, option: str, example: str = "16,128,1024", *,
                   minimum: int = 1) -> tuple[int, ...] | None:
    return parse_list(text, option, int, example, check=lambda v: v >= minimum, must=f"must be >= {minimum}")


def parse_float_list(text: str | None, option: str, example: str = "1,2,4", *,
                     positive: bool = True) -> tuple[float, ...] | None:
    def ok(v: float) -> bool:
        return v == v and (v > 0 if positive else True)

    return parse_list(text, option, float, example, check=ok, must="must be > 0" if positive else "must be numbers")


def parse_choices(text: str | None, option: str, known: Sequence[str]) -> tuple[str, ...] | None:
    vals = parse_list(text, option, str, ",".join(known[:2]))
    if vals is None:
        return None
    bad = [v for v in vals if v not in known]
    if bad:
        raise typer.BadParameter(f"{option}: unknown {bad}; choose from {','.join(known)}")
    return vals


def check_device(device: str, option: str = "--device") -> str:
    """``cpu`` or ``cuda[:k]`` with a visible GPU; anything else is refused with the fix."""
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{option} {device}: no CUDA GPU is visible here; use {option} cpu")
        return device
    raise typer.BadParameter(f"{option} {device!r} is not supported; use cpu or cuda (or cuda:K)")


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..report import CheckpointError, ConfigMismatchError, RunDirError
    from ..transform import NonFiniteGradientError

    return (CheckpointError, ConfigMismatchError, RunDirError, NonFiniteGradientError)


USER_ERRORS = _user_errors()


@contextlib.contextmanager
def user_errors(extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn the errors a user can cause (bad run folder, refused checkpoint, config mismatch,
    a diverging run, plus ``extra``) into one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except USER_ERRORS + tuple(extra) as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(2) from None


def with_options(**groups: Callable[..., None]) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Options written once for several commands.

    Each ``name=group`` is a function whose parameters are Typer options (its body never runs). In the
    signature Typer reads, the command's own parameter ``name`` is replaced, where it stands, by
    ``group``'s parameters, so every command that takes the group has those options with the same
    names, defaults, help and order; the command is called with ``name=`` an :data:`Options` of their
    values."""

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        sig = inspect.signature(command, eval_str=True)
        members = {name: list(inspect.signature(group, eval_str=True).parameters.values())
                   for name, group in groups.items()}
        missing = sorted(set(members) - set(sig.parameters))
        if missing:
            raise TypeError(f"{command.__name__} has no parameter {missing} to stand for its option group")
        exposed = sig.replace(parameters=[q for p in sig.parameters.values() for q in members.get(p.name, [p])])

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            bound = exposed.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            for name, params in members.items():
                values[name] = Options(**{p.name: values.pop(p.name) for p in params})
            return command(**values)

        wrapper.__signature__ = exposed  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in exposed.parameters.values()
                                   if p.annotation is not p.empty}
        if sig.return_annotation is not sig.empty:
            wrapper.__annotations__["return"] = sig.return_annotation
        return wrapper

    return decorate
