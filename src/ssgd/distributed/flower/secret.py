"""The node's own secret: the key that picks which of its examples a batch holds.

The server sends a ``seed`` and a round number; if they alone chose the batch, the server could replay the
node's draw offline and pick the examples it wants (e.g. two batches that differ in one example, whose
difference names that example's label -- red team 3 finding 5). The node therefore mixes them with a key
the server never sees: node config ``batch-key`` (the node owner's choice, e.g. a fixed one for reproducible
runs), else a random key the node creates once in ``<flwr home>/ssgd/batch-key-<partition-id>`` (mode 0600,
from ``os.urandom``; the same naming as the default privacy ledger, :func:`~.privacy.default_ledger_path`)
and keeps across runs and restarts.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

__all__ = ["batch_key", "batch_seed", "batch_key_path"]

_KEY = re.compile(r"[0-9a-f]{64}")


def batch_key_path(node_config: Mapping[str, Any] | None) -> Path:
    """``<flwr home>/ssgd/batch-key-<partition-id>`` (no partition-id: ``batch-key``); resolved now."""
    from .privacy import default_ledger_path

    ledger = default_ledger_path(node_config)  # validates partition-id the same way
    return ledger.with_name(ledger.name.replace("privacy-ledger", "batch-key").removesuffix(".json"))


def _file_key(path: Path) -> str:
    if not path.exists():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
            try:
                os.link(tmp, path)  # atomic, never overwrites: a concurrent creator's key wins, both read it
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    text = path.read_text(encoding="ascii").strip()
    if not _KEY.fullmatch(text):
        raise ValueError(f"the node's batch key file {path} is not 64 hex digits; remove it (a new random key "
                         "is made) or set node config batch-key")
    return text


def batch_key(node_config: Mapping[str, Any] | None) -> str:
    """This node's batch key: node config ``batch-key`` if set, else the key file (made on first use)."""
    key = dict(node_config or {}).get("batch-key", "")
    if not isinstance(key, str):
        raise ValueError(f"Invalid node config batch-key={key!r}; expected a string")
    return key if key else _file_key(batch_key_path(node_config))


def batch_seed(key: str, seed: int, server_round: int) -> int:
    """A 63-bit generator seed from the node's secret ``key`` and the server's ``seed`` and round: the
    server cannot predict it without the key."""
    h = hashlib.sha256(repr(("ssgd-batch", str(key), int(seed), int(server_round))).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
