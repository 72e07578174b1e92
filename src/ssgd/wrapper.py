"""``ssgd.SSGDWrapper``: normalise the gradients, then run any optimizer's step.

So SSGD composes with Adam, LARS, SGD with Nesterov, a custom optimizer, ...::

    opt = ssgd.SSGDWrapper(torch.optim.Adam(model.parameters(), lr=1e-3), scope="layer")
    loss.backward(); opt.step(); opt.zero_grad()

Unlike :class:`ssgd.SSGD`, the wrapper *does* overwrite ``.grad`` with the unit
vector (the inner optimizer reads ``.grad``). ``param_groups``, ``state``,
``defaults``, ``state_dict``/``load_state_dict``, ``zero_grad`` and
``add_param_group`` are the inner optimizer's, so LR schedulers and checkpoints
work unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.optim import Optimizer

from ._state import attach_skip_counter
from .transform import DEFAULT_EPS, NonFiniteGradientError, check_eps, check_nonfinite, check_scope, unit_

__all__ = ["SSGDWrapper"]


class SSGDWrapper(Optimizer):
    """Wrap ``optimizer`` so that each step sees unit-vector gradients.

    Args:
        optimizer: any :class:`torch.optim.Optimizer` (already constructed).
        scope: ``"global"`` (one norm over all parameters of all groups) or ``"layer"``.
        eps: norm floor (see :func:`ssgd.unit_`).
        nonfinite: ``"raise"`` or ``"skip"`` (skip the inner step and count it in
            :attr:`skipped_steps`; gradients and parameters stay unmodified).
    """

    def __init__(self, optimizer: Optimizer, scope: str = "global", *, eps: float = DEFAULT_EPS,
                 nonfinite: str = "raise") -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"SSGDWrapper wraps a torch.optim.Optimizer instance, got {type(optimizer).__name__}; "
                "construct the optimizer first, e.g. SSGDWrapper(torch.optim.Adam(model.parameters()))"
            )
        if isinstance(optimizer, SSGDWrapper):
            raise TypeError("optimizer is already an SSGDWrapper; wrapping twice would normalise twice")
        check_scope(scope)
        check_nonfinite(nonfinite)
        check_eps(eps)
        # Deliberately no super().__init__: every piece of state is the inner optimizer's.
        self.optimizer = optimizer
        self.scope = scope
        self.eps = eps
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._optimizer_step_pre_hooks = optimizer._optimizer_step_pre_hooks
        self._optimizer_step_post_hooks = optimizer._optimizer_step_post_hooks
        # the skip counter travels in the inner optimizer's state dict, under "ssgd" (as SSGD's does)
        attach_skip_counter(self, optimizer, {"scope": scope, "eps": eps, "nonfinite": nonfinite})

    # --- forwarding -------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):  # pragma: no cover - set by LRScheduler internals only
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self):  # type: ignore[override]
        return self.optimizer.defaults

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's state dict, with ``"ssgd"``: scope, eps, nonfinite and ``skipped_steps``."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load the inner optimizer's state and the skip counter."""
        self.optimizer.load_state_dict(state_dict)

    def set_skipped_steps(self, n: int) -> None:
        self.skipped_steps = int(n)

    def zero_grad(self, set_to_none: bool = True) -> None:  # type: ignore[override]
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:  # type: ignore[override]
        self.optimizer.add_param_group(param_group)

    def __repr__(self) -> str:
        return f"SSGDWrapper(scope={self.scope!r}, optimizer={self.optimizer!r})"

    def __getattr__(self, name: str):
        # only reached for attributes the wrapper lacks (hook dicts, optimizer-specific
        # helpers): forward them to the inner optimizer
        inner = self.__dict__.get("optimizer")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    # --- the step -----------------------------------------------------------------
    def normalize_grads_(self) -> bool:
        """Turn every ``.grad`` into its unit vector. Returns False if skipped (non-finite).

        Raises :class:`~ssgd.NonFiniteGradientError` naming the parameter (``nonfinite="raise"``)
        before any gradient is modified."""
        grads, names = [], []
        for gi, group in enumerate(self.param_groups):
            pn = group.get("param_names")
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    grads.append(p.grad)
                    names.append(pn[pi] if pn else f"param_groups[{gi}]['params'][{pi}]")
        if not grads:
            return True
        try:
            with torch.no_grad():
                unit_(grads, self.scope, self.eps, names=names)
        except NonFiniteGradientError:
            if self.nonfinite == "raise":
                raise
            self.skipped_steps += 1
            return False
        return True

    def step(self, closure: Callable[[], float] | None = None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.normalize_grads_():
            self.optimizer.step()
        return loss
