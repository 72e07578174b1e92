"""Checkpoints of the global model, written atomically after every round, read back as hostile data.

A checkpoint holds the round it completed, the global arrays, the per-round history and the
run config that produced it. :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``
(no code runs) and then checks it **field by field** -- the file may come from anywhere:

* exactly the fields this module writes, with the format tag;
* ``config`` a mapping whose identity settings (model, dataset, mode, ...) equal this run's,
  else :class:`CheckpointMismatchError` (resuming would silently mix two experiments);
* ``round`` an integer in ``[1, num-rounds]`` of this run;
* ``arrays`` exactly the model's names, in order, with its shapes and dtypes, every entry finite;
* ``history`` rows of known fields and types (finite numbers, an accuracy in [0, 1], losses and seconds
  >= 0, counts integers >= 0, node ids >= 0, norms in [0, :data:`~ssgd.report.validate.NORM_LIMIT`], at most :data:`~ssgd.report.LIST_LIMIT` per-node entries, bounded texts), rounds increasing
  and ending at ``round``.

Anything else is a one-line :class:`~ssgd.report.validate.ResultFileError`, never a traceback.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ...report.checkpoint import CheckpointError, load_checkpoint as _load_plain
from ...report.io import atomic_write_bytes
from ...report.validate import ResultFileError, bounded_text, check_arrays, check_count, check_history

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointMismatchError", "IDENTITY_KEYS", "HISTORY_FIELDS",
           "FORMAT"]

FORMAT = "ssgd-flower-checkpoint-1"

# settings that must match for a resume to make sense
IDENTITY_KEYS = ("model", "dataset", "mode", "scope", "partition", "seed")

#: the fields of one history row (the ServerApp writes these; a checkpoint may hold nothing else)
HISTORY_FIELDS = {"round": "int", "test_acc": "fraction?", "test_loss": "nonneg?", "train_loss": "nonneg?",
                  "accepted": "count", "rejected": "count", "failed": "count", "norms": "node-norms",
                  "rejections": "node-texts", "failures": "node-texts", "seconds": "nonneg?"}


class CheckpointMismatchError(CheckpointError):
    """The checkpoint on disk was written by a run with different identity settings."""


def save_checkpoint(path: str | Path, round_: int, arrays: Mapping[str, np.ndarray], history: list[dict],
                    config: Mapping[str, Any]) -> Path:
    payload = {
        "round": int(round_),
        "arrays": OrderedDict((k, torch.from_numpy(np.array(v, copy=True))) for k, v in arrays.items()),
        "history": list(history),
        "config": dict(config),
        "format": FORMAT,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, config: Mapping[str, Any] | None = None, *,
                    reference: Mapping[str, np.ndarray] | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` if there is none), checked field by field.

    With ``config`` (this run's, as :meth:`FlowerRunConfig.to_dict`): its identity settings must
    match and ``round`` must be at most its ``num_rounds``. With ``reference`` (the model's
    arrays): the arrays must match it. Refusals are one-line :class:`ResultFileError` /
    :class:`CheckpointMismatchError`."""
    path = Path(path)
    if not path.is_file():
        return None
    payload = _load_plain(path, format=FORMAT, required=("round", "arrays", "history", "config"))
    unknown = sorted(str(k) for k in payload if k not in ("round", "arrays", "history", "config", "format"))
    if unknown:
        raise ResultFileError(f"refusing checkpoint {path}: unknown field {bounded_text(unknown[0], 40)!r}; "
                              "move it away to start afresh")
    saved = payload["config"]
    if not isinstance(saved, Mapping) or not all(isinstance(k, str) for k in saved):
        raise ResultFileError(f"refusing checkpoint {path}: its config is a {type(saved).__name__}, not a mapping; "
                              "move it away to start afresh")
    if config is not None:
        diffs = {k: (bounded_text(repr(saved.get(k)), 40), config.get(k)) for k in IDENTITY_KEYS
                 if saved.get(k) != config.get(k)}
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {path} was written with different settings {diffs} (checkpoint, now); "
                "use another out-dir or set resume=false")
    high = int(config["num_rounds"]) if config is not None and "num_rounds" in config else None
    rnd = check_count(payload["round"], what="its round", source=f"checkpoint {path}", low=1, high=high)
    if reference is not None:
        arrays = check_arrays(payload["arrays"], reference, source=f"checkpoint {path}")
    else:
        arrays = check_arrays(payload["arrays"], {k: v.detach().numpy() if hasattr(v, "detach") else v
                                                  for k, v in dict(payload["arrays"]).items()}
                              if isinstance(payload["arrays"], Mapping) else payload["arrays"],
                              source=f"checkpoint {path}")
    history = check_history(payload["history"], HISTORY_FIELDS, source=f"checkpoint {path}",
                            required=("round", "accepted", "rejected", "failed"), max_rows=rnd + 1)
    rounds = [r["round"] for r in history]
    if rounds != sorted(set(rounds)) or (rounds and rounds[-1] != rnd):
        raise ResultFileError(f"refusing checkpoint {path}: its history's rounds do not increase up to round {rnd}; "
                              "move it away to start afresh")
    return {"round": rnd, "arrays": arrays, "history": history, "config": dict(saved), "format": FORMAT}
