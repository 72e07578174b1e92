"""Multi-node SSGD on ``torch.distributed``: a DDP communication hook, an all-reduce helper
for loops without DDP, and a ``torchrun`` launcher.

Modules: :mod:`~ssgd.distributed.ddp` (``register``, the hook), :mod:`~ssgd.distributed.allreduce`
(``allreduce_unit_``), :mod:`~ssgd.distributed.launch` (``launch``, ``launch_training``),
:mod:`~ssgd.distributed.ddp_train` (the per-rank entry point of ``ssgd train --nodes N``).

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
    "launch_training",
    "torchrun_command",
    "NodeFailureError",
    "LocalNonFiniteError",
]

_EXPORTS = {
    "allreduce_unit_": "ssgd.distributed.allreduce",
    "register": "ssgd.distributed.ddp",
    "ssgd_hook": "ssgd.distributed.ddp",
    "SSGDHookState": "ssgd.distributed.ddp",
    "launch_training": "ssgd.distributed.launch",
    "torchrun_command": "ssgd.distributed.launch",
    "NodeFailureError": "ssgd.distributed.launch",
    "LocalNonFiniteError": "ssgd.distributed._common",
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
