r"""``ssgd.SSGD``: stochastic gradient descent along the gradient's unit vector.

.. math::
   \begin{aligned}
   &u_t = g_t / \max(\lVert g_t \rVert, \epsilon)
       \quad\text{(norm over all parameters for scope="global", per tensor for "layer")}\\
   &\text{if maximize: } u_t \leftarrow -u_t\\
   &\text{if } \lambda \ne 0 \text{ and coupled: } u_t \leftarrow u_t + \lambda\,\theta_{t-1}\\
   &\text{if } \mu \ne 0:\ b_t = \mu b_{t-1} + (1-\tau) u_t \ (b_1 = u_1);\quad
      d_t = u_t + \mu b_t \text{ (nesterov) else } b_t;\quad\text{else } d_t = u_t\\
   &\text{if } \lambda \ne 0 \text{ and decoupled: } \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1}\\
   &\theta_t = \theta_{t-1} - \gamma\, d_t
   \end{aligned}

Normalisation comes first, so momentum accumulates unit vectors and the step
length without momentum or weight decay is exactly ``lr`` (:math:`\gamma`); this is
``torch.optim.SGD`` applied to :math:`u_t` instead of :math:`g_t`. Weight decay is
*coupled* by default (added to the unit vector, like ``torch.optim.SGD`` adds it
to the gradient: the decay is then relative to a step of length 1); pass
``decoupled_weight_decay=True`` for AdamW-style decay ``θ ← (1 - lr·λ) θ``.

The raw gradients in ``.grad`` are left untouched: the normalisation ``1/‖g‖`` is
folded into the multiplier of the update (``p -= (lr/‖g‖)·g`` is one fused pass),
so the only extra cost over SGD is one read of the gradients for the norm and one
host synchronisation per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._numerics import device_norms, norm_list as _norm_list, safe as _safe, safe_hypot, scaled as _scaled
from ._numerics import scales as _scales
from .transform import DEFAULT_EPS, NONFINITE_POLICIES, NonFiniteGradientError, check_nonfinite, check_scope

__all__ = ["SSGD", "NONFINITE_POLICIES", "check_nonfinite"]


def _validate(lr, momentum, dampening, nesterov, weight_decay, eps, scope, nonfinite) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element, got {lr.numel()} elements")
    if not 0.0 <= float(lr) < math.inf:
        raise ValueError(f"Invalid learning rate: {lr}; must be a finite number >= 0")
    if not 0.0 <= momentum < math.inf:
        raise ValueError(f"Invalid momentum value: {momentum}; must be >= 0 (0.9 is typical)")
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening value: {dampening}; must be in [0, 1]")
    if not 0.0 <= weight_decay < math.inf:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}; must be >= 0")
    if not (isinstance(eps, (int, float)) and 0.0 < eps < math.inf):
        raise ValueError(f"Invalid eps value: {eps}; must be a finite number > 0 (default {DEFAULT_EPS})")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"Nesterov momentum requires a momentum > 0 and zero dampening (got momentum={momentum}, "
            f"dampening={dampening}); set momentum, or nesterov=False"
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
            a group's parameters live on several devices, or on CPU with layer scope
            where a per-tensor loop saves a temporary).
        nonfinite: ``"raise"`` (default) raises :class:`~ssgd.NonFiniteGradientError`
            naming the parameter; ``"skip"`` leaves every parameter and buffer unchanged
            for that step and counts it in ``optimizer.state["skipped_steps"]``. If
            several groups hold non-finite gradients, any ``"raise"`` among them raises.
        decoupled_weight_decay: AdamW-style ``θ ← (1 - lr·λ)·θ`` instead of coupled decay.

    Every option except ``scope="global"``'s joint norm can be overridden per param
    group. Parameters whose ``.grad`` is ``None`` are skipped; sparse gradients raise.

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
        capturable: bool | None = None,
    ) -> None:
        _validate(lr, momentum, dampening, nesterov, weight_decay, eps, scope, nonfinite)
        if capturable not in (None, True, False):
            raise ValueError(f"Invalid capturable={capturable!r}; expected None (auto), True or False")
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
        self.capturable = capturable
        self._skipped: int | Tensor = 0  # steps skipped for a non-finite gradient (a device tensor when capturable)
        self._pending: tuple[Tensor, Tensor, list[tuple[int, Tensor]]] | None = None  # lazy raise (capturable)
        self.register_state_dict_post_hook(_save_skipped)
        self.register_load_state_dict_pre_hook(_load_skipped)
        self.register_load_state_dict_post_hook(_restore_skipped)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated like the constructor's arguments)."""
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        try:
            _validate(g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"], g["eps"],
                      g["scope"], g["nonfinite"])
        except ValueError as e:
            self.param_groups.pop()
            raise ValueError(f"param group {len(self.param_groups)}: {e}") from None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        self.__dict__.setdefault("capturable", None)
        self.__dict__.setdefault("_skipped", 0)
        self.__dict__.setdefault("_pending", None)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of a non-finite gradient (``nonfinite="skip"``).

        Kept in the optimizer's ``state_dict()`` under ``"ssgd"``; with ``capturable`` steps it
        is a device counter and reading it is one host read."""
        return int(self._skipped)

    def _use_device_path(self, grads: list[Tensor]) -> bool:
        if self.capturable is not None:
            return bool(self.capturable)
        if torch.compiler.is_compiling():
            return True
        return grads[0].device.type != "cpu"

    def check_finite(self, wait: bool = True) -> None:
        """Raise the :class:`~ssgd.NonFiniteGradientError` of an earlier capturable step, if any.

        A capturable step never reads the device: a non-finite gradient makes that step a no-op
        on the device (parameters and momentum buffers unchanged) and, under
        ``nonfinite="raise"``, leaves a flag behind. ``step()`` reads the previous step's flag at
        its start when not compiling (on CUDA from pinned memory once the previous step's event
        has completed: no stall), so the error surfaces one step late; ``wait=True`` (what a
        user call does) waits for it. Compiled loops call this themselves (e.g. per epoch)."""
        pending = self._pending
        if pending is None:
            return
        host, event, where = pending
        if event is not None:
            if not wait and not event.query():
                return  # not known yet: check at the next step
            event.synchronize()
        self._pending = None
        flag, first = host.tolist()
        if not flag:
            return
        gi, g = where[int(first)]
        pi = [j for j, q in enumerate(self.param_groups[gi]["params"]) if q.grad is g]
        name = self._name(gi, self.param_groups[gi]["params"][pi[0]]) if pi else None
        raise NonFiniteGradientError(int(first), name, tuple(g.shape))

    def _name(self, gi: int, p: Tensor) -> str:
        group = self.param_groups[gi]
        pi = next(i for i, q in enumerate(group["params"]) if q is p)
        names = group.get("param_names")
        return names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):  # type: ignore[override]
        """Perform one optimisation step. Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # one entry per group with gradients: (group index, params, grads, offset into the flat lists)
        work: list[tuple[int, list[Tensor], list[Tensor], int]] = []
        flat_grads: list[Tensor] = []
        owner: list[int] = []
        for gi, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p, g in zip(params, grads):
                if g.layout != torch.strided:
                    raise RuntimeError(
                        f"SSGD does not support sparse gradients ({g.layout}) in parameter {self._name(gi, p)!r}; "
                        "use a dense embedding (nn.Embedding(..., sparse=False)) for SSGD-trained parameters"
                    )
            work.append((gi, params, grads, len(flat_grads)))
            flat_grads.extend(grads)
            owner.extend([gi] * len(grads))
        if not flat_grads:
            return loss
        if self._use_device_path(flat_grads):
            if self._pending is not None and not torch.compiler.is_compiling():
                self.check_finite(wait=False)
            self._device_step(work, flat_grads, owner)
            return loss

        norms = _norm_list(flat_grads)  # the one host synchronisation
        total = sum(norms)
        if total != total:  # NaN marks a non-finite gradient
            bad = [i for i, n in enumerate(norms) if n != n]
            raising = [i for i in bad if self.param_groups[owner[i]]["nonfinite"] == "raise"]
            if raising:
                i = raising[0]
                g = flat_grads[i]
                p = next(p for p in self.param_groups[owner[i]]["params"] if p.grad is g)
                raise NonFiniteGradientError(i, self._name(owner[i], p), tuple(g.shape))
            self._skipped = self._skipped + 1
            return loss

        glob = [n for (gi, _, grads, off) in work if self.param_groups[gi]["scope"] == "global"
                for n in norms[off:off + len(grads)]]
        s_glob = _scales(glob, "global", self.defaults["eps"])[0] if glob else 0.0
        for gi, params, grads, off in work:
            group = self.param_groups[gi]
            sign = -1.0 if group["maximize"] else 1.0
            if group["scope"] == "global":
                sc: float | list[float] = sign * s_glob
            else:
                eps = group["eps"]
                sc = [sign / max(n, eps) for n in norms[off:off + len(grads)]]
            # update in reverse order: the norm pass read the last gradients last, so on CPU they
            # may still be in cache for the update's second read of g (free; order is irrelevant
            # to the result)
            params, grads = params[::-1], grads[::-1]
            if isinstance(sc, list):
                sc = sc[::-1]
            momentum = group["momentum"]
            bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else None
            foreach = group["foreach"]
            if foreach is None:
                foreach = not isinstance(sc, list) or params[0].device.type != "cpu"
                if foreach and len(params) > 1 and len({p.device for p in params}) > 1:
                    foreach = False
            fn = _multi_tensor_ssgd if foreach else _single_tensor_ssgd
            fn(params, grads, sc, bufs, lr=float(group["lr"]), momentum=momentum, dampening=group["dampening"],
               nesterov=group["nesterov"], weight_decay=group["weight_decay"],
               decoupled=group["decoupled_weight_decay"])
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
        return loss

    def _device_step(self, work, flat_grads, owner) -> None:
        """The step without any host read (see ``capturable``)."""
        dev = flat_grads[0].device
        norms = device_norms(flat_grads).to(dev)  # (K,) float64, exact range
        finite = torch.isfinite(norms)
        skip_idx = [i for i, gi in enumerate(owner) if self.param_groups[gi]["nonfinite"] == "skip"]
        raise_idx = [i for i, gi in enumerate(owner) if self.param_groups[gi]["nonfinite"] == "raise"]
        bad = ~finite.all()
        keep = (~bad).to(torch.float64)
        if skip_idx:
            skip_bad = ~finite[skip_idx].all() if len(skip_idx) < len(owner) else bad
            raise_bad = ~finite[raise_idx].all() if raise_idx else torch.zeros((), dtype=torch.bool, device=dev)
            counted = skip_bad & ~raise_bad
            self._skipped = self._skipped + counted.to(torch.int64)
        if raise_idx:
            bad_i = (~finite).to(torch.int32)
            if len(raise_idx) < len(owner):
                bad_i = bad_i * _raise_mask(owner, raise_idx, dev)
            first = torch.argmax(bad_i)
            raise_flag = ~finite[raise_idx].all() if len(raise_idx) < len(owner) else bad
            packed = torch.stack([raise_flag.to(torch.int64), first.to(torch.int64)])
            where = [(gi, g) for gi, g in zip(owner, flat_grads)]
            if dev.type == "cuda" and not torch.compiler.is_compiling():
                host = torch.empty(2, dtype=torch.int64, pin_memory=True)
                host.copy_(packed, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._pending = (host, event, where)
            else:
                self._pending = (packed, None, where)
        norms = torch.where(finite, norms, torch.ones_like(norms))  # a skipped step's scales stay finite
        glob = [i for i, gi in enumerate(owner) if self.param_groups[gi]["scope"] == "global"]
        s_glob = None
        if glob:
            total = safe_hypot(norms[glob] if len(glob) < len(owner) else norms)
            s_glob = 1.0 / total.clamp_min(self.defaults["eps"])
        for gi, params, grads, off in work:
            group = self.param_groups[gi]
            sign = -1.0 if group["maximize"] else 1.0
            if group["scope"] == "global":
                sc = [s_glob * sign] * len(grads)
            else:
                v = sign / norms[off:off + len(grads)].clamp_min(group["eps"])
                sc = list(v.unbind(0))
            momentum = group["momentum"]
            bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else None
            _capturable_ssgd(params, grads, sc, bufs, keep, lr=group["lr"], momentum=momentum,
                             dampening=group["dampening"], nesterov=group["nesterov"],
                             weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"])
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b


def _raise_mask(owner: list[int], raise_idx: list[int], dev: torch.device) -> Tensor:
    m = torch.zeros(len(owner), dtype=torch.int32, device=dev)
    m[raise_idx] = 1
    return m


def _save_skipped(opt: "SSGD", sd: dict[str, Any]) -> dict[str, Any]:
    sd["ssgd"] = {"skipped_steps": opt.skipped_steps}
    return sd


def _load_skipped(opt: "SSGD", sd: dict[str, Any]) -> dict[str, Any]:
    sd = dict(sd)
    extra = sd.pop("ssgd", None) or {}
    n = int(extra.get("skipped_steps", 0))
    state = sd.get("state", {})
    if "skipped_steps" in state:  # checkpoints written before 0.2 kept it as a string key in ``state``
        state = dict(state)
        n = int(state.pop("skipped_steps"))
        sd["state"] = state
    opt.__dict__["_loaded_skipped"] = n
    return sd


def _restore_skipped(opt: "SSGD") -> None:
    opt._skipped = opt.__dict__.pop("_loaded_skipped", 0)


def _capturable_ssgd(params, grads, scales, bufs, keep, *, lr, momentum, dampening, nesterov, weight_decay,
                     decoupled):
    """One fused pass per tensor with device scalars: no host read, no data-dependent branch.

    ``scales[i]`` is a 0-dim float64 tensor (sign included); ``keep`` is 1.0, or 0.0 when the
    step must leave every parameter and buffer unchanged (a non-finite gradient somewhere)."""
    lr_t = keep * lr  # 0-dim float64; a tensor lr stays on the device
    for i, (p, g, s) in enumerate(zip(params, grads, scales)):
        if p.dtype != torch.float64:  # a scale beyond float32's range (eps < 3e-39) would turn 0 * s into NaN
            big = torch.finfo(torch.float32).max
            s = s.clamp(-big, big)
        g = torch.where(keep.to(torch.bool), g, torch.zeros((), dtype=g.dtype, device=g.device))  # NaN-proof no-op
        cd = p.dtype
        wide = cd in _WIDE and g.dtype == cd
        if wide:
            u, c = g, (s * keep).to(cd)
        else:  # half precision: the direction in float32, rounded once
            u, c = (g.to(torch.float32) * s.to(torch.float32)).to(cd), None
        if weight_decay != 0 and decoupled:
            p.mul_((1.0 - lr_t * weight_decay).to(cd))
        wd = (keep * weight_decay).to(cd) if weight_decay != 0 and not decoupled else None
        if momentum == 0:
            if wd is not None:
                p.mul_((1.0 - lr_t * weight_decay).to(cd))
            if c is None:
                p.add_(u * (-lr_t).to(cd))
            else:
                p.addcmul_(u, (-lr_t * s).to(cd))
            continue
        buf = bufs[i]
        d = torch.mul(u, c) if c is not None else u.clone()
        if wd is not None:
            d.add_(p * wd)
        if buf is None:
            bufs[i] = buf = d
        else:
            mu_t = keep * momentum + (1.0 - keep)  # momentum, or 1 (buffer unchanged) on a skipped step
            buf.mul_(mu_t.to(cd)).add_(d * (keep * (1 - dampening)).to(cd))
        if nesterov:
            p.add_(d * (-lr_t).to(cd)).add_(buf * (-lr_t * momentum).to(cd))
        else:
            p.add_(buf * (-lr_t).to(cd))


def _direct_dtypes(params: list[Tensor], grads: list[Tensor]) -> bool:
    """Whether every grad has its param's dtype, float32 or float64 (scales can then be folded)."""
    return all(p.dtype == g.dtype and p.dtype in _WIDE for p, g in zip(params, grads))


_WIDE = (torch.float32, torch.float64)


def _single_tensor_ssgd(params, grads, scales, bufs, *, lr, momentum, dampening, nesterov, weight_decay,
                        decoupled):
    """One tensor at a time; the direction of tensor i is ``scales[i] * grads[i]`` (``scales`` may be a float)."""
    if not isinstance(scales, list):
        scales = [scales] * len(params)
    for i, (p, g, c) in enumerate(zip(params, grads, scales)):
        # fold c into the kernels' scalars; materialise c*g only for half precision or extreme scales
        if not (p.dtype == g.dtype and p.dtype in _WIDE and _safe(c) and _safe(lr * c)):
            g, c = _scaled(g, c, p.dtype), 1.0
        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                g = torch.mul(g, c).add_(p, alpha=weight_decay) if c != 1.0 else g.add(p, alpha=weight_decay)
                c = 1.0
        if momentum == 0:
            p.add_(g, alpha=-lr * c)
            continue
        buf = bufs[i]
        if buf is None:
            buf = torch.mul(g, c) if c != 1.0 else g.clone()
            bufs[i] = buf
        else:
            buf.mul_(momentum).add_(g, alpha=(1 - dampening) * c)
        if nesterov:
            p.add_(g, alpha=-lr * c).add_(buf, alpha=-lr * momentum)
        else:
            p.add_(buf, alpha=-lr)


def _multi_tensor_ssgd(params, grads, scales, bufs, *, lr, momentum, dampening, nesterov, weight_decay,
                       decoupled):
    """``torch._foreach_*`` kernels; a float ``scales`` (global scope) is folded into their scalars."""
    uniform = not isinstance(scales, list)
    if uniform:
        direct = _safe(scales) and _safe(lr * scales) and _direct_dtypes(params, grads)
    else:
        direct = all(_safe(c) and _safe(lr * c) for c in scales) and _direct_dtypes(params, grads)
    if direct and uniform:
        c = scales  # one scalar for all tensors: fold it into every kernel
    else:
        sc = scales if not uniform else [scales] * len(params)
        if direct:
            grads = torch._foreach_mul(grads, sc)
        else:
            grads = [_scaled(g, x, p.dtype) for p, g, x in zip(params, grads, sc)]
        c = 1.0
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            if c != 1.0:
                grads = torch._foreach_mul(grads, c)
                torch._foreach_add_(grads, params, alpha=weight_decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            c = 1.0
    if momentum == 0:
        torch._foreach_add_(params, grads, alpha=-lr * c)
        return
    new = [i for i, b in enumerate(bufs) if b is None]
    old = [i for i, b in enumerate(bufs) if b is not None]
    if new:
        fresh = torch._foreach_mul([grads[i] for i in new], c)
        for i, b in zip(new, fresh):
            bufs[i] = b
    if old:
        ob = [bufs[i] for i in old]
        torch._foreach_mul_(ob, momentum)
        torch._foreach_add_(ob, [grads[i] for i in old], alpha=(1 - dampening) * c)
    if nesterov:
        torch._foreach_add_(params, grads, alpha=-lr * c)
        torch._foreach_add_(params, bufs, alpha=-lr * momentum)
    else:
        torch._foreach_add_(params, bufs, alpha=-lr)
