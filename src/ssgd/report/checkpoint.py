"""Checkpoints: written atomically, loaded as data only.

A checkpoint file is hostile input (a run folder may come from anywhere): it is loaded
with ``torch.load(..., weights_only=True)``, which unpickles tensors, numbers, strings and
containers and nothing else -- no code runs. Anything that fails to load (corrupt,
truncated, foreign, or a pickle that asks for code) is refused with a one-line
:class:`CheckpointError` naming the file; the folder is left as it was.

Every checkpoint carries a ``format`` tag, so a file written by another tool (or another
kind of ssgd run) is refused rather than half-read.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import atomic_write_bytes
from .validate import ResultFileError

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]


class CheckpointError(ResultFileError):
    """A checkpoint that cannot be used: unreadable, not a checkpoint of this kind, or unsafe."""


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], *, format: str) -> Path:
    """Write ``state`` (tensors, numbers, strings, containers only) with the ``format`` tag, atomically."""
    payload = dict(state)
    payload["format"] = format
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, format: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, or :class:`CheckpointError` with one line saying why and what to do.

    ``format`` must match the tag written by :func:`save_checkpoint`; every key in ``required``
    must be present."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start a new run (drop --resume) or point --out at a run folder")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError,
            AttributeError, KeyError, IndexError, UnicodeDecodeError, MemoryError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise CheckpointError(f"refusing checkpoint {path}: it is corrupt, truncated or not a plain-data checkpoint "
                              f"({type(e).__name__}{': ' + first if first else ''}); "
                              "move it away to start afresh") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"refusing checkpoint {path}: it is not an ssgd {format!r} checkpoint (found {got!r}); "
                              "use the run folder that wrote it, or a new one")
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"refusing checkpoint {path}: it lacks {missing}; it is truncated or from another "
                              "version; move it away to start afresh")
    return payload
