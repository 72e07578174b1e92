"""The one contract every experiment follows.

An experiment is a config dataclass with

* ``validate() -> Self`` -- raises ``ValueError`` naming the bad value and the fix;
* ``quick() -> Self`` (classmethod) -- the minutes-long variant that CI runs;
* ``run(run_dir, *, resume=False, progress=True) -> ExperimentResult``.

``run`` writes ``config.json``, the metrics (JSON/CSV), the figures (PNG) and a
Markdown ``report.md`` that links them into ``run_dir``, and returns an
:class:`ExperimentResult` that names them. ``resume=True`` continues an interrupted
run in the same folder and refuses one whose saved config differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Experiment", "ExperimentResult"]

_C = TypeVar("_C", bound="Experiment")


@dataclass
class ExperimentResult:
    """What an experiment run produced.

    ``tables``: name -> rows (the data behind each CSV/JSON table); ``figures``: name ->
    PNG path; ``report``: the Markdown report; ``summary``: a few headline numbers and
    the verdict text the CLI prints; ``seconds``: wall time of this call."""

    run_dir: Path
    report: Path
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    seconds: float = 0.0


@runtime_checkable
class Experiment(Protocol):
    def validate(self: _C) -> _C: ...

    @classmethod
    def quick(cls: type[_C]) -> _C: ...

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> ExperimentResult: ...
