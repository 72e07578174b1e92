"""Optimisation attacks: DLG, iDLG, Inverting Gradients and their SSGD-aware variants.

==================  ==========================================================================
``dlg``             Zhu et al. 2019: dummy image (and, when labels are unknown, a dummy soft
                    label) fitted by L-BFGS (history 100, no line search) to minimise the
                    squared Euclidean distance between dummy and shared gradient.
``idlg``            Zhao et al. 2020: labels recovered from the last layer
                    (:func:`~ssgd.attacks.labels.recover_labels`), then DLG with them fixed.
``dlg-unit``        the SSGD-aware DLG: the dummy gradient goes through the defence's own
                    transform (``ssgd.batched_unit`` with ``scope``; with ``shards=m`` the dummy
                    batch is split into m shards whose unit vectors are summed, the label-to-shard
                    deal is searched and L-BFGS runs in float64) before the Euclidean distance;
                    labels recovered as in iDLG (``labels=optimize`` for DLG's joint soft labels).
``dlg-aware``       the baseline-aware DLG (float64): ``mask`` (pruning: only kept entries),
                    ``sign`` (a tanh surrogate of signSGD), ``draws`` (noise: the mean of several
                    releases of the same batch, drawn by the caller), ``scope`` as ``dlg-unit``.
``inverting``       Geiping et al. 2020: ``1 - cos`` between whole gradients + ``tv`` x total
                    variation, Adam on signed gradients, step decay at 3/8, 5/8, 7/8, box
                    ``[0, 1]``.
``inverting-layer`` the same with the cosine taken per parameter tensor and averaged, so a
                    per-layer rescaling (SSGD's layer scope) is invisible to it; ``shards=m`` as
                    ``dlg-unit`` (the deal searched with its float64 screen).
==================  ==========================================================================

Defaults are an attacker's choices, not a defence's (docs/attacks.md has the tuning run):

* **start in the data range.** ``init=auto`` (DLG family): the attacker's prior mean image
  (``AttackMeta.mean_image``, e.g. the mean of public images of the same kind) when it has
  one, else uniform in ``[0, 1]``; ``init=uniform`` (Inverting family). ``randn`` (the papers'
  start) and ``mean`` are selectable. Tuning (dlg-unit on layer scope, 200 iterations, 4
  validation images): randn 4.8-11.9 dB, uniform 24-27 dB, mean 35-37 dB.
* **restarts, the best kept by the attack's own objective** (never the ground truth):
  2 for the DLG family, 4 for the Inverting family (Geiping et al. use 8 on CIFAR-10).
* **budgets of the literature's order:** 300 L-BFGS iterations (DLG ran 300); 2000
  signed-Adam iterations (Geiping et al.: 4,800-24,000 with restarts; the budget-vs-PSNR curve
  of ``ssgd reproduce leakage`` shows where the PSNR plateaus).
* **tuned step sizes**: L-BFGS lr 0.3 (lr 1, DLG's, left one of 4 validation images at 3.4 dB
  with 2 restarts; 0.3: 46.1 dB mean, min 41.8); Adam lr 0.1 (0.03 / 0.1 / 0.3 within 2 dB)
  and TV weight 1e-4 (0: 27.7, 1e-5: 30.0, 3e-5: 31.8, 1e-4: 38.8, 3e-4: 37.4, 1e-3: 28.8,
  1e-2: 12.6 dB for ``inverting-layer`` on layer scope, 500 iterations). Tuned on MNIST
  test-split images, disjoint from the training-split images the leakage grid attacks.
  (TV suits natural images; on 8x8 digits TV 1e-4 hurts: there ``tv=0`` is better.)

All run many targets at once (:mod:`ssgd.attacks.engine`); ``iters`` counts optimiser
iterations per restart (each is one evaluation of the dummy gradient for every target).
Every :class:`~ssgd.attacks.base.Reconstruction` records its budget: iterations run,
restarts and the init used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from ..transform import batched_unit, check_scope
from .base import Attack, Reconstruction, register_attack
from .engine import (INITS, DummyGradients, cosine_global, cosine_layer, euclidean, flatten_grads,
                     initial_images, lbfgs, resolve_init, signed_adam, stack_targets, target_norms, total_variation)
from .labels import recover_labels, shard_assignments

__all__ = ["DLG", "IDLG", "DLGAware", "DLGUnit", "Inverting", "InvertingLayer"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def _labels_for(mode: str, shared, metas) -> Tensor | None:
    """(K, B) fixed labels, or None when the attack optimises soft labels."""
    if metas[0].labels is not None:
        return torch.stack([m.labels.long().reshape(-1) for m in metas])
    if mode == "recover":
        return torch.stack([recover_labels(s, m.num_classes, m.batch_size) for s, m in zip(shared, metas)])
    return None


def _check_common(a) -> None:
    """The checks every optimisation attack shares (budget, step size, start)."""
    if a.iters < 1 or a.restarts < 1:
        raise ValueError(f"{a.name}: iters={a.iters} and restarts={a.restarts} must be >= 1")
    if not a.lr > 0:
        raise ValueError(f"{a.name}: lr={a.lr} must be > 0")
    if a.init not in INITS:
        raise ValueError(f"{a.name}: init={a.init!r}; expected one of {', '.join(INITS)}")


@dataclass
class _ShardAware:
    """What an SSGD-aware attack knows of the defence: its scope and its m shards, and how the recovered
    labels are dealt into the shards (``assign``, ``screen``, ``max_candidates``: see :class:`DLGUnit`).
    Listed first among an attack's bases, so that its fields follow the attack's own."""

    scope: str = "global"
    shards: int = 1
    assign: str = "search"
    screen: int = 50
    max_candidates: int = 128

    def validate(self):
        super().validate()
        try:
            check_scope(self.scope)
        except ValueError:
            raise ValueError(f"{self.name}: scope={self.scope!r}; expected 'global' or 'layer'") from None
        if self.shards < 1:
            raise ValueError(f"{self.name}: shards={self.shards} must be >= 1")
        if self.assign not in ("search", "contiguous"):
            raise ValueError(f"{self.name}: assign={self.assign!r}; expected 'search' or 'contiguous'")
        if self.screen < 1 or self.max_candidates < 1:
            raise ValueError(f"{self.name}: screen={self.screen} and max_candidates={self.max_candidates} "
                             "must be >= 1")


def _shard_units(dummy: list[Tensor], scope: str) -> list[Tensor]:
    """SSGD(m) applied to stacked shard gradients ``(K, m, *shape)``: the sum of the shard unit vectors."""
    return [u.sum(1) for u in batched_unit(dummy, scope=scope, batch_dims=2)[0]]


def _model_in(model, dtype: torch.dtype):
    """The model itself when its parameters have ``dtype``, else a copy converted to it."""
    return model if next(model.parameters()).dtype == dtype else copy.deepcopy(model).to(dtype)


def _results(x: Tensor, labels: Tensor, final: Tensor, R: int, K: int, iterations: int, init: str,
             extra: list[dict] | None = None) -> list[Reconstruction]:
    """Per target the restart with the lowest final objective (the attack's own, never the ground truth):
    ``x`` ``(R, K, ...)``, ``labels`` ``(R, K, B)`` or ``(K, B)``, ``final`` ``(R, K)``."""
    final = torch.nan_to_num(final.reshape(R, K), nan=float("inf"))
    best = final.argmin(0)
    out = []
    for k in range(K):
        lab = labels[best[k], k] if labels.ndim == 3 else labels[k]
        info = {"restart": int(best[k]), "restart_losses": final[:, k].tolist()}
        if extra is not None:
            info.update(extra[k])
        out.append(Reconstruction(images=x[best[k], k].detach().float().clone(), labels=lab.clone(),
                                  loss=float(final[best[k], k]), seconds=0.0, iterations=iterations, restarts=R,
                                  init=init, extra=info))
    return out


@register_attack
@dataclass
class DLG(Attack):
    name = "dlg"
    help = "Deep Leakage from Gradients: Euclidean gradient matching, L-BFGS, soft labels"
    iters: int = 300
    lr: float = 0.3
    history: int = 100
    labels: str = "optimize"
    normalize: bool = True
    restarts: int = 2
    init: str = "auto"
    dtype: str = "auto"

    def validate(self):
        _check_common(self)
        if self.history < 1:
            raise ValueError(f"{self.name}: history={self.history} must be >= 1")
        if self.labels not in ("optimize", "recover"):
            raise ValueError(f"{self.name}: labels={self.labels!r}; expected 'optimize' or 'recover'")
        if self.dtype not in ("auto",) + tuple(DTYPES):
            raise ValueError(f"{self.name}: dtype={self.dtype!r}; expected auto, float32 or float64")

    def _dtype(self, model) -> torch.dtype:
        """``auto``: the model's own dtype; the attacks whose objective stalls in float32 override this."""
        return DTYPES[self.dtype] if self.dtype != "auto" else next(model.parameters()).dtype

    def _init(self, rows: int, image_shape: tuple[int, ...], label_dim: int, mean_image: Tensor | None,
              dtype: torch.dtype) -> Tensor:
        """Start rows ``(rows, B*C*H*W + label_dim)``: dummy images by ``init``, label logits standard normal."""
        x = initial_images(self.init, rows, image_shape, mean_image=mean_image, dtype=dtype).flatten(1)
        return torch.cat([x, torch.randn(rows, label_dim, dtype=dtype)], 1) if label_dim else x

    # the defence-aware subclasses override these
    def _shards(self, batch_size: int) -> int:
        return 1

    def _target(self, target: list[Tensor]) -> list[Tensor]:
        """The shared tensors as the objective compares them (computed once per attack)."""
        return target

    def _dummy(self, dummy: list[Tensor], target: list[Tensor]) -> list[Tensor]:
        """The dummy gradient passed through what the attacker knows of the defence."""
        return dummy

    def _assign(self, dg, target, fixed, m0, dtype, extra) -> Tensor:
        return fixed

    def _fit(self, dg: DummyGradients, target: list[Tensor], fixed: Tensor | None, m0, R: int, iters: int,
             dtype: torch.dtype, progress: bool = False):
        """L-BFGS on ``R`` restarts of the ``K`` rows of ``target`` (row k: labels ``fixed[k]`` or soft labels);
        returns ``(images (R, K, B, ...), labels (R, K, B), final (R, K), iterations)``."""
        K, B, C = target[0].shape[0], m0.batch_size, m0.num_classes
        shape = tuple(m0.shape)
        # dividing row k's objective by |t_k|^2 leaves its minimisers unchanged but makes L-BFGS's
        # scale-dependent parts (first step, curvature threshold) work for small gradients
        scale = (1.0 / sum((t ** 2).flatten(1).sum(1) for t in target).clamp_min(1e-30)
                 if self.normalize else torch.ones(K, dtype=dtype))
        # restarts are stacked: row r*K + k is restart r of row k
        target = [t.repeat(R, *[1] * (t.ndim - 1)) for t in target]
        scale = scale.repeat(R)
        nx = B * shape[0] * shape[1] * shape[2]
        z0 = self._init(R * K, (B, *shape), 0 if fixed is not None else B * C, m0.mean_image, dtype).to(dtype)
        y_fixed = fixed.repeat(R, 1) if fixed is not None else None  # class indices

        def split(z):
            x = z[:, :nx].reshape(z.shape[0], B, *shape)
            y = y_fixed if y_fixed is not None else torch.softmax(z[:, nx:].reshape(z.shape[0], B, C), -1)
            return x, y

        def closure(z):
            x, y = split(z)
            return euclidean(self._dummy(dg.grads(x, y), target), target) * scale

        bar = _bar(progress, iters, self.name)
        z, loss, its = lbfgs(closure, z0, iters, lr=self.lr, history_size=self.history,
                             on_iter=lambda i, l: bar.update(1))
        bar.close()
        x = z[:, :nx].reshape(R, K, B, *shape)
        labs = (fixed.repeat(R, 1) if fixed is not None else z[:, nx:].reshape(R * K, B, C).argmax(-1))
        return x, labs.reshape(R, K, B), loss.reshape(R, K), its

    def _run(self, model, shared, metas, progress):
        m0 = metas[0]
        K = len(shared)
        dtype = self._dtype(model)
        dg = DummyGradients(_model_in(model, dtype), self._shards(m0.batch_size))
        target = self._target(stack_targets(shared, dtype))
        fixed = _labels_for(self.labels, shared, metas)
        extra = [{} for _ in range(K)]
        if fixed is not None and m0.labels is None:
            fixed = self._assign(dg, target, fixed, m0, dtype, extra)
        x, labs, final, its = self._fit(dg, target, fixed, m0, self.restarts, self.iters, dtype, progress)
        return _results(x, labs, final, self.restarts, K, its, resolve_init(self.init, m0.mean_image), extra)


@register_attack
@dataclass
class IDLG(DLG):
    name = "idlg"
    help = "improved DLG: labels recovered from the last layer, then DLG"
    labels: str = "recover"


@register_attack
@dataclass
class DLGUnit(_ShardAware, DLG):
    """With ``shards=m`` (SSGD(m)) the dummy batch is cut into m contiguous shards like the defence cuts its
    batch, but the attacker does not know which labels went to which shard: ``assign=search`` deals the
    recovered label multiset into the shards in every distinct way (at most ``max_candidates``), fits each
    deal for ``screen`` iterations (stacked, one restart) and keeps the one with the lowest objective;
    ``contiguous`` keeps the sorted multiset as it comes (the old behaviour). With shards the L2 objective
    stalls in float32 (the last layer carries nearly all of the norm), so ``dtype=auto`` is float64 there."""

    name = "dlg-unit"
    help = "SSGD-aware DLG: the dummy gradient goes through ssgd.unit (scope, shards) before matching"
    labels: str = "recover"

    def _dtype(self, model):
        if self.dtype == "auto" and self.shards > 1:
            return torch.float64
        return super()._dtype(model)

    def _shards(self, batch_size):
        if batch_size % self.shards:
            raise ValueError(f"{self.name}: shards={self.shards} must divide the batch size {batch_size}")
        return self.shards

    def _target(self, target):
        # a unit vector is its own unit vector; for any other shared update this only rescales the
        # target, which leaves the minimiser over the dummy unchanged
        return batched_unit(target, scope=self.scope, batch_dims=1)[0] if self.shards == 1 else target

    def _dummy(self, dummy, target):
        if self.shards == 1:
            return batched_unit(dummy, scope=self.scope, batch_dims=1)[0]
        return _shard_units(dummy, self.scope)

    def _assign(self, dg, target, fixed, m0, dtype, extra):
        """Search the label-to-shard deal per target (see the class doc); ``fixed`` is ``(K, B)``."""
        B = m0.batch_size
        if self.shards == 1 or B // self.shards == 1 or self.assign == "contiguous":
            return fixed
        out = fixed.clone()
        for k in range(fixed.shape[0]):
            cands = shard_assignments(fixed[k], self.shards, limit=self.max_candidates)
            if len(cands) > 1:
                rows = [t[k:k + 1].repeat(len(cands), *[1] * (t.ndim - 1)) for t in target]
                _, _, final, _ = self._fit(dg, rows, torch.stack(cands), m0, 1, self.screen, dtype)
                best = int(torch.nan_to_num(final[0], nan=float("inf")).argmin())
                out[k] = cands[best]
            extra[k]["label_deals"] = len(cands)
        return out


@register_attack
@dataclass
class DLGAware(DLGUnit):
    """The defence-aware L2 attack for the baselines (float64 L-BFGS, labels recovered):

    * ``mask=true`` (pruning): only the entries the defence kept (non-zero in the shared update) are
      matched; the pruned ones say nothing about the dummy;
    * ``sign=true`` (signSGD): the dummy gradient goes through ``tanh(g / mean|g|)`` per tensor, a
      differentiable surrogate of the sign, before the L2 distance to the shared signs;
    * ``draws=n`` (additive noise): the attacker asks for the same batch ``n`` times (a malicious
      server can: docs/threat-model.md) and attacks the mean of the ``n`` releases, whose noise std is
      ``sigma / sqrt(n)``; the caller draws the releases (:func:`ssgd.experiments.leakage.attack_once`
      and the grid do), the attack sees their mean;
    * ``scope`` ``none`` (a raw gradient), ``global``/``layer`` (unit vectors, as ``dlg-unit``)."""

    name = "dlg-aware"
    help = "defence-aware DLG: masked (prune), sign surrogate (sign), mean of draws (noise); float64 L-BFGS"
    scope: str = "none"
    mask: bool = False
    sign: bool = False
    draws: int = 1
    dtype: str = "float64"

    def validate(self):
        if self.scope == "none":
            DLG.validate(self)
            if self.shards != 1:
                raise ValueError(f"{self.name}: shards={self.shards} needs scope=global or layer")
        else:
            super().validate()
        if self.draws < 1:
            raise ValueError(f"{self.name}: draws={self.draws} must be >= 1")
        if self.mask and self.sign:
            raise ValueError(f"{self.name}: mask and sign are for different defences; pick one")

    def _target(self, target):
        return target if self.scope == "none" else super()._target(target)

    def _dummy(self, dummy, target):
        if self.scope != "none":
            dummy = super()._dummy(dummy, target)
        if self.mask:
            dummy = [d * (t != 0) for d, t in zip(dummy, target)]
        if self.sign:
            dummy = [torch.tanh(d / d.detach().abs().flatten(1).mean(1).clamp_min(1e-30)
                                .reshape(-1, *[1] * (d.ndim - 1))) for d in dummy]
        return dummy


@register_attack
@dataclass
class Inverting(Attack):
    name = "inverting"
    help = "Inverting Gradients: cosine + TV, signed Adam, box [0,1], restarts"
    iters: int = 2000
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 4
    init: str = "uniform"

    per_layer = False

    def validate(self):
        _check_common(self)
        if self.tv < 0:
            raise ValueError(f"{self.name}: tv={self.tv} must be >= 0")

    def _shards(self) -> int:
        return 1

    def _dummy(self, dummy: list[Tensor]) -> list[Tensor]:
        return dummy

    def _labels(self, model, shared, metas, target, extra) -> Tensor:
        return _labels_for("recover", shared, metas)

    def _run(self, model, shared, metas, progress):
        m0 = metas[0]
        K, B, C, R = len(shared), m0.batch_size, m0.num_classes, self.restarts
        shape = tuple(m0.shape)
        dtype = next(model.parameters()).dtype
        target = stack_targets(shared, dtype)
        extra = [{} for _ in range(K)]
        labels = self._labels(model, shared, metas, target, extra)  # (K, B)
        # restarts are stacked too: row r*K + k is restart r of target k
        target_r = [t.repeat(R, *[1] * (t.ndim - 1)) for t in target] if R > 1 else target
        y = labels.repeat(R, 1)  # class indices: the fused cross-entropy (no soft-label graph)
        dg = DummyGradients(model, self._shards())
        if not self.per_layer:
            target_r = flatten_grads(target_r)  # once: the objective compares flat gradients
        objective = cosine_layer if self.per_layer else cosine_global
        tnorm = target_norms(target_r, self.per_layer)
        tv = self.tv

        def closure(x):
            return objective(self._dummy(dg.grads(x, y)), target_r, tnorm) + tv * total_variation(x)

        bar = _bar(progress, self.iters, self.name)
        x0 = initial_images(self.init, R * K, (B, *shape), mean_image=m0.mean_image, dtype=dtype)
        x, final = signed_adam(closure, x0, self.iters, lr=self.lr, box=(0.0, 1.0),
                               on_iter=(lambda i, l: bar.update(1)) if progress else None)
        bar.close()
        return _results(x.reshape(R, K, B, *shape), labels, final, R, K, self.iters,
                        resolve_init(self.init, m0.mean_image), extra)


@register_attack
@dataclass
class InvertingLayer(_ShardAware, Inverting):
    """Per-layer cosine: blind to a per-layer rescaling (SSGD's layer scope). With ``shards=m``
    (SSGD(m)) the dummy batch is cut into m shards whose unit vectors (``scope``) are summed, as the
    defence does; the label-to-shard deal is searched as in ``dlg-unit`` (its float64 L2 screen)."""

    name = "inverting-layer"
    help = "SSGD-aware Inverting Gradients: per-layer cosine (blind to per-layer rescaling), shard-aware"
    per_layer = True

    def _shards(self):
        return self.shards

    def _dummy(self, dummy):
        return _shard_units(dummy, self.scope) if self.shards > 1 else dummy

    def _labels(self, model, shared, metas, target, extra):
        fixed = super()._labels(model, shared, metas, target, extra)
        m0 = metas[0]
        if m0.labels is not None or self.shards == 1:
            return fixed
        if m0.batch_size % self.shards:
            raise ValueError(f"{self.name}: shards={self.shards} must divide the batch size {m0.batch_size}")
        screen = DLGUnit(scope=self.scope, shards=self.shards, assign=self.assign, screen=self.screen,
                         max_candidates=self.max_candidates, init="mean" if m0.mean_image is not None else "uniform")
        dtype = screen._dtype(model)
        dg = DummyGradients(_model_in(model, dtype), self.shards)
        return screen._assign(dg, [t.to(dtype) for t in target], fixed, m0, dtype, extra)
