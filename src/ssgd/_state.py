"""Private: the non-finite skip counter in an optimizer's state dict, kept one way for the core.

:class:`ssgd.SSGD` and :class:`ssgd.SSGDWrapper` both store it as ``state_dict()["ssgd"]["skipped_steps"]``
through torch's optimizer state-dict hooks, so a plain ``torch.save(opt.state_dict())`` carries it.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch.optim import Optimizer

KEY = "ssgd"


def _save(owner: Any, extra: dict[str, Any], optimizer: Optimizer, sd: dict[str, Any]) -> dict[str, Any]:
    sd[KEY] = {**extra, "skipped_steps": owner.skipped_steps}
    return sd


def _load_pre(owner: Any, optimizer: Optimizer, sd: dict[str, Any]) -> dict[str, Any]:
    sd = dict(sd)
    extra = sd.pop(KEY, None)
    owner.__dict__["_loaded_skipped_steps"] = int(extra["skipped_steps"]) if isinstance(extra, dict) else 0
    return sd


def _load_post(owner: Any, optimizer: Optimizer) -> None:
    owner.set_skipped_steps(owner.__dict__.pop("_loaded_skipped_steps", 0))


def attach_skip_counter(owner: Any, optimizer: Optimizer, extra: dict[str, Any] | None = None) -> None:
    """Register the hooks on ``optimizer`` (the one whose ``state_dict`` is saved); ``owner`` has
    a ``skipped_steps`` property and a ``set_skipped_steps(n)`` method. ``extra`` is saved alongside."""
    optimizer.register_state_dict_post_hook(partial(_save, owner, dict(extra or {})))
    optimizer.register_load_state_dict_pre_hook(partial(_load_pre, owner))
    optimizer.register_load_state_dict_post_hook(partial(_load_post, owner))
