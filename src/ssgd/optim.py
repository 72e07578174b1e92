r"""``ssgd.SSGD``: stochastic gradient descent along the gradient's unit vector.

.. math::
   \begin{aligned}
   &u_t = g_t / \max(\lVert g_t \rVert, \epsilon)
       \quad\text{(norm over all parameters for scope="global", per tensor for "layer")}\\
   &\text{if maximize: } u_t \leftarrow -u_t\\
   &\text{if } \lambda \ne 0 \text{ and coupled: } u_t \leftarrow u_t + \lambda\,\theta_{t-1}\\
   &\text{if } \mu \ne 0:\ b_t = \mu b_{t-1} + (1-\tau) u_t \ (b_1 = u_1);\quad
      d_t = u_t + \mu b_t \text{ (nesterov) else } b_t\\
   &\text{if } \lambda \ne 0 \text{ and decoupled: } \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1}\\
   &\theta_t = \theta_{t-1} - \gamma\, d_t
   \end{aligned}

Normalisation comes first, so momentum accumulates unit vectors and the step
length without momentum or weight decay is exactly ``lr``. Weight decay is
*coupled* by default (added to the unit vector, like ``torch.optim.SGD`` adds it
to the gradient: the decay is then relative to a step of length 1); pass
``decoupled_weight_decay=True`` for AdamW-style decay ``θ ← (1 - lr·λ) θ``.

The raw gradients in ``.grad`` are left untouched; the normalisation is folded
into the update's multiplier.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .transform import DEFAULT_EPS, NonFiniteGradientError, check_scope, grad_norms

__all__ = ["SSGD", "NONFINITE_POLICIES", "check_nonfinite"]

NONFINITE_POLICIES = ("raise", "skip")
_SAFE = (1e-30, 1e30)


def check_nonfinite(nonfinite: str) -> str:
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"Invalid nonfinite policy: {nonfinite!r}; expected one of {NONFINITE_POLICIES}")
    return nonfinite


def _validate(lr, momentum, dampening, nesterov, weight_decay, eps, scope, nonfinite) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element, got {lr.numel()} elements")
    if not 0.0 <= float(lr):
        raise ValueError(f"Invalid learning rate: {lr}; must be >= 0")
    if not 0.0 <= momentum:
        raise ValueError(f"Invalid momentum value: {momentum}; must be >= 0")
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening value: {dampening}; must be in [0, 1]")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}; must be >= 0")
    if not eps > 0.0:
        raise ValueError(f"Invalid eps value: {eps}; must be > 0")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"Nesterov momentum requires a momentum > 0 and zero dampening (got momentum={momentum}, "
            f"dampening={dampening})"
        )
    check_scope(scope)
    check_nonfinite(nonfinite)


class SSGD(Optimizer):
    r"""Super stochastic gradient descent (Duan et al., arXiv 2012.02076).

    Steps along the unit vector of the gradient; see the module docstring for the math.

    Args:
        params: parameters or parameter groups (``named_parameters()`` also works and
            lets errors name the parameter).
        lr: step length (``>= 0``).
        scope: ``"global"`` (one norm over every parameter of every group using global
            scope) or ``"layer"`` (each tensor normalised by its own norm). Groups may
            mix scopes; all global-scope groups share one joint norm.
        momentum, dampening, nesterov: as in :class:`torch.optim.SGD`, applied to the
            unit vector.
        weight_decay: L2 coefficient, coupled by default (see ``decoupled_weight_decay``).
        eps: floor of the norm; a gradient with norm below ``eps`` is divided by ``eps``
            (a zero gradient gives no update). The joint global norm uses the
            constructor's ``eps``.
        maximize: ascend instead of descend.
        foreach: use the multi-tensor ``torch._foreach_*`` kernels (``None``: yes, unless
            parameters live on several devices).
        nonfinite: ``"raise"`` (default) raises :class:`~ssgd.NonFiniteGradientError`
            naming the parameter; ``"skip"`` leaves every parameter unchanged for that
            step and counts it in ``optimizer.state["skipped_steps"]``.
        decoupled_weight_decay: AdamW-style ``θ ← (1 - lr·λ)·θ`` instead of coupled decay.

    Example::

        opt = ssgd.SSGD(model.parameters(), lr=0.05, momentum=0.9)
        loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        *,
        scope: str = "global",
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        eps: float = DEFAULT_EPS,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: str = "raise",
        decoupled_weight_decay: bool = False,
    ) -> None:
        _validate(lr, momentum, dampening, nesterov, weight_decay, eps, scope, nonfinite)
        defaults = dict(
            lr=lr,
            scope=scope,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            foreach=foreach,
            nonfinite=nonfinite,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)
        for g in self.param_groups:
            _validate(g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"], g["eps"],
                      g["scope"], g["nonfinite"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of a non-finite gradient (``nonfinite="skip"``)."""
        return int(self.state.get("skipped_steps", 0))

    def _collect(self):
        entries = []  # (group_idx, param, grad, name)
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"SSGD does not support sparse gradients (param_groups[{gi}] param {pi}"
                        f"{' ' + repr(names[pi]) if names else ''}); use a dense embedding (sparse=False)"
                    )
                name = names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
                entries.append((gi, p, p.grad, name))
        return entries

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):  # type: ignore[override]
        """Perform one optimisation step. Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = self._collect()
        if not entries:
            return loss
        grads = [e[2] for e in entries]
        try:
            norms = grad_norms(grads, [e[3] for e in entries])
        except NonFiniteGradientError as err:
            policy = self.param_groups[entries[err.index][0]]["nonfinite"]
            if policy == "raise":
                raise
            self.state["skipped_steps"] = self.skipped_steps + 1
            return loss

        glob = [i for i, e in enumerate(entries) if self.param_groups[e[0]]["scope"] == "global"]
        total = float(torch.linalg.vector_norm(norms[glob])) if glob else 0.0
        nlist = norms.tolist()
        scales = [0.0] * len(entries)
        for i, e in enumerate(entries):
            g = self.param_groups[e[0]]
            if g["scope"] == "global":
                scales[i] = 1.0 / max(total, self.defaults["eps"])
            else:
                scales[i] = 1.0 / max(nlist[i], g["eps"])

        by_group: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            by_group.setdefault(e[0], []).append(i)
        for gi, idx in by_group.items():
            group = self.param_groups[gi]
            params = [entries[i][1] for i in idx]
            grads_g = [entries[i][2] for i in idx]
            sc = [scales[i] for i in idx]
            bufs = [self.state[p].get("momentum_buffer") for p in params] if group["momentum"] != 0 else None
            foreach = group["foreach"]
            if foreach is None:
                foreach = len({p.device for p in params}) == 1 and not torch.jit.is_scripting()
            fn = _multi_tensor_ssgd if foreach else _single_tensor_ssgd
            lr = float(group["lr"])
            fn(params, grads_g, sc, bufs, lr=lr, momentum=group["momentum"], dampening=group["dampening"],
               nesterov=group["nesterov"], weight_decay=group["weight_decay"], maximize=group["maximize"],
               decoupled=group["decoupled_weight_decay"])
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
        return loss


def _unit_tensor(g: Tensor, s: float) -> Tensor:
    """g * s, computed without fp16/bf16 underflow and without float32 subnormal scales."""
    if _SAFE[0] < s < _SAFE[1]:
        if g.dtype in (torch.float16, torch.bfloat16):
            return (g.float() * s).to(g.dtype)
        return g * s
    return (g.double() * s).to(g.dtype)


def _single_tensor_ssgd(params, grads, scales, bufs, *, lr, momentum, dampening, nesterov, weight_decay,
                        maximize, decoupled):
    for i, (p, g, s) in enumerate(zip(params, grads, scales)):
        sign = -1.0 if maximize else 1.0
        if weight_decay == 0 and momentum == 0 and _SAFE[0] < s < _SAFE[1] and g.dtype == p.dtype:
            p.add_(g, alpha=-lr * s * sign)
            continue
        u = _unit_tensor(g, s * sign).to(p.dtype)
        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                u = u.add(p, alpha=weight_decay)
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = u.clone()
                bufs[i] = buf
            else:
                buf.mul_(momentum).add_(u, alpha=1 - dampening)
            u = u.add(buf, alpha=momentum) if nesterov else buf
        p.add_(u, alpha=-lr)


def _multi_tensor_ssgd(params, grads, scales, bufs, *, lr, momentum, dampening, nesterov, weight_decay,
                       maximize, decoupled):
    sign = -1.0 if maximize else 1.0
    uniform = len(set(scales)) == 1
    simple = (
        weight_decay == 0 and momentum == 0 and all(_SAFE[0] < s < _SAFE[1] for s in scales)
        and all(g.dtype == p.dtype and p.dtype in (torch.float32, torch.float64) for p, g in zip(params, grads))
    )
    if simple:
        # fused fast path: p -= lr * s * g, one pass over g and p
        if uniform:
            torch._foreach_add_(params, grads, alpha=-lr * scales[0] * sign)
        else:
            torch._foreach_add_(params, torch._foreach_mul(grads, [-lr * s * sign for s in scales]))
        return
    if all(_SAFE[0] < s < _SAFE[1] for s in scales) and all(g.dtype in (torch.float32, torch.float64) and g.dtype == p.dtype for p, g in zip(params, grads)):
        us = torch._foreach_mul(grads, scales[0] * sign) if uniform else torch._foreach_mul(grads, [s * sign for s in scales])
    else:
        us = [_unit_tensor(g, s * sign).to(p.dtype) for p, g, s in zip(params, grads, scales)]
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            torch._foreach_add_(us, params, alpha=weight_decay)
    if momentum != 0:
        new = [i for i, b in enumerate(bufs) if b is None]
        old = [i for i, b in enumerate(bufs) if b is not None]
        for i in new:
            bufs[i] = us[i].clone()
        if old:
            ob = [bufs[i] for i in old]
            torch._foreach_mul_(ob, momentum)
            torch._foreach_add_(ob, [us[i] for i in old], alpha=1 - dampening)
        if nesterov:
            torch._foreach_add_(us, bufs, alpha=momentum)
        else:
            us = bufs
    torch._foreach_add_(params, us, alpha=-lr)
