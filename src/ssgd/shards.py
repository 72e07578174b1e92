r"""SSGD(m) in one process: split a batch into m shards, sum the shards' unit vectors.

This is the paper's multi-node rule simulated on one machine: node (shard) ``j``
computes its gradient :math:`g_j` on its ``n = B/m`` examples and shares
:math:`u_j = g_j/\lVert g_j\rVert` (global or layer scope); the update direction is

.. math::  d = \sum_{j=1}^m u_j \qquad(\text{``reduce="sum"``, the paper's rule})

or :math:`d/m` (``reduce="mean"``, what DDP's all-reduce average gives). With the
sum, the step ``lr·d`` has length at most ``m·lr`` (exactly ``m·lr`` when all shards
agree), so ``lr`` with ``reduce="sum"`` equals ``m·lr`` with ``reduce="mean"``.

The sum is written into ``.grad``; step with a plain optimizer that does *not*
renormalise (``torch.optim.SGD``, optionally with momentum)::

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in loader:
        opt.zero_grad()
        ssgd.shard_unit_grad_(model, torch.nn.functional.cross_entropy, x, y, m=4)
        opt.step()

Two engines: ``method="vmap"`` computes all m shard gradients at once with
``torch.func`` (fast for small models; needs a model without in-place buffer updates,
so no BatchNorm in training mode); ``method="loop"`` runs m micro-batch
backward passes (any model). ``method="auto"`` picks vmap when it is safe (batch
divisible by m, no BatchNorm in training mode). The vmap engine normalises and sums the
m stacked gradients with one norm kernel and one ``(1, m) @ (m, n)`` product per tensor.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .transform import DEFAULT_EPS, check_eps, check_scope, grad_norms, unit_, unit_denominator

__all__ = ["shard_unit_grad_", "split_shards"]


def split_shards(n: int, m: int) -> list[slice]:
    """``m`` contiguous slices covering ``range(n)`` as evenly as possible."""
    if m < 1:
        raise ValueError(f"Invalid number of shards m={m}; must be >= 1")
    if m > n:
        raise ValueError(f"Cannot split a batch of {n} examples into m={m} shards; use m <= batch size")
    base, extra = divmod(n, m)
    out, start = [], 0
    for j in range(m):
        size = base + (1 if j < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training for mod in model.modules())


@torch.no_grad()
def _reduce_into_grad(params: list[nn.Parameter], shard_grads: list[list[Tensor]], scope: str, eps: float,
                      reduce: str, names: list[str] | None = None) -> Tensor:
    norms = []
    total = [torch.zeros_like(p) for p in params]
    for j, gs in enumerate(shard_grads):
        shard_names = [f"{n} (shard {j})" for n in names] if names else None
        norms.append(unit_(gs, scope, eps, names=shard_names))
        torch._foreach_add_(total, gs)
    if reduce == "mean":
        torch._foreach_div_(total, float(len(shard_grads)))
    for p, t in zip(params, total):
        p.grad = t
    return torch.stack(norms)


@torch.no_grad()
def _reduce_stacked_into_grad(params: list[nn.Parameter], stacked: list[Tensor], scope: str, eps: float,
                              reduce: str, names: list[str] | None = None) -> Tensor:
    """Same as :func:`_reduce_into_grad` for gradients stacked as ``(m, *p.shape)``: the m rows'
    norms at once (:func:`ssgd.transform.unit_denominator`, the rule of :func:`unit_`) and one
    ``(1, m) @ (m, n)`` product per tensor. A non-finite row goes through the per-shard path,
    whose error names the parameter and the shard."""
    m = stacked[0].shape[0]
    norms = torch.stack([grad_norms([G[j] for G in stacked]) for j in range(m)])  # (m, K)
    denom = unit_denominator(norms, scope, eps)  # (m,) or (m, K)
    if not bool(torch.isfinite(denom).all()):  # the one host read: raise naming the parameter
        return _reduce_into_grad(params, [[G[j] for G in stacked] for j in range(m)], scope, eps, reduce, names)
    div = float(m) if reduce == "mean" else 1.0
    for k, (p, G) in enumerate(zip(params, stacked)):
        d = denom if scope == "global" else denom[:, k]
        acc = torch.float64 if G.dtype == torch.float64 else torch.float32
        p.grad = ((1.0 / (d * div)).to(acc) @ G.reshape(m, -1).to(acc)).reshape(p.shape).to(G.dtype)
    return (torch.linalg.vector_norm(norms, dim=1) if scope == "global" else norms).double()


def shard_unit_grad_(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    m: int,
    *,
    scope: str = "global",
    reduce: str = "sum",
    eps: float = DEFAULT_EPS,
    method: str = "auto",
) -> Tensor:
    """Write the sum (or mean) of the m shards' unit gradients into ``.grad``.

    ``loss_fn(outputs, targets)`` must average over its batch (as ``F.cross_entropy``
    does). Returns the shards' gradient norms before normalisation: shape ``(m,)`` for
    global scope, ``(m, n_tensors)`` for layer scope. Parameters with
    ``requires_grad=False`` are left alone. Existing ``.grad`` values are replaced.
    """
    check_scope(scope)
    check_eps(eps)
    if reduce not in ("sum", "mean"):
        raise ValueError(f"Invalid reduce={reduce!r}; expected 'sum' (the paper) or 'mean'")
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"Invalid method={method!r}; expected 'auto', 'vmap' or 'loop'")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets disagree on batch size: {inputs.shape[0]} vs {targets.shape[0]}")
    slices = split_shards(inputs.shape[0], m)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    pnames = [n for n, _ in named]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True; nothing to compute")
    even = inputs.shape[0] % m == 0
    use_vmap = method == "vmap" or (method == "auto" and even and not _has_bn(model) and m > 1)
    if method == "vmap" and not even:
        raise ValueError(f"method='vmap' needs the batch size ({inputs.shape[0]}) divisible by m={m}")
    if use_vmap:
        from torch.func import functional_call, grad, vmap

        buffers = dict(model.named_buffers())
        pdict = {n: p.detach() for n, p in named}

        def shard_loss(pd, x, y):
            return loss_fn(functional_call(model, (pd, buffers), (x,)), y)

        xs = inputs.reshape(m, -1, *inputs.shape[1:])
        ys = targets.reshape(m, -1, *targets.shape[1:])
        g = vmap(grad(shard_loss), in_dims=(None, 0, 0), randomness="different")(pdict, xs, ys)
        return _reduce_stacked_into_grad(params, [g[n] for n in pnames], scope, eps, reduce, pnames)
    else:
        shard_grads = []
        for sl in slices:
            gs = torch.autograd.grad(loss_fn(model(inputs[sl]), targets[sl]), params, allow_unused=True)
            shard_grads.append([torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, gs)])
    return _reduce_into_grad(params, shard_grads, scope, eps, reduce, pnames)
