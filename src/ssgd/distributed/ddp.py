r"""SSGD as a DDP communication hook: every rank all-reduces the *unit vector* of its gradient.

With :math:`m` ranks (the world size) and rank :math:`j`'s local gradient :math:`g_j`,
DDP's default hook leaves :math:`\frac1m\sum_j g_j` in ``.grad``. After
:func:`register` it leaves

.. math::
   \texttt{reduce="mean"}:\ \frac1m \sum_{j=1}^m \frac{g_j}{\max(\lVert g_j\rVert, \epsilon)}
   \qquad
   \texttt{reduce="sum"}:\ \sum_{j=1}^m \frac{g_j}{\max(\lVert g_j\rVert, \epsilon)}

(per parameter tensor instead of over the whole model for ``scope="layer"``). This is the
paper's SSGD(m) with m = world size: what leaves a rank is a unit vector, never the
gradient's modulus. ``"sum"`` is the paper's rule (step length up to ``m·lr``); ``"mean"``
is DDP's convention (step length up to ``lr``), so ``lr`` with ``"sum"`` equals ``m·lr``
with ``"mean"``. Step with an optimizer that does not renormalise (``torch.optim.SGD``,
with momentum if wanted); :class:`ssgd.SSGD` on top would renormalise the combined
direction, which is a different (also valid) rule.

Usage::

    ddp = DistributedDataParallel(model)
    state = ssgd.distributed.register(ddp, scope="global")   # before the first backward
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for x, y in loader:
        opt.zero_grad(); loss_fn(ddp(x), y).backward(); opt.step()

How the scopes use DDP's buckets
--------------------------------
``scope="layer"``
    Each bucket is normalised parameter by parameter (``bucket.gradients()`` are views
    into ``bucket.buffer()``) and all-reduced at once, so communication overlaps the rest
    of the backward pass exactly as with DDP's default hook.

``scope="global"``
    The unit vector needs the norm of the *whole* local gradient, which exists only when
    the last bucket is ready. Each bucket's per-parameter norms are computed when the
    bucket arrives (that compute still overlaps the backward pass); its future is
    returned unfinished. In the last bucket the global norm is formed (from the
    per-parameter norms in model order, so it does not depend on DDP's bucket layout,
    which DDP rebuilds after the first step), every buffer is scaled and all
    all-reduces are launched back to back; the earlier futures complete from those.
    Cost: no overlap of communication with the backward pass (the gradient cannot be
    sent before it is complete without sending its modulus), one extra pass over the
    gradient (the scaling) and one host read per step (the finiteness of the norms).
    On CPU/gloo the backward-communication overlap is small anyway; see
    ``benchmarks/ddp_step.py`` for measured numbers.

Non-finite local gradients (``nonfinite=``)
-------------------------------------------
A rank that raised inside the hook would leave the other ranks waiting in the
all-reduce, so the failing rank still joins every collective; what it sends never depends on
the non-finite values (no NaN sentinel: a NaN-filled bucket would tell every peer that this
rank hit a non-finite gradient, and where in the model):

``"raise"`` (default)
    the failing rank sends zeros -- what a skip sends -- and raises
    :class:`LocalNonFiniteError` naming the parameter from ``backward()``, after the collective.
    The other ranks are not told; the launcher (``torchrun --max-restarts 0``) stops them.
``"skip"``
    the failing rank contributes zeros (global scope: its whole gradient; layer scope:
    only the non-finite tensors), counts it in ``state.skipped`` and logs a warning; training
    continues with the other ranks' unit vectors (still divided by m with ``"mean"``).

Either way a zero contribution is visible in the sum (it lacks one unit vector); see
``docs/ddp.md`` for what the peers can read from it. Detection costs one host read per step
(global scope) or per bucket (layer scope).

Pitfalls this module handles (torch 2.13): the hook is a plain function whose second
parameter is named ``bucket`` and whose state travels in ``state``; it always returns
``bucket.buffer()`` itself (DDP reads the result by offsets into a tensor that must start
at storage offset 0); models with sparse gradients are refused at registration.
"""

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..transform import (DEFAULT_EPS, check_eps, check_nonfinite, check_scope, divide_, grad_norms,
                         nonfinite_positions, unit_denominator)
from ._common import (
    LocalNonFiniteError,
    check_reduce,
    log,
    nonfinite_message,
    normalise_local_,
    raise_if_failed,
)

__all__ = ["SSGDHookState", "ssgd_hook", "register", "LocalNonFiniteError"]


@dataclass
class SSGDHookState:
    """Settings and per-step bookkeeping of :func:`ssgd_hook` (one per DDP model).

    Diagnostics (rank-local, never communicated): ``steps`` (hooked backward passes),
    ``skipped`` (steps where this rank contributed zeros under ``nonfinite="skip"``),
    ``num_buckets`` (buckets in the last step) and ``last_norms`` (this rank's local
    per-parameter gradient norms before normalisation in the last step -- in model order
    for global scope, where their ``math.hypot`` is the global norm; in bucket order for
    layer scope).
    """

    scope: str = "global"
    reduce: str = "mean"
    eps: float = DEFAULT_EPS
    nonfinite: str = "raise"
    group: Optional[Any] = None
    rank: int = 0
    world_size: int = 1
    noise: Optional[Any] = None  # ssgd.privacy.NodePrivacy/NodeNoise: add_(tensors, scale) before the all-reduce
    names: dict = field(default_factory=dict, repr=False)
    index: dict = field(default_factory=dict, repr=False)
    steps: int = 0
    skipped: int = 0
    num_buckets: int = 0
    last_norms: list = field(default_factory=list, repr=False)
    # per-step state
    _buffers: list = field(default_factory=list, repr=False)
    _buckets: list = field(default_factory=list, repr=False)
    _futures: list = field(default_factory=list, repr=False)
    _norms: list = field(default_factory=list, repr=False)
    _where: list = field(default_factory=list, repr=False)
    _error: Optional[str] = field(default=None, repr=False)
    _skipped_now: bool = field(default=False, repr=False)

    @property
    def factor(self) -> float:
        return 1.0 / self.world_size if self.reduce == "mean" else 1.0

    @property
    def last_norm(self) -> float:
        """This rank's norm of its whole local gradient in the last step (global scope)."""
        return math.hypot(*self.last_norms) if self.last_norms else 0.0

    def _begin(self) -> None:
        self._buffers, self._buckets, self._futures, self._norms, self._where = [], [], [], [], []
        self._error, self._skipped_now = None, False
        self.last_norms = []
        self.num_buckets = 0
        self.steps += 1

    def _name(self, bucket: dist.GradBucket, i: int) -> Optional[str]:
        try:
            return self.names.get(id(bucket.parameters()[i]))
        except Exception:  # pragma: no cover - diagnostics only
            return None


def _finish(state: SSGDHookState, buffer: torch.Tensor, last: bool, fut: torch.futures.Future) -> torch.Tensor:
    fut.value()  # re-raises a failed collective
    if last:
        raise_if_failed(state._error)
    return buffer


def _forward(out: torch.futures.Future, buffer: torch.Tensor, fut: torch.futures.Future) -> None:
    try:
        fut.value()  # re-raises a failed collective
        out.set_result(buffer)
    except Exception as e:  # a failed collective reaches DDP through the bucket's future
        out.set_exception(e)


def _allreduce(state: SSGDHookState, buffer: torch.Tensor) -> torch.futures.Future:
    return dist.all_reduce(buffer, group=state.group, async_op=True).get_future()


def _layer_hook(state: SSGDHookState, bucket: dist.GradBucket) -> torch.futures.Future:
    buffer = bucket.buffer()
    if state._error is not None:
        buffer.zero_()  # an earlier bucket failed under "raise": zeros, as for that bucket
    else:
        grads = bucket.gradients()
        norms, err = normalise_local_(grads, partial(state._name, bucket), "layer", state.eps, state.factor,
                                      state.nonfinite, state.rank)
        state.last_norms.extend(norms)
        if err is not None:
            state._error = err
            buffer.zero_()  # the bucket may hold more than its gradients: send nothing of it
        elif not state._skipped_now and any(not math.isfinite(n) for n in norms):
            state._skipped_now = True
            state.skipped += 1
    if state.noise is not None and state._error is None:  # DP: this rank's noise share (ssgd.privacy)
        state.noise.add_([buffer], scale=state.factor)
    return _allreduce(state, buffer).then(partial(_finish, state, buffer, bucket.is_last()))


def _global_hook(state: SSGDHookState, bucket: dist.GradBucket) -> torch.futures.Future:
    buffer = bucket.buffer()
    state._buffers.append(buffer)
    state._buckets.append(bucket)
    grads = bucket.gradients()
    # this bucket's per-parameter norms now (on the device, while the backward pass goes on); kept
    # by parameter index so the global norm does not depend on DDP's bucket layout (which DDP rebuilds)
    for i, (p, n) in enumerate(zip(bucket.parameters(), grad_norms(grads).unbind(0))):
        state._norms.append((state.index.get(id(p), len(state.index)), n))
        state._where.append((state.index.get(id(p), len(state.index)), len(state._buckets) - 1, i))
    if not bucket.is_last():
        fut = torch.futures.Future(devices=[buffer.device] if buffer.device.type == "cuda" else None)
        state._futures.append(fut)
        return fut

    order = sorted(range(len(state._norms)), key=lambda k: state._norms[k][0])
    dev = state._buffers[-1].device
    norms = torch.stack([state._norms[k][1].to(dev, torch.float64) for k in order])
    denom = unit_denominator(norms, "global", state.eps)
    state.last_norms, bad = nonfinite_positions(norms, denom)  # the one host read of the step
    if bad:
        _, bi, i = state._where[order[bad[0]]]
        b = state._buckets[bi]
        msg = nonfinite_message(state.rank, state._name(b, i), tuple(b.gradients()[i].shape))
        if state.nonfinite == "raise":
            state._error = msg
        else:
            log.warning("%s -- skipped (contributing zeros)", msg.split(";")[0])
            state.skipped += 1
        torch._foreach_zero_(state._buffers)  # the same zeros under both policies: no sentinel
    else:
        divide_(state._buffers, denom / state.factor)

    if state.noise is not None and state._error is None:  # DP: this rank's noise share (ssgd.privacy)
        state.noise.add_(state._buffers, scale=state.factor)
    for buf, out in zip(state._buffers[:-1], state._futures):
        _allreduce(state, buf).add_done_callback(partial(_forward, out, buf))
    result = _allreduce(state, buffer).then(partial(_finish, state, buffer, True))
    state._buffers, state._buckets, state._futures = [], [], []
    return result


def ssgd_hook(state: SSGDHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: all-reduce the unit vector of this rank's gradient.

    Register it with :func:`register` (or ``ddp.register_comm_hook(SSGDHookState(...), ssgd_hook)``
    with ``rank``/``world_size``/``group`` filled in). Returns a future of ``bucket.buffer()``."""
    if bucket.index() == 0:
        state._begin()
    state.num_buckets += 1
    if state.scope == "layer":
        return _layer_hook(state, bucket)
    return _global_hook(state, bucket)


def register(ddp_model: DistributedDataParallel, scope: str = "global", *, reduce: str = "mean",
             eps: float = DEFAULT_EPS, nonfinite: str = "raise", group: Optional[Any] = None,
             noise: Optional[Any] = None) -> SSGDHookState:
    """Make ``ddp_model`` all-reduce unit vectors (SSGD with m = world size); return the hook state.

    Args:
        ddp_model: a :class:`torch.nn.parallel.DistributedDataParallel` model, before its first
            backward pass (DDP accepts one hook per model).
        scope: ``"global"`` (one norm over the whole local gradient) or ``"layer"`` (per tensor).
        reduce: ``"mean"`` (DDP's average of the m unit vectors) or ``"sum"`` (the paper's sum).
        eps: norms below ``eps`` divide by ``eps`` (a zero gradient stays zero).
        nonfinite: ``"raise"`` or ``"skip"``, see the module docstring.
        group: the process group (default: the DDP model's).
        noise: differential privacy (e.g. :class:`ssgd.privacy.NodePrivacy`): its ``add_(tensors, scale)``
            adds this rank's noise share to its unit vector before the all-reduce.
    """
    check_scope(scope)
    check_reduce(reduce)
    check_nonfinite(nonfinite)
    eps = check_eps(eps)
    if not isinstance(ddp_model, DistributedDataParallel):
        raise TypeError(f"register() needs a torch.nn.parallel.DistributedDataParallel model, got "
                        f"{type(ddp_model).__name__}; wrap it first: DistributedDataParallel(model). "
                        "Without DDP, call ssgd.distributed.allreduce_unit_(model.parameters()) after backward().")
    module = ddp_model.module
    sparse = [n for n, m in module.named_modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
    if sparse:
        raise ValueError(f"modules {sparse} produce sparse gradients, which SSGD does not support; "
                         "construct them with sparse=False")
    group = group if group is not None else getattr(ddp_model, "process_group", None)
    state = SSGDHookState(scope=scope, reduce=reduce, eps=float(eps), nonfinite=nonfinite, group=group,
                          rank=dist.get_rank(group), world_size=dist.get_world_size(group),
                          names={id(p): n for n, p in module.named_parameters()},
                          index={id(p): i for i, p in enumerate(module.parameters())}, noise=noise)
    ddp_model.register_comm_hook(state, ssgd_hook)
    return state
