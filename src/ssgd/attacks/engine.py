r"""The batched machinery behind every optimisation attack.

Evaluating a defence needs many independent attacks. They are run *stacked*: ``K``
targets (each a shared update of a batch of ``B`` images) become one tensor of dummy
images ``(K, B, C, H, W)``, the ``K`` dummy gradients come from one
``torch.func.vmap(torch.func.grad(...))`` call, and the per-target objectives are
summed, so one backward pass gives every target its own gradient (the targets never
mix: target ``k``'s loss depends only on dummy ``k``). The optimisers are per-target
too: Adam is elementwise, and :func:`lbfgs` below keeps one L-BFGS history per target
(its two-loop recursion, step size and stopping rules are those of
``torch.optim.LBFGS`` without line search -- what DLG uses -- applied row by row, except that
curvature pairs are accepted by a scale-free test), so a
stacked run gives every target the same iterates as running it alone, up to float
rounding.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["INITS", "DummyGradients", "initial_images", "resolve_init", "euclidean", "cosine_global", "cosine_layer",
           "flatten_grads", "total_variation", "lbfgs", "signed_adam", "stack_targets", "target_norms"]


def stack_targets(shared: list[list[Tensor]], dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """``K`` lists of tensors (one per parameter) -> one list of ``(K, *shape)`` tensors of ``dtype``."""
    n = len(shared[0])
    for k, s in enumerate(shared):
        if len(s) != n:
            raise ValueError(f"shared update #{k} has {len(s)} tensors, expected {n} (one per model parameter)")
    return [torch.stack([s[i].detach().to(dtype) for s in shared]) for i in range(n)]


INITS = ("auto", "uniform", "randn", "mean")


def resolve_init(kind: str, mean_image: Tensor | None) -> str:
    """``auto`` is the attacker's prior mean image when it has one (``mean``), else ``uniform``."""
    if kind not in INITS:
        raise ValueError(f"unknown init {kind!r}; expected one of {', '.join(INITS)}")
    if kind == "auto":
        return "mean" if mean_image is not None else "uniform"
    return kind


def initial_images(kind: str, rows: int, shape: tuple[int, ...], *, mean_image: Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Dummy images to start from, ``(rows, *shape)`` (``shape`` = ``(B, C, H, W)``), from the global RNG.

    ``uniform``: uniform in the data range ``[0, 1]`` (what an attacker who knows the data are
    images picks). ``randn``: standard normal, DLG's and Geiping et al.'s choice (mostly outside
    the box, so the first iterations are spent getting back into it). ``mean``: the attacker's
    prior mean image (``mean_image``, ``(C, H, W)``, e.g. the mean of public images of the same
    kind) plus uniform noise of amplitude 0.1 so restarts differ, clipped to ``[0, 1]``.
    ``auto``: ``mean`` when a mean image is given, else ``uniform``."""
    kind = resolve_init(kind, mean_image)
    if kind == "uniform":
        return torch.rand(rows, *shape, dtype=dtype)
    if kind == "randn":
        return torch.randn(rows, *shape, dtype=dtype)
    if mean_image is None:
        raise ValueError("init=mean needs the attacker's mean image (AttackMeta.mean_image); "
                         "pass it, or use init=uniform")
    m = mean_image.detach().to(dtype).reshape(1, 1, *shape[-3:])
    return (m + 0.1 * (torch.rand(rows, *shape, dtype=dtype) - 0.5)).clamp(0, 1)


def _label_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Batch-mean cross-entropy: ``y`` class indices (fixed labels: ``F.cross_entropy``'s fused kernels,
    a smaller double-backward graph) or soft labels ``(B, classes)`` (DLG's optimised labels)."""
    if not y.is_floating_point():
        return F.cross_entropy(logits, y)
    return -(y * torch.log_softmax(logits, -1)).sum(-1).mean()


class DummyGradients:
    """Gradients of the cross-entropy for stacked dummy batches, differentiable in the inputs.

    ``grads(x, y)`` with ``x`` of shape ``(K, B, C, H, W)`` and labels ``y``, class indices ``(K, B)`` or
    soft labels ``(K, B, classes)``, returns one ``(K, *p.shape)`` tensor per parameter: the gradient of
    the batch-mean loss of target ``k``. With ``shards=m`` the batch is split into ``m``
    contiguous shards and the result is ``(K, m, *p.shape)`` (shard gradients, each the mean
    over its own examples -- what each SSGD(m) node computes).

    One target (``K = 1``, no shards) takes plain autograd (``torch.autograd.grad`` with
    ``create_graph=True``): ``vmap`` costs about 1.5x per iteration there and buys nothing.
    Stacked targets take ``torch.func.vmap(torch.func.grad(...))``.
    """

    def __init__(self, model: nn.Module, shards: int = 1):
        from torch.func import functional_call, grad, vmap

        if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training for mod in model.modules()):
            raise ValueError("the model has BatchNorm in training mode; call model.eval() before attacking "
                             "(batch statistics would couple the dummy images)")
        self.model = model
        self.shards = shards
        self.names = [n for n, _ in model.named_parameters()]
        self.plist = [p for _, p in model.named_parameters()]
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self._plain_ok = all(p.requires_grad for p in self.plist)
        buffers = dict(model.named_buffers())

        def loss(pd, x, y):
            return _label_loss(functional_call(model, (pd, buffers), (x,)), y)

        one = grad(loss)
        if shards == 1:
            self._fn = vmap(one, in_dims=(None, 0, 0))
        else:
            self._fn = vmap(vmap(one, in_dims=(None, 0, 0)), in_dims=(None, 0, 0))

    def grads(self, x: Tensor, y: Tensor) -> list[Tensor]:
        if x.shape[0] == 1 and self.shards == 1 and self._plain_ok:
            loss = _label_loss(self.model(x[0]), y[0])
            return [g.unsqueeze(0) for g in torch.autograd.grad(loss, self.plist, create_graph=True)]
        if self.shards > 1:
            K, B = x.shape[:2]
            if B % self.shards:
                raise ValueError(f"batch size {B} is not divisible by shards={self.shards}")
            x = x.reshape(K, self.shards, B // self.shards, *x.shape[2:])
            y = y.reshape(K, self.shards, B // self.shards, *y.shape[2:])
        g = self._fn(self.params, x, y)
        return [g[n] for n in self.names]


def euclidean(dummy: list[Tensor], target: list[Tensor]) -> Tensor:
    """Per-target squared L2 distance summed over all tensors (DLG's objective); shape ``(K,)``."""
    return sum(((d - t) ** 2).flatten(1).sum(1) for d, t in zip(dummy, target))


def flatten_grads(tensors: list[Tensor]) -> Tensor:
    """``K`` stacked gradients (one ``(K, *shape)`` tensor per parameter) as one ``(K, P)`` matrix."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], 1)


def target_norms(target: list[Tensor] | Tensor, per_layer: bool) -> Tensor | list[Tensor]:
    """The target's norms, computed once per attack: ``(K,)`` over all tensors, or one ``(K,)`` per tensor."""
    if isinstance(target, Tensor):
        return target.norm(dim=1)
    per = [t.flatten(1).norm(dim=1) for t in target]
    return per if per_layer else torch.sqrt(sum(n ** 2 for n in per))


def cosine_global(dummy: list[Tensor] | Tensor, target: list[Tensor] | Tensor, tnorm: Tensor | None = None) -> Tensor:
    """Per-target ``1 - cos`` between the whole dummy and target gradients (Geiping et al.). Either may be
    given flat (:func:`flatten_grads`, what an attack does with its target once); ``tnorm``: the target's
    norms from :func:`target_norms` (computed here if not given). One product and one norm over the flat
    gradient, not one per tensor: a smaller double-backward graph."""
    d = dummy if isinstance(dummy, Tensor) else flatten_grads(dummy)
    t = target if isinstance(target, Tensor) else flatten_grads(target)
    tn = t.norm(dim=1) if tnorm is None else tnorm
    return 1 - (d * t).sum(1) / (d.norm(dim=1) * tn).clamp_min(1e-20)


def cosine_layer(dummy: list[Tensor], target: list[Tensor], tnorms: list[Tensor] | None = None) -> Tensor:
    """Per-target mean over tensors of ``1 - cos`` (blind to any per-layer rescaling)."""
    tns = target_norms(target, True) if tnorms is None else tnorms
    terms = []
    for d, t, tn in zip(dummy, target, tns):
        d, t = d.flatten(1), t.flatten(1)
        terms.append(1 - (d * t).sum(1) / (d.norm(dim=1) * tn).clamp_min(1e-20))
    return torch.stack(terms, 0).mean(0)


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic TV per target (mean absolute neighbour difference), ``x`` of shape ``(K, B, C, H, W)``."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def lbfgs(closure: Callable[[Tensor], Tensor], z0: Tensor, iters: int, *, lr: float = 1.0, history_size: int = 100,
          tolerance_grad: float = 0.0, tolerance_change: float = 0.0,
          on_iter: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, Tensor, int]:
    """Per-row L-BFGS (``torch.optim.LBFGS`` without line search, rows independent).

    ``closure(z)`` maps ``z`` of shape ``(K, D)`` to per-row losses ``(K,)``, differentiably.
    Each row keeps its own history, curvature estimate and stopping state; a row that
    stops (tiny gradient, tiny step or loss change, or a non-finite loss) is frozen.
    Returns ``(z_best, loss_best, iterations)``: per row, the iterate with the lowest
    finite loss seen.
    """
    K, D = z0.shape
    z = z0.detach().clone()
    H = history_size
    old_s = torch.zeros(K, H, D, dtype=z.dtype)
    old_y = torch.zeros(K, H, D, dtype=z.dtype)
    ro = torch.zeros(K, H, dtype=z.dtype)  # 0 marks an empty slot
    h_diag = torch.ones(K, dtype=z.dtype)
    active = torch.ones(K, dtype=torch.bool)
    best_z = z.clone()
    best_loss = torch.full((K,), float("inf"), dtype=z.dtype)

    def evaluate(zv: Tensor) -> tuple[Tensor, Tensor]:
        zz = zv.detach().requires_grad_(True)
        loss = closure(zz)
        (g,) = torch.autograd.grad(loss.sum(), zz)
        return loss.detach(), g.detach()

    loss, g = evaluate(z)
    finite = torch.isfinite(loss) & torch.isfinite(g).all(1)
    better = finite & (loss < best_loss)
    best_z[better], best_loss[better] = z[better], loss[better]
    active &= finite & (g.abs().amax(1) > tolerance_grad)
    d = -g
    t = torch.zeros(K, dtype=z.dtype)
    prev_g = g.clone()
    done = 0
    for it in range(1, iters + 1):
        if not bool(active.any()):
            break
        done = it
        if it > 1:
            y = g - prev_g
            s = d * t.unsqueeze(1)
            ys = (y * s).sum(1)
            # torch accepts a curvature pair when ys > 1e-10 (absolute), which silently turns L-BFGS
            # into plain gradient descent when gradients are small (trained models, unit vectors);
            # the scale-free test below accepts exactly the pairs with positive curvature
            upd = active & (ys > 1e-10 * y.norm(dim=1) * s.norm(dim=1))
            if bool(upd.any()):
                # shift the history of updating rows left by one and append (y, s); others keep theirs
                sh_s = torch.cat([old_s[:, 1:], s.unsqueeze(1)], 1)
                sh_y = torch.cat([old_y[:, 1:], y.unsqueeze(1)], 1)
                sh_ro = torch.cat([ro[:, 1:], (1.0 / ys.clamp_min(1e-10)).unsqueeze(1)], 1)
                m3 = upd.view(K, 1, 1)
                old_s = torch.where(m3, sh_s, old_s)
                old_y = torch.where(m3, sh_y, old_y)
                ro = torch.where(upd.view(K, 1), sh_ro, ro)
                h_diag = torch.where(upd, ys / (y * y).sum(1).clamp_min(1e-30), h_diag)
            # two-loop recursion, newest (index H-1) to oldest; empty slots have ro = 0 -> no effect
            q = -g
            al = torch.zeros(K, H, dtype=z.dtype)
            for i in range(H - 1, -1, -1):
                if not bool((ro[:, i] != 0).any()):
                    break
                al[:, i] = (old_s[:, i] * q).sum(1) * ro[:, i]
                q = q - al[:, i:i + 1] * old_y[:, i]
            r = q * h_diag.unsqueeze(1)
            for i in range(H):
                if not bool((ro[:, i] != 0).any()):
                    continue
                be = (old_y[:, i] * r).sum(1) * ro[:, i]
                r = r + old_s[:, i] * (al[:, i] - be).unsqueeze(1)
            d = r
        prev_g = g.clone()
        prev_loss = loss.clone()
        if it == 1:
            t = torch.clamp(1.0 / g.abs().sum(1).clamp_min(1e-30), max=1.0) * lr
        else:
            t = torch.full((K,), lr, dtype=z.dtype)
        gtd = (g * d).sum(1)
        active &= gtd <= -tolerance_change
        step = torch.where(active.unsqueeze(1), d * t.unsqueeze(1), torch.zeros_like(d))
        z = z + step
        loss_new, g_new = evaluate(z)
        finite = torch.isfinite(loss_new) & torch.isfinite(g_new).all(1)
        better = active & finite & (loss_new < best_loss)
        best_z[better], best_loss[better] = z[better], loss_new[better]
        loss = torch.where(active, loss_new, loss)
        g = torch.where(active.unsqueeze(1), g_new, g)
        active &= finite
        active &= g.abs().amax(1) > tolerance_grad
        active &= step.abs().amax(1) > tolerance_change
        active &= (loss - prev_loss).abs() >= tolerance_change
        if on_iter is not None:
            on_iter(it, loss)
    return best_z, best_loss, done


def signed_adam(closure: Callable[[Tensor], Tensor], x0: Tensor, iters: int, *, lr: float = 0.1,
                box: tuple[float, float] | None = (0.0, 1.0),
                on_iter: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, Tensor]:
    """Geiping et al.'s optimiser: Adam on the *signs* of the gradient, learning rate divided by
    10 at 3/8, 5/8 and 7/8 of the iterations, projection onto the box after every step.
    ``closure(x)`` returns per-target losses; returns ``(x, final per-target loss)``."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    milestones = [int(iters * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    for it in range(iters):
        opt.zero_grad(set_to_none=False)
        loss = closure(x)
        (gx,) = torch.autograd.grad(loss.sum(), x)
        x.grad = gx.sign()
        opt.step()
        sched.step()
        if box is not None:
            with torch.no_grad():
                x.clamp_(*box)
        if on_iter is not None:
            on_iter(it + 1, loss.detach())
    final = closure(x.detach())  # the dummy gradient needs autograd even here
    return x.detach(), final.detach()
