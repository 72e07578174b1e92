"""Checkpoints of the global model, written atomically after every round.

A checkpoint holds the round it completed, the global arrays, the per-round history and
the run config that produced it; :func:`load_checkpoint` refuses one written by a run with
a different model, dataset or mode (resuming it would silently mix two experiments).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ...report.io import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointMismatchError", "IDENTITY_KEYS"]

# settings that must match for a resume to make sense
IDENTITY_KEYS = ("model", "dataset", "mode", "scope", "partition", "seed")


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk was written by a run with different identity settings."""


def save_checkpoint(path: str | Path, round_: int, arrays: Mapping[str, np.ndarray], history: list[dict],
                    config: Mapping[str, Any]) -> Path:
    payload = {
        "round": int(round_),
        "arrays": OrderedDict((k, torch.from_numpy(np.array(v, copy=True))) for k, v in arrays.items()),
        "history": list(history),
        "config": dict(config),
        "format": "ssgd-flower-checkpoint-1",
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, config: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` if there is none). With ``config``, check it matches."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete it to start afresh") from e
    if not isinstance(payload, dict) or payload.get("format") != "ssgd-flower-checkpoint-1":
        raise ValueError(f"{path} is not an ssgd Flower checkpoint; delete it or choose another out-dir")
    if config is not None:
        diffs = {k: (payload["config"].get(k), config.get(k)) for k in IDENTITY_KEYS
                 if payload["config"].get(k) != config.get(k)}
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {path} was written with different settings {diffs} (checkpoint, now); "
                "use another out-dir or set resume=false")
    payload["arrays"] = OrderedDict((k, v.numpy()) for k, v in payload["arrays"].items())
    return payload
