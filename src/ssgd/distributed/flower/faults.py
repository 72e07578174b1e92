"""A misbehaving node for fault drills: corrupts the update *after* the SSGD mod.

Put it first (outermost) in the ``ClientApp``'s mods so it sees the already normalised
reply, i.e. it plays a node that bypasses SSGD. It is inert unless the SuperNode's node
config sets ``fault`` (``--node-config 'fault="nan" ...'``) or the mod is built with one:

``nan``       one entry becomes NaN
``shape``     the first tensor loses its last row
``norm1000``  the whole update is scaled by 1000 (a boosted, non-unit update)
``dtype``     the update is sent as float64
``names``     the first tensor is renamed
"""

from __future__ import annotations

import numpy as np

__all__ = ["FAULTS", "FaultMod", "corrupt_arrays"]

FAULTS = ("none", "nan", "shape", "norm1000", "dtype", "names")


def corrupt_arrays(arrays: dict[str, np.ndarray], fault: str) -> dict[str, np.ndarray]:
    if fault not in FAULTS:
        raise ValueError(f"Unknown fault {fault!r}; expected one of {FAULTS}")
    out = {k: np.array(v, copy=True) for k, v in arrays.items()}
    first = next(iter(out))
    if fault == "nan":
        out[first].reshape(-1)[0] = np.nan
    elif fault == "shape":
        out[first] = out[first][:-1] if out[first].ndim else out[first].reshape(1)
    elif fault == "norm1000":
        out = {k: v * 1000 for k, v in out.items()}
    elif fault == "dtype":
        out = {k: v.astype(np.float64) for k, v in out.items()}
    elif fault == "names":
        out = {(k + "_evil" if k == first else k): v for k, v in out.items()}
    return out


class FaultMod:
    """Client mod that corrupts train replies as set by ``fault`` (or the node config's ``fault``)."""

    def __init__(self, fault: str | None = None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"Unknown fault {fault!r}; expected one of {FAULTS}")
        self.fault = fault

    def __call__(self, msg, ctxt, call_next):
        from flwr.app import Array, ArrayRecord, MessageType

        out = call_next(msg, ctxt)
        fault = self.fault or str(ctxt.node_config.get("fault", "none"))
        if fault == "none" or out.has_error() or msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return out
        key = next(iter(out.content.array_records))
        arrays = {k: np.asarray(a.numpy()) for k, a in out.content.array_records[key].items()}
        out.content[key] = ArrayRecord({k: Array(v) for k, v in corrupt_arrays(arrays, fault).items()})
        return out
