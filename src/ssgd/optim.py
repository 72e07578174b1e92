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
so the only extra cost over SGD is one read of the gradients for the norms.

Two paths compute the same step (see ``capturable``):

* the **device path** (default on GPUs and other asynchronous devices, and whenever the
  step runs under ``torch.compile``) never reads a tensor value on the host: norms, the
  joint norm, the clamp by ``eps`` and the reciprocal stay on the device, and the update
  takes the scales as device scalars. It compiles to one graph with no break and can be
  captured in a CUDA graph. Norms are exact in range without a host branch: float16 is
  accumulated in float32, float32/bfloat16 in float64, float64 through a power-of-two
  rescaling. A non-finite gradient cannot raise at once (that needs the host): every
  coefficient of that step is 0 on the device and the error is raised by the next eager
  ``step()`` or by :meth:`SSGD.check_finite`;
* the **host path** (default on CPU, where reading a value waits for nothing) reads the
  norms once and keeps the fastest kernels: float32 accumulation in blocks, exact float64
  recomputation only for the rare overflowed or underflowed norm, errors raised before
  anything is modified.

``norm_hooks=True`` takes each gradient's norm in a post-accumulate-grad hook, while the
gradient is final and still in cache, so the step itself is a single fused pass as SGD's.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._state import attach_skip_counter
from ._numerics import fast_norm
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
            for that step and counts it in :attr:`skipped_steps` (saved in ``state_dict()["ssgd"]``). If
            several groups hold non-finite gradients, any ``"raise"`` among them raises.
        decoupled_weight_decay: AdamW-style ``θ ← (1 - lr·λ)·θ`` instead of coupled decay.
        capturable: ``None`` (default): the device path -- no host read in ``step()`` -- for
            gradients off the CPU and under ``torch.compile``, the host path on CPU. ``True``
            forces the device path (CUDA graphs, or to test it on CPU, where its float64 norm
            accumulation costs a few times a float32 one), ``False`` the host path. On the
            device path ``nonfinite="raise"`` is lazy: the failing step moves nothing but the
            entries whose gradient was NaN/inf (``0·NaN``), and the error (naming the
            parameter) comes from the next eager ``step()`` or :meth:`check_finite`;
            ``nonfinite="skip"`` is exact on the device (parameters and buffers bit-identical,
            one ``torch.where`` pass more) and counts in :attr:`skipped_steps` without a host
            read. A first momentum step that is skipped leaves a zero buffer (the host path
            leaves none), which differs only with ``dampening > 0``.
        norm_hooks: take the gradient norms during ``backward()`` in post-accumulate-grad hooks
            (:meth:`torch.Tensor.register_post_accumulate_grad_hook`); the step reuses a norm
            only while its gradient is the same, unmodified tensor (checked by identity and
            version counter), so clipping or replacing ``.grad`` after backward stays correct.
            :meth:`remove_norm_hooks` detaches them.

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
        norm_hooks: bool = False,
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
        self.norm_hooks = bool(norm_hooks)
        self._norm_cache: dict[Tensor, tuple[Any, int, Tensor, bool]] = {}
        self._hook_handles: list[Any] = []
        if self.norm_hooks:
            for group in self.param_groups:
                self._attach_norm_hooks(group["params"])
        self._skipped: int | Tensor = 0  # steps skipped for a non-finite gradient (a device tensor when capturable)
        self._pending: tuple[Tensor, Any, list[tuple[int, int, tuple[int, ...]]]] | None = None  # lazy raise
        attach_skip_counter(self, self)
        self._skip_hooks = True

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
        if getattr(self, "norm_hooks", False):
            self._attach_norm_hooks(g["params"])

    def _attach_norm_hooks(self, params: list[Tensor]) -> None:
        ref = weakref.ref(self)
        for p in params:
            if p.requires_grad:
                self._hook_handles.append(p.register_post_accumulate_grad_hook(partial(_norm_hook, ref)))

    @torch.no_grad()
    def precompute_norms(self) -> None:
        """Take the norms of the current gradients now, for the next ``step()`` (what the
        ``norm_hooks`` do during backward; useful when gradients are final earlier than the step)."""
        ref = weakref.ref(self)
        for group in self.param_groups:
            for p in group["params"]:
                _norm_hook(ref, p)

    def remove_norm_hooks(self) -> None:
        """Detach the post-accumulate-grad hooks of ``norm_hooks=True`` (the step then takes the norms itself)."""
        for h in self._hook_handles:
            h.remove()
        self._hook_handles.clear()
        self._norm_cache.clear()
        self.norm_hooks = False

    def _cached_norms(self, params: list[Tensor], grads: list[Tensor], device: bool) -> list[Tensor | None]:
        """The norm hooks' norms where still valid (same gradient tensor, not modified since)."""
        if not self._norm_cache or torch.compiler.is_compiling():
            return [None] * len(grads)
        out: list[Tensor | None] = []
        for p, g in zip(params, grads):
            e = self._norm_cache.pop(p, None)
            out.append(e[2] if e is not None and e[0]() is g and e[1] == g._version and e[3] == device else None)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(capturable=self.capturable, _skipped=self.skipped_steps)  # norm hooks stay with the original
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        self.__dict__.setdefault("capturable", None)
        self.__dict__.setdefault("_skipped", 0)
        self.__dict__.setdefault("_pending", None)
        self.__dict__.setdefault("norm_hooks", False)
        self.__dict__.setdefault("_norm_cache", {})
        self.__dict__.setdefault("_hook_handles", [])
        if not self.__dict__.get("_skip_hooks"):  # unpickled / deep-copied (load_state_dict also lands here)
            attach_skip_counter(self, self)
            self._skip_hooks = True

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of a non-finite gradient (``nonfinite="skip"``).

        Kept in the optimizer's ``state_dict()`` under ``"ssgd"``; with ``capturable`` steps it
        is a device counter and reading it is one host read."""
        return int(self._skipped)

    def set_skipped_steps(self, n: int) -> None:
        """Set the counter (what ``load_state_dict`` does)."""
        self._skipped = int(n)

    def _use_device_path(self, grads: list[Tensor]) -> bool:
        several = len(grads) > 1 and len({g.device for g in grads}) > 1
        if self.capturable:
            if several:
                raise ValueError("capturable=True needs every gradient on one device; got "
                                 f"{sorted({str(g.device) for g in grads})}. Use capturable=None (the host path "
                                 "handles several devices) or one optimizer per device")
            return True
        if self.capturable is False or several:
            return False
        return torch.compiler.is_compiling() or grads[0].device.type != "cpu"

    def check_finite(self, wait: bool = True) -> None:
        """Raise the :class:`~ssgd.NonFiniteGradientError` of an earlier capturable step, if any.

        A capturable step never reads the device: a non-finite gradient sets every coefficient of
        that step to 0 on the device (only the entries whose gradient was NaN/inf are touched,
        ``0·NaN``) and, under ``nonfinite="raise"``, leaves a flag behind. ``step()`` reads the previous step's flag at
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
        # ``host`` lives in host memory (the CPU device, or CUDA's pinned copy whose event has completed):
        # reading it waits for nothing, so it is read as memory, not through a tensor-value read
        flag, first = (int(v) for v in host.numpy())
        if not flag:
            return
        gi, pi, shape = where[first]
        names = self.param_groups[gi].get("param_names")
        name = names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
        raise NonFiniteGradientError(first, name, shape)

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
        flat_params: list[Tensor] = []
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
            flat_params.extend(params)
            owner.extend([gi] * len(grads))
        if not flat_grads:
            return loss
        if self._use_device_path(flat_grads):
            if self._pending is not None and not torch.compiler.is_compiling():
                self.check_finite(wait=False)
            positions = [(gi, pi) for gi, group in enumerate(self.param_groups)
                         for pi, p in enumerate(group["params"]) if p.grad is not None]
            self._device_step(work, flat_grads, owner, self._cached_norms(flat_params, flat_grads, True), positions)
            return loss

        norms = _norm_list(flat_grads, self._cached_norms(flat_params, flat_grads, False))  # the one host read
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

    def _device_step(self, work, flat_grads, owner, known, positions) -> None:
        """The step without any host read (see ``capturable``)."""
        dev = flat_grads[0].device
        if any(k is not None for k in known):
            missing = [i for i, k in enumerate(known) if k is None]
            fresh = iter(device_norms([flat_grads[i] for i in missing]).unbind(0) if missing else [])
            norms = torch.stack([(k if k is not None else next(fresh)).to(dev) for k in known])
        else:
            norms = device_norms(flat_grads).to(dev)  # (K,) float64, exact range
        finite = torch.isfinite(norms)
        bad = ~finite.all()
        keep = (~bad).to(torch.float64)
        # per-policy flags from contiguous slices (one per group): no index tensor crosses to the device
        spans = {pol: [(off, len(grads)) for gi, _, grads, off in work if self.param_groups[gi]["nonfinite"] == pol]
                 for pol in ("skip", "raise")}

        def any_bad(pol: str) -> Tensor:
            if len(spans[pol]) == len(work):
                return bad
            return torch.stack([~finite[o:o + n].all() for o, n in spans[pol]]).any()

        if spans["skip"]:
            counted = any_bad("skip") & ~any_bad("raise") if spans["raise"] else any_bad("skip")
            self._skipped = self._skipped + counted.to(torch.int64)
        if spans["raise"]:
            bad_i = (~finite).to(torch.int32)
            if len(spans["raise"]) < len(work):  # only the raise groups' tensors may be named
                mask = torch.zeros(len(owner), dtype=torch.int32, device=dev)
                for o, n in spans["raise"]:
                    mask[o:o + n] = 1
                bad_i = bad_i * mask
            packed = torch.stack([any_bad("raise").to(torch.int64), torch.argmax(bad_i).to(torch.int64)])
            where = [(gi, pi, tuple(g.shape)) for (gi, pi), g in zip(positions, flat_grads)]
            if dev.type == "cuda" and not torch.compiler.is_compiling():
                host = torch.empty(2, dtype=torch.int64, pin_memory=True)
                host.copy_(packed, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._pending = (host, event, where)
            else:
                self._pending = (packed, None, where)
        norms = torch.where(finite, norms, torch.ones_like(norms))  # a skipped step's scales stay finite
        glob = [(off, len(grads)) for gi, _, grads, off in work if self.param_groups[gi]["scope"] == "global"]
        s_glob = None
        if glob:
            gn = norms if len(glob) == len(work) else torch.cat([norms[o:o + n] for o, n in glob])
            s_glob = 1.0 / safe_hypot(gn).clamp_min(self.defaults["eps"])
        for gi, params, grads, off in work:
            group = self.param_groups[gi]
            sign = -1.0 if group["maximize"] else 1.0
            if group["scope"] == "global":
                sc = (s_glob * sign).expand(len(grads))
            else:
                sc = sign / norms[off:off + len(grads)].clamp_min(group["eps"])
            momentum = group["momentum"]
            bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else None
            _capturable_ssgd(params, grads, sc, bufs, keep, mask=group["nonfinite"] == "skip", lr=group["lr"],
                             momentum=momentum,
                             dampening=group["dampening"], nesterov=group["nesterov"],
                             weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"])
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b


def _norm_hook(ref: "weakref.ref[SSGD]", p: Tensor) -> None:
    """Post-accumulate-grad hook: the gradient's norm while it is final and (for small tensors) in cache."""
    opt = ref()
    g = p.grad
    if opt is None or g is None or g.layout != torch.strided or torch.compiler.is_compiling():
        return
    cap = opt.capturable
    device = cap if cap is not None else g.device.type != "cpu"
    with torch.no_grad():
        n = device_norms([g])[0] if device else fast_norm(g)
    opt._norm_cache[p] = (weakref.ref(g), g._version, n, device)


def _capturable_ssgd(params, grads, scales, bufs, keep, *, mask, lr, momentum, dampening, nesterov, weight_decay,
                     decoupled):
    """The update with device scalars: no host read, no data-dependent branch, one fused kernel per
    tensor for plain SSGD (``p += (-lr*s_i) * g_i``).

    ``scales`` is a (K,) float64 tensor (sign included); ``keep`` a 0-dim 1.0, or 0.0 when the step
    must not move (a non-finite gradient somewhere): every coefficient is then 0 (1 for the momentum
    decay). ``mask`` also replaces the gradients by zeros on such a step (``torch.where``, one more
    pass; what ``nonfinite="skip"`` needs for NaN entries, since ``0 * NaN`` is NaN)."""
    kb = keep.to(torch.bool)
    lr_t = keep * lr  # 0-dim float64 (a tensor lr stays on its device)
    if any(p.dtype != torch.float64 for p in params):  # beyond float32's range, 0 * s would be NaN
        big = torch.finfo(torch.float32).max
        scales = scales.clamp(-big, big)
    cs = (scales * keep).unbind(0)  # direction coefficients
    cds = (scales * (keep * (1.0 - dampening))).unbind(0) if momentum != 0 else cs
    steps = (-lr_t * scales).unbind(0)  # plain update coefficients
    dec = 1.0 - lr_t * weight_decay
    wdk = keep * weight_decay
    mu_t = keep * momentum + (1.0 - keep)  # momentum, or 1 (buffer unchanged) on a skipped step
    damp = keep * (1.0 - dampening)
    neg_lr, neg_lr_mu = -lr_t, -lr_t * momentum
    coupled = weight_decay != 0 and not decoupled
    for i, (p, g) in enumerate(zip(params, grads)):
        if mask:
            g = torch.where(kb, g, torch.zeros((), dtype=g.dtype, device=g.device))
        if p.dtype in _WIDE and g.dtype == p.dtype:
            u, c, a = g, cs[i], steps[i]
        else:  # half precision: the direction in float32, rounded once
            u, c, a = (g.to(torch.float32) * scales[i].to(torch.float32)).to(p.dtype), keep, neg_lr
        if weight_decay != 0 and (decoupled or momentum == 0):
            p.mul_(dec)  # decoupled decay, or the coupled decay of plain SSGD: p(1 - lr wd) - lr s g
        if momentum == 0:
            p.addcmul_(u, a)
            continue
        buf = bufs[i]
        d = None
        if coupled or nesterov or buf is None:  # the direction itself is needed
            d = torch.mul(u, c)
            if coupled:
                d.addcmul_(p, wdk)
        if buf is None:
            bufs[i] = buf = d
        elif d is None:  # plain momentum: b = mu b + (1 - dampening) s g, no temporary
            buf.mul_(mu_t).addcmul_(u, cds[i] if c is not keep else damp)
        else:
            buf.mul_(mu_t).addcmul_(d, damp)
        if nesterov:
            p.addcmul_(d, neg_lr).addcmul_(buf, neg_lr_mu)
        else:
            p.addcmul_(buf, neg_lr)


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
