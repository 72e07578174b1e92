"""Multi-node SSGD on ``torch.distributed``: a DDP communication hook, an all-reduce helper
for loops without DDP, and a ``torchrun`` launcher.

Submodules are imported lazily so ``import ssgd.distributed`` stays cheap and never imports
``flwr`` (the Flower integration lives in the separate subpackage ``ssgd.distributed.flower``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "allreduce_unit_",
    "register",
    "ssgd_hook",
    "SSGDHookState",
    "launch",
    "NodeFailureError",
]

_EXPORTS = {
    "allreduce_unit_": "ssgd.distributed.allreduce",
    "register": "ssgd.distributed.ddp",
    "ssgd_hook": "ssgd.distributed.ddp",
    "SSGDHookState": "ssgd.distributed.ddp",
    "launch": "ssgd.distributed.launch",
    "NodeFailureError": "ssgd.distributed.launch",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssgd.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
