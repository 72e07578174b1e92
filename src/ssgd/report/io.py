"""Run folders and atomic result files: a crash never leaves a half-written result."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["make_run_dir", "atomic_write_text", "atomic_write_bytes", "write_json", "write_csv", "save_figure",
           "new_figure", "jsonable", "read_csv", "RunDirError", "ConfigMismatchError", "check_saved_config",
           "check_same_config", "config_diff"]


class RunDirError(ValueError):
    """A run folder that cannot be used as asked (a file, not writable, or holding results without --resume)."""


def make_run_dir(out: str | os.PathLike | None, prefix: str, *, resume: bool = False,
                 overwrite: bool = False) -> Path:
    """``out`` if given, else a new ``runs/<prefix>-<YYYYmmdd-HHMMSS>[-k]``; created, checked writable.

    An existing non-empty ``out`` holds someone's results: it is used only with ``resume=True``
    (continue it) or ``overwrite=True`` (replace its files); otherwise :class:`RunDirError` says so.
    ``out`` naming a file, or a folder that cannot be written, is refused the same way."""
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} is a file, not a folder; choose a folder path")
        if path.is_dir() and any(path.iterdir()) and not (resume or overwrite):
            raise RunDirError(f"--out {path} already holds results; pass --resume to continue that run, "
                              "or choose a new folder")
        if resume and not path.is_dir():
            raise RunDirError(f"--resume: {path} does not exist; drop --resume to start a new run there")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"--out {path}: cannot create it ({e.strerror or e}); choose another folder") from None
        if not _writable(path):
            raise RunDirError(f"--out {path} is not writable (read-only folder or file system); "
                              "choose another folder")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{prefix}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = Path(f"{base}-{k}")
    path.mkdir(parents=True)
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed: ``os.access`` says yes to root
    on a read-only mount)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ssgd-write-probe.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data: 0-d tensors/arrays become numbers, paths strings, NaN ``null``
    (a missing value), +-inf the strings ``"inf"``/``"-inf"`` (JSON has no infinity; ``float("inf")``
    reads them back)."""
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        if obj != obj:
            return None
        if obj in (float("inf"), float("-inf")):
            return str(obj)
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    rows = list(rows)
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`write_csv`, numbers parsed back (``nan``/``inf`` included);
    ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []

    def conv(v: str) -> Any:
        try:
            return float(v)
        except (TypeError, ValueError):
            return v

    with path.open(newline="") as fh:
        return [{k: conv(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _csv_value(v: Any) -> Any:
    v = jsonable(v)
    return "nan" if v is None else v


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.0, 4.0), **subplot_kw: Any):
    """``(fig, axes)`` from matplotlib's object-oriented API: no pyplot, no global backend change,
    so a library call never touches the user's matplotlib state. ``axes`` is one Axes for 1x1,
    else the array ``Figure.subplots`` returns (``squeeze`` may be passed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically as PNG (works for pyplot and plain ``Figure`` objects)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if getattr(fig, "number", None) is not None:  # a pyplot-managed figure: release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


class ConfigMismatchError(ValueError):
    """A run folder holds results of a different configuration than the one asked for."""


def config_diff(saved: Mapping[str, Any], now: Mapping[str, Any], *,
                ignore: Iterable[str] = ("device", "progress")) -> list[str]:
    """The keys whose values differ between ``saved`` and ``now`` (after a JSON round trip), sorted."""
    a = json.loads(json.dumps(jsonable(dict(saved))))
    b = json.loads(json.dumps(jsonable(dict(now))))
    skip = set(ignore)
    return [k for k in sorted((set(a) | set(b)) - skip) if a.get(k) != b.get(k)]


def check_same_config(saved: Mapping[str, Any], now: Mapping[str, Any], *, source: str | os.PathLike,
                      ignore: Iterable[str] = ("device", "progress")) -> None:
    """:class:`ConfigMismatchError` naming every differing key of ``saved`` (read from ``source``) and ``now``."""
    if not isinstance(saved, Mapping):
        raise ConfigMismatchError(f"{source} holds no config object; use a new run folder")
    diff = config_diff(saved, now, ignore=ignore)
    if diff:
        from .validate import bounded_text  # the saved file is hostile: each key and value bounded, 6 at most

        def show(v: Any) -> str:
            return bounded_text(repr(v), 40)

        keys = "[" + ", ".join(show(k) for k in diff[:6]) + "]"
        shown = ", ".join(f"{bounded_text(k, 40)}: saved {show(saved.get(k))}, "
                          f"now {show(now.get(k))}" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise ConfigMismatchError(f"cannot resume from {bounded_text(source, 200)}: its config differs in {keys} "
                                  f"({shown}{more}); resume with the same settings or use a new run folder")


def check_saved_config(run_dir: str | os.PathLike, config: Mapping[str, Any], *, name: str = "config.json",
                       ignore: Iterable[str] = ("device", "progress")) -> bool:
    """Compare ``config`` with the one saved in ``run_dir/name``.

    Returns ``False`` when nothing is saved yet, ``True`` when the saved config is the same
    (after a JSON round trip, keys in ``ignore`` left out); raises :class:`ConfigMismatchError`
    naming every differing key and the fix otherwise. An unreadable file is a mismatch too."""
    path = Path(run_dir) / name
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigMismatchError(f"{path} is unreadable ({e.__class__.__name__}); use a new run folder") from None
    check_same_config(saved, config, source=path, ignore=ignore)
    return True
