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
length without momentum or weight decay is exactly ``lr`` (:math:`\gamma`): this is
``torch.optim.SGD`` applied to :math:`u_t` instead of :math:`g_t`, and it is computed that
way. The rule is :mod:`ssgd.transform`'s (:func:`~ssgd.transform.grad_norms`, one
``torch._foreach_norm`` per device and dtype, and :func:`~ssgd.transform.unit_denominator`);
the update is torch's own fused SGD kernel (``torch._fused_sgd_``, what
``torch.optim.SGD(fused=True)`` runs), given the division as a device scalar:

* global scope, no momentum, no weight decay: ``lr / max(‖g‖, eps)`` as the kernel's tensor
  learning rate, so the step reads the gradients twice (norm, update) against SGD's once;
* otherwise the denominator is the kernel's ``grad_scale`` (how AMP folds unscaling into the
  step). The kernel then leaves the unit vector in ``.grad``, as it leaves unscaled
  gradients under AMP;
* layer scope divides each gradient by its own norm first, in place (``torch._foreach_div_``;
  ``.grad`` holds the unit vector, also on a skipped step, except for the non-finite tensors,
  which are left as they are), then steps. With a list of one 0-dim norm per tensor that
  division is off torch's CUDA foreach fast path: on a GPU it is one small kernel per tensor
  (torch has no foreach kernel with per-tensor device scalars); ``torch.compile`` of the step
  hands the division to Inductor instead.

Weight decay is *coupled* by default (added to the unit vector, like ``torch.optim.SGD`` adds
it to the gradient: the decay is then relative to a step of length 1); pass
``decoupled_weight_decay=True`` for AdamW-style decay ``θ ← (1 - lr·λ) θ`` (without momentum
the two are the same update, and the kernel's own decay does it).

A step dispatches the same number of ops whatever the number of tensors: 7 to 9 with the
kernel (the norms, the joint norm and its floor, ``found_inf``, ``lr / denominator``, the
skip counter), about a kernel launch each on a GPU.

The step never reads a tensor value on the host, on every device: it compiles to one graph
and can be captured in a CUDA graph. A non-finite gradient (NaN/inf, or a norm that
overflows its float32 accumulation) is the kernel's ``found_inf``: that step moves no
parameter and no momentum buffer, on every policy. ``nonfinite="skip"`` counts it in
:attr:`SSGD.skipped_steps`; ``nonfinite="raise"`` raises :class:`~ssgd.NonFiniteGradientError`,
naming the parameter, as soon as the flag can be read without waiting for the device: at the
end of that step on the CPU, at the start of a later ``step()`` on a GPU (the one-float flag is
copied to pinned memory and read once its event has completed; only a failed step's norms are
then read back, to name the parameter), or at once by :meth:`SSGD.check_finite` (which waits;
what a compiled training loop calls, e.g. once per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.sgd import sgd

from ._state import attach_skip_counter
from .transform import (DEFAULT_EPS, NonFiniteGradientError, check_eps, check_nonfinite, check_scope, grad_norms,
                        group_by_device_and_dtype, unit_denominator)

__all__ = ["SSGD"]

_F32_MAX = torch.finfo(torch.float32).max
_HALF = (torch.float16, torch.bfloat16)


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
    check_eps(eps)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"Nesterov momentum requires a momentum > 0 and zero dampening (got momentum={momentum}, "
            f"dampening={dampening}); set momentum, or nesterov=False"
        )
    check_scope(scope)
    check_nonfinite(nonfinite)


def _found_inf(times_zero: Tensor) -> Tensor:
    """The ``found_inf`` of torch's fused optimizer kernels (float32 1.0: this step moves nothing) from a value
    like ``x - x`` or ``x * 0``, which is 0 exactly when ``x`` is finite."""
    found = times_zero.ne_(0)
    return found if found.dtype == torch.float32 else found.float()


def _fused_sgd_wide_(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], **kw: Any) -> None:
    """``torch._fused_sgd_`` for float16/bfloat16 on the CPU, whose kernel updates only the last few entries of
    such tensors (torch 2.11 to 2.13): it runs on float32 copies, rounded back once."""
    wide = [[t.float() for t in ts] for ts in (params, grads, bufs)]
    torch._fused_sgd_(*wide, **kw)
    for ts, ws in zip((params, grads, bufs), wide):
        if ts:
            torch._foreach_copy_(ts, ws)


def _spans(work: list) -> list[tuple[int, int, int, str, list[Tensor]]]:
    """(group index, offset, count, scope, params) of each group in a step: what names a failing tensor."""
    return [(gi, off, len(gs), group["scope"], ps) for gi, group, ps, gs, off in work]


class SSGD(Optimizer):
    r"""Super stochastic gradient descent (Duan et al., arXiv 2012.02076).

    Steps along the unit vector of the gradient; see the module docstring for the math.

    Args:
        params: parameters or parameter groups (``named_parameters()`` also works and
            lets errors name the parameter).
        lr: step length (``>= 0``; a float or a 1-element tensor).
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
        nonfinite: what a step with a non-finite gradient does besides moving nothing:
            ``"raise"`` (default) raises :class:`~ssgd.NonFiniteGradientError` naming the
            parameter (when, see the module docstring); ``"skip"`` counts it in
            :attr:`skipped_steps` (saved in ``state_dict()["ssgd"]``). A first momentum step that
            is skipped leaves a zero buffer, which differs from SGD's only with ``dampening > 0``.
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
        nonfinite: str = "raise",
        decoupled_weight_decay: bool = False,
    ) -> None:
        _validate(lr, momentum, dampening, nesterov, weight_decay, eps, scope, nonfinite)
        defaults = dict(lr=lr, scope=scope, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, eps=eps, maximize=maximize, nonfinite=nonfinite,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)
        # device-side bookkeeping, mutated as a dict (never by setattr: torch.compile traces step())
        self._flags: dict[str, Any] = {"base": 0, "lr": {}}
        attach_skip_counter(self, self)

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

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_flags"] = {"base": self.skipped_steps, "lr": {}}  # pending flags (CUDA events) stay with the original
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_flags", {"base": 0, "lr": {}})
        if not self._optimizer_load_state_dict_post_hooks:  # unpickled: hooks are not pickled
            attach_skip_counter(self, self)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of a non-finite gradient in a ``nonfinite="skip"`` group.

        Kept in the optimizer's ``state_dict()`` under ``"ssgd"``; the count lives on the
        device, so reading it is one host read."""
        count = self._flags.get("skipped")
        return self._flags["base"] + (0 if count is None else int(count))

    def set_skipped_steps(self, n: int) -> None:
        """Set the counter (what ``load_state_dict`` does)."""
        self._flags.update(base=int(n), skipped=None)

    def check_finite(self) -> None:
        """Raise the :class:`~ssgd.NonFiniteGradientError` of an earlier step now, if any (waits
        for the device: one host read). ``step()`` raises it by itself once it can read the flag
        without waiting; a compiled or CUDA-graph-captured step cannot, so call this in such a
        training loop (e.g. once per epoch): it reports the first failing step since the last call."""
        self._raise_pending(wait=True)

    def _raise_pending(self, wait: bool) -> None:
        queue = self._flags.get("pending")
        while queue:  # eager GPU steps, oldest first: each flag is read from host memory once its event has completed
            host, event, norms, spans = queue[0]
            if event is not None and not event.query():
                if not wait:
                    return  # not known yet: a later step() reads it
                event.synchronize()
            queue.pop(0)
            self._flags.setdefault("pool", []).append((host, event))
            if host.numpy()[0]:  # that step was skipped: its norms (one read, only then) name the parameter
                self._check(norms.tolist(), spans)
        kept = self._flags.get("kept")
        if wait and kept is not None:  # compiled or captured steps: the first failing one, on the device
            vals = kept.cpu().numpy().tolist()
            kept.zero_()
            self._check(vals, self._flags["kept_spans"])

    def _check(self, vals: list[float], spans: list) -> None:
        """Raise for the first non-finite norm of a ``nonfinite="raise"`` group, naming its parameter."""
        if math.isfinite(sum(vals)) and max(vals, default=0.0) * math.sqrt(len(vals)) <= _F32_MAX:
            return  # every norm finite, no joint norm can overflow
        joint = [v for gi, off, n, scope, _ in spans if scope == "global" for v in vals[off:off + n]]
        for gi, off, n, scope, params in spans:
            if self.param_groups[gi]["nonfinite"] != "raise":
                continue
            bad = [i for i in range(n) if not math.isfinite(vals[off + i])]
            if not bad and scope == "global" and joint and math.hypot(*joint) > _F32_MAX:
                bad = [max(range(n), key=lambda i: vals[off + i])]  # the joint norm overflowed
            if bad:
                pi = next(j for j, q in enumerate(self.param_groups[gi]["params"]) if q is params[bad[0]])
                raise NonFiniteGradientError(off + bad[0], self._name(gi, pi), tuple(params[bad[0]].shape))

    def _remember(self, norms: Tensor, found: Tensor, work: list, traced: bool) -> None:
        """Keep this step's flag for the raise, without waiting for the device."""
        if found.device.type == "cpu" and not traced:  # host memory already: read at once
            if found.numpy():
                self._check(norms.numpy().tolist(), _spans(work))
            return
        spans = _spans(work)
        if traced:  # compiled or captured: keep the first failing step's norms on the device
            kept = self._flags.get("kept")
            if kept is None or kept.shape != norms.shape or kept.dtype != norms.dtype:
                kept = self._flags["kept"] = torch.zeros_like(norms)
            first = found.bool() & (kept == 0).all()
            kept.copy_(torch.where(first, norms, kept))
            self._flags["kept_spans"] = spans
            return
        pool = self._flags.get("pool")
        if pool:  # a flag slot whose earlier step has been read
            host, event = pool.pop()
        else:
            cuda = found.is_cuda
            host, event = torch.empty(1, pin_memory=cuda), (torch.cuda.Event() if cuda else None)
        host.copy_(found.reshape(1), non_blocking=event is not None)  # without an event (other devices): waits
        if event is not None:
            event.record()
        self._flags.setdefault("pending", []).append((host, event, norms, spans))
        if event is None:
            self._raise_pending(wait=False)

    def _name(self, gi: int, pi: int) -> str:
        names = self.param_groups[gi].get("param_names")
        return names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"

    def _refuse_sparse(self, work: list) -> None:
        for gi, group, ps, gs, _ in work:
            for p, g in zip(ps, gs):
                if g.layout != torch.strided:
                    pi = next(j for j, q in enumerate(group["params"]) if q is p)
                    raise RuntimeError(f"SSGD does not support sparse gradients ({g.layout}) in parameter "
                                       f"{self._name(gi, pi)!r}; use a dense embedding (nn.Embedding(..., "
                                       "sparse=False)) for SSGD-trained parameters")

    def step(self, closure: Callable[[], float] | None = None):  # type: ignore[override]
        """Perform one optimisation step. Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        prev = torch.is_grad_enabled()  # torch.no_grad() as a decorator costs more per step
        torch.set_grad_enabled(False)
        try:
            self._step()
        finally:
            torch.set_grad_enabled(prev)
        return loss

    def _step(self) -> None:
        # (group index, group, params with a gradient, their gradients, offset in ``grads``)
        work: list[tuple[int, dict[str, Any], list[Tensor], list[Tensor], int]] = []
        grads: list[Tensor] = []
        for gi, group in enumerate(self.param_groups):
            ps = group["params"]
            gs = [p.grad for p in ps]
            if any(g is None for g in gs):
                ps = [p for p, g in zip(ps, gs) if g is not None]
                gs = [g for g in gs if g is not None]
            if gs:
                work.append((gi, group, ps, gs, len(grads)))
                grads += gs
        if not grads:
            return
        traced = torch.compiler.is_compiling()
        if traced:
            self._refuse_sparse(work)  # free while tracing; an eager step finds out from the norm below
        elif grads[0].is_cuda and torch.cuda.is_current_stream_capturing():
            traced = True
        elif self._flags.get("pending"):
            self._raise_pending(wait=False)

        buckets = group_by_device_and_dtype(grads)
        try:
            norms = grad_norms(grads, buckets)  # (K,) on grads[0]'s device: the one extra read of the gradients
        except (RuntimeError, NotImplementedError):
            self._refuse_sparse(work)
            raise
        scopes = {group["scope"] for _, group, *_ in work}  # a few groups at most
        joint = bad = None
        if "global" in scopes:  # one norm over all global-scope groups: non-finite if a gradient is, or if it overflows
            gn = norms if len(scopes) == 1 else torch.cat([norms[o:o + len(gs)] for _, group, _, gs, o in work
                                                           if group["scope"] == "global"])
            joint = unit_denominator(gn, "global", self.defaults["eps"]).float()  # the kernel's dtype
            bad = joint - joint
        if "layer" in scopes:  # norms · 0 in one reduction: NaN if a norm is non-finite
            dot = torch.dot(norms, self._zeros(norms, traced))
            bad = dot if bad is None else bad.add_(dot)
        found = _found_inf(bad)
        one = len(buckets) == 1
        for gi, group, ps, gs, off in work:
            if group["scope"] == "global":
                den = joint
            else:  # a non-finite norm divides by 1: that gradient is left as it is
                den = unit_denominator(norms[off:off + len(gs)], "layer", group["eps"]).nan_to_num_(1.0, 1.0, 1.0)
            if one:  # one device and dtype: the lists as they are
                (key,) = buckets
                self._apply(gi, group, ps, gs, key, den, found, range(len(gs)), traced)
                continue
            for key, idx in buckets.items():
                mine = [i - off for i in idx if off <= i < off + len(gs)]
                if mine:
                    self._apply(gi, group, [ps[i] for i in mine], [gs[i] for i in mine], key,
                                den.to(key[0]), found.to(key[0]), mine, traced)

        policies = {group["nonfinite"] for _, group, *_ in work}
        if "skip" in policies:
            count = self._flags.get("skipped")
            if count is None:
                self._flags["skipped"] = found.double()
            else:  # in place: a captured CUDA graph keeps counting on replay
                count.add_(found.to(count.device))
        if "raise" in policies:
            self._remember(norms, found, work, traced)

    def _zeros(self, like: Tensor, traced: bool) -> Tensor:
        """Zeros shaped like ``like``, made once per shape, device and dtype."""
        if traced:
            return torch.zeros_like(like)
        key = (like.shape, like.device, like.dtype)
        zeros = self._flags.get("zeros")
        if zeros is None or zeros[0] != key:
            zeros = self._flags["zeros"] = (key, torch.zeros_like(like))
        return zeros[1]

    def _apply(self, gi: int, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
               key: tuple[torch.device, torch.dtype], den: Tensor, found: Tensor, idx, traced: bool) -> None:
        """One device and dtype (``key``) of a group: divide by ``den`` (0-dim, or one per tensor of the group,
        of which ``idx`` are these) and step."""
        dev, dtype = key
        kernel = _fused_sgd_wide_ if dev.type == "cpu" and dtype in _HALF else torch._fused_sgd_
        if den.ndim == 0:
            self._update(gi, group, params, grads, den, found, kernel, key, traced)
        elif dtype not in _HALF:  # .grad becomes the unit vector (no allocation)
            per = den.unbind(0)
            torch._foreach_div_(grads, [per[i] for i in idx] if den.dtype == dtype else
                                [per[i].to(dtype) for i in idx])
            self._update(gi, group, params, grads, None, found, kernel, key, traced)
        else:  # half precision: the kernel divides in float32, one tensor at a time
            per = den.unbind(0)
            for i, p, g in zip(idx, params, grads):
                self._update(gi, group, [p], [g], per[i], found, kernel, key, traced)

    def _lr_over(self, gi: int, lr: float | Tensor, den: Tensor, key: tuple[torch.device, torch.dtype]) -> Tensor:
        """``lr / den`` in float32 (the kernel's tensor learning rate); a float ``lr`` is put on the device
        once per group and device, and refilled only when it changes."""
        if isinstance(lr, Tensor):
            return torch.div(lr.to(den.device), den).float()
        cache = self._flags["lr"]
        held = cache.get((gi, key))
        if held is None:
            held = cache[(gi, key)] = [lr, torch.full((), lr, dtype=torch.float32, device=den.device)]
        elif held[0] != lr:
            held[0] = lr
            held[1].fill_(lr)
        return torch.div(held[1], den).float()

    def _update(self, gi: int, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                denom: Tensor | None, found: Tensor, kernel: Callable[..., None],
                key: tuple[torch.device, torch.dtype], traced: bool) -> None:
        """torch's fused SGD step (``kernel``) of ``params`` along ``grads / denom`` (``denom`` None: already
        divided); nothing moves where ``found`` is 1."""
        if traced and torch.compiler.is_compiling():
            self._traced_update(group, params, grads, denom, found)
            return
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        if momentum != 0 and wd != 0 and group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, found.mul(lr * wd).add_(1.0 - lr * wd))  # 1 on a skipped step
            wd = 0.0
        # (without momentum, decoupled decay is the kernel's coupled one: θ - lr(u + λθ) = (1 - lr·λ)θ - lr·u)
        if momentum == 0:
            if wd == 0 and denom is not None:  # plain SSGD: fold 1/denom into the learning rate
                kernel(params, grads, [], lr=self._lr_over(gi, lr, denom, key), weight_decay=0.0, momentum=0.0,
                       dampening=0.0, nesterov=False, maximize=group["maximize"], is_first_step=False,
                       found_inf=found)
            else:
                kernel(params, grads, [], lr=lr, weight_decay=wd, momentum=0.0, dampening=0.0, nesterov=False,
                       maximize=group["maximize"], is_first_step=False, grad_scale=denom, found_inf=found)
            return
        kw = dict(lr=lr, weight_decay=wd, momentum=momentum, dampening=group["dampening"],
                  nesterov=group["nesterov"], maximize=group["maximize"], grad_scale=denom, found_inf=found)
        state = self.state
        bufs = [state[p].get("momentum_buffer") for p in params]
        if any(b is None for b in bufs):
            new = [i for i, b in enumerate(bufs) if b is None]
            for i in new:  # zeros, not torch's empty_like: a skipped first step must leave a defined buffer
                bufs[i] = state[params[i]]["momentum_buffer"] = torch.zeros_like(grads[i])
            fresh = set(new)
            for ix, first in ((new, True), ([i for i in range(len(bufs)) if i not in fresh], False)):
                if ix:
                    kernel([params[i] for i in ix], [grads[i] for i in ix], [bufs[i] for i in ix],
                           is_first_step=first, **kw)
            return
        kernel(params, grads, bufs, is_first_step=False, **kw)

    def _traced_update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                       denom: Tensor | None, found: Tensor) -> None:
        """:meth:`_update` under ``torch.compile``: torch's fused kernel has no compile support, so
        the same step goes through torch's foreach SGD (``torch.optim.sgd.sgd``), which Inductor
        fuses; a step with ``found`` keeps parameters and buffers by ``torch.where``."""
        units = grads if denom is None else torch._foreach_div(grads, denom)
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        skip = found.bool()
        old_p = [p.clone() for p in params]
        bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        old_b = [None if b is None else b.clone() for b in bufs]
        if wd != 0 and group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * wd)
            wd = 0.0
        sgd(params, units, bufs, foreach=True, weight_decay=wd, momentum=momentum, lr=lr,
            dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"])
        for i, p in enumerate(params):
            p.copy_(torch.where(skip, old_p[i], p))
            if momentum != 0:
                before = old_b[i] if old_b[i] is not None else torch.zeros_like(bufs[i])
                self.state[p]["momentum_buffer"] = torch.where(skip, before, bufs[i])
