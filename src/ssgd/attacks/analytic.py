r"""Analytic input recovery from a first fully connected layer with bias.

For ``z = W x + b`` the gradients are :math:`\partial L/\partial W_i = \delta_i x^\top` and
:math:`\partial L/\partial b_i = \delta_i`, so :math:`x = (\partial L/\partial W_i) / (\partial
L/\partial b_i)` for any unit ``i`` with :math:`\delta_i \ne 0` (Phong et al. 2017; Geiping
et al. 2020, Sec. 3). The ratio is unchanged by any common rescaling of the gradient, so
SSGD's global scope does not affect it; with layer scope it is off by one unknown factor,
which ``rescale=True`` removes using the box ``[0, 1]`` (the brightest pixel is set to 1).
For a batch each unit mixes the examples it is active for; candidates from all units are
computed and the ``B`` with the most near-duplicates are chosen (every unit active for one
example only reproduces that example exactly; mixtures are unique).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Attack, Reconstruction, register_attack
from .labels import recover_labels

__all__ = ["Analytic", "AnalyticAware"]


@register_attack
@dataclass
class Analytic(Attack):
    name = "analytic"
    help = "closed-form input from the first linear layer (weight-row gradient / bias gradient)"
    rescale: bool = False
    rel_tol: float = 1e-6
    dup_tol: float = 1e-3

    def _candidates(self, gw: Tensor, gb: Tensor) -> tuple[Tensor, Tensor]:
        mag = gb.abs()
        ok = mag > self.rel_tol * float(mag.max().clamp_min(1e-30))
        idx = torch.nonzero(ok).flatten()
        cands = gw[idx] / gb[idx].unsqueeze(1)
        return cands, mag[idx]

    def _select(self, cands: Tensor, w: Tensor, B: int) -> list[int]:
        """Pick B candidates: a unit active for one example only gives that example exactly, and many
        units do, so true images are the candidates with the most (near-)duplicates; mixtures are
        unique. Greedy: most duplicates first (ties: larger |dL/db|), skipping near-copies of chosen ones."""
        scale = cands.norm(dim=1, keepdim=True).clamp_min(1e-30)
        dist = torch.cdist(cands, cands) / scale
        near = dist < self.dup_tol
        support = near.sum(1).double() + w / (w.max() + 1e-30)
        chosen = _pick_distinct(near, support, B)
        return chosen

    def _run(self, model, shared, metas, progress):
        out = []
        for s, m in zip(shared, metas):
            gw, gb = s[0].detach().double(), s[1].detach().double()
            d = m.shape[0] * m.shape[1] * m.shape[2]
            if gw.ndim != 2 or gb.ndim != 1 or gw.shape[1] != d or gb.shape[0] != gw.shape[0]:
                raise ValueError("analytic needs a model whose first layer is nn.Linear (with bias) on the flattened "
                                 f"input of {d} features; got first tensors {tuple(s[0].shape)}, {tuple(s[1].shape)} "
                                 "-- use e.g. --model mlp")
            cands, w = self._candidates(gw, gb)
            B = m.batch_size
            if cands.shape[0] == 0:
                imgs = torch.zeros(B, d, dtype=torch.float64)
            elif B == 1:
                # every active unit gives x exactly; average weighted by |dL/db_i| for robustness
                imgs = ((cands * w.unsqueeze(1)).sum(0) / w.sum()).unsqueeze(0)
            else:
                chosen = self._select(cands, w, B)
                imgs = cands[chosen]
                if imgs.shape[0] < B:
                    imgs = torch.cat([imgs, imgs[:1].repeat(B - imgs.shape[0], 1)])
            if self.rescale:
                peak = imgs.amax(1, keepdim=True).clamp_min(1e-30)
                imgs = imgs / peak
            imgs = imgs.clamp(0, 1).float().reshape(B, *m.shape)
            labels = m.labels.long().reshape(-1) if m.labels is not None else recover_labels(s, m.num_classes, B)
            out.append(Reconstruction(images=imgs, labels=labels, loss=0.0, seconds=0.0, iterations=0))
        return out


def _public_stats(meta, d: int) -> tuple[Tensor, Tensor, Tensor]:
    """The attacker's public prior per pixel, from ``meta.public_images`` (e.g. the test split): mean,
    variance and the mean of the non-zero values ``E[x_j | x_j > 0]``. Without public images: the mean
    image (or 1/2), no shrinkage (infinite variance) and the mean as fill."""
    if meta.public_images is not None:
        xt = meta.public_images.detach().reshape(-1, d).double()
        pos = (xt > 0).double()
        return xt.mean(0), xt.var(0), (xt * pos).sum(0) / pos.sum(0).clamp_min(1)
    mu = meta.mean_image.detach().reshape(d).double() if meta.mean_image is not None \
        else torch.full((d,), 0.5, dtype=torch.float64)
    return mu, torch.full((d,), math.inf, dtype=torch.float64), mu


@register_attack
@dataclass
class AnalyticAware(Analytic):
    r"""The defence-aware closed-form attack on a first linear layer (red team, issue 24), told the defence:

    * ``sign=true`` (signSGD): :math:`\mathrm{sign}(\partial L/\partial W_i)\,\mathrm{sign}(\partial L/\partial b_i)
      = \mathrm{sign}(x)` for images in ``[0, 1]``, so every unit votes on which pixels are non-zero. B = 1:
      the majority vote over the units; B > 1: the analytic attack's candidates (units active for one
      example repeat its exact mask). The mask is filled with the public images' ``E[x_j | x_j > 0]``.
    * ``noise=s`` (additive noise of std ``s`` per release; with ``draws=n`` the caller averages n releases of
      the same batch, as ``dlg-aware`` does, so the std is ``s / sqrt(n)``): B = 1: the least-squares fit of
      every weight-gradient row on its bias gradient, :math:`\hat x = \sum_i g_{b,i} g_{W,i} / (\sum_i g_{b,i}^2
      - H s^2/n)` (the denominator debiased for the known noise), shrunk per pixel toward the public mean
      image by the Wiener factor ``var / (var + noise var of x_hat)``; B > 1: the rows projected onto their
      top-B right singular vectors (the span of the B images), the ``top`` rows of largest ``|g_b|`` turned
      into candidates, clustered by cosine (``1 - cos < tol``), the B best-supported clusters averaged.
    """

    name = "analytic-aware"
    help = "defence-aware analytic: sign mask (sign) or noise-debiased least squares over draws (noise, dp)"
    sign: bool = False
    noise: float = 0.0
    draws: int = 1
    top: int = 128
    tol: float = 0.05

    def validate(self):
        if self.sign and self.noise > 0:
            raise ValueError(f"{self.name}: sign and noise are for different defences; pick one")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError(f"{self.name}: noise={self.noise} must be a finite std >= 0")
        if self.draws < 1:
            raise ValueError(f"{self.name}: draws={self.draws} must be >= 1")
        if self.top < 1 or not 0 < self.tol < 1:
            raise ValueError(f"{self.name}: top={self.top} must be >= 1 and tol={self.tol} in (0, 1)")

    def _sign_images(self, gw: Tensor, gb: Tensor, B: int, on: Tensor) -> Tensor:
        rows = gb != 0
        if B == 1 or not bool(rows.any()):
            votes = gw[rows] * gb[rows].unsqueeze(1)  # sign(x) per active unit
            mask = (votes.mean(0) > 0.5).double().unsqueeze(0) if bool(rows.any()) else torch.zeros(1, gw.shape[1])
            mask = mask.expand(B, -1)
        else:
            cands, w = self._candidates(gw, gb)
            if cands.shape[0] == 0:
                return torch.zeros(B, gw.shape[1], dtype=torch.float64)
            chosen = self._select(cands, w, B)
            mask = (cands[chosen].clamp(0, 1) > 0.5).double()
            if mask.shape[0] < B:
                mask = torch.cat([mask, mask[:1].repeat(B - mask.shape[0], 1)])
        return mask * on

    def _noise_images(self, gw: Tensor, gb: Tensor, B: int, mu: Tensor, var: Tensor) -> Tensor:
        se2 = self.noise ** 2 / self.draws  # noise variance per entry of the averaged release
        if B == 1:
            den = (gb.pow(2).sum() - gb.shape[0] * se2).clamp_min(1e-12)
            xls = (gb.unsqueeze(1) * gw).sum(0) / den
            nv = se2 * gb.pow(2).sum() / den ** 2
            shrink = torch.where(torch.isinf(var), torch.ones_like(var), var / (var + nv))
            return (mu + shrink * (xls - mu)).unsqueeze(0)
        _, _, vh = torch.linalg.svd(gw, full_matrices=False)
        P = vh[:B]
        g = gw @ P.T @ P  # the rows in the span of the B images: most of the noise removed
        order = torch.argsort(gb.abs(), descending=True)[:self.top]
        order = order[gb[order] != 0]
        if order.numel() == 0:
            return mu.unsqueeze(0).repeat(B, 1)
        c = (g[order] / gb[order].unsqueeze(1)).clamp(-1, 2)
        cn = c / c.norm(dim=1, keepdim=True).clamp_min(1e-30)
        near = (cn @ cn.T) > 1 - self.tol
        support = near.sum(1).double() + gb[order].abs() / gb.abs().max()
        chosen = _pick_distinct(near, support, B)
        out = torch.stack([c[near[i]].mean(0) for i in chosen])
        if out.shape[0] < B:
            out = torch.cat([out, mu.unsqueeze(0).repeat(B - out.shape[0], 1)])
        return out

    def _run(self, model, shared, metas, progress):
        if not self.sign and self.noise == 0:
            return super()._run(model, shared, metas, progress)
        out = []
        stats: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        for s, m in zip(shared, metas):
            gw, gb = s[0].detach().double(), s[1].detach().double()
            d = m.shape[0] * m.shape[1] * m.shape[2]
            if gw.ndim != 2 or gb.ndim != 1 or gw.shape[1] != d or gb.shape[0] != gw.shape[0]:
                raise ValueError(f"{self.name} needs a model whose first layer is nn.Linear (with bias) on the "
                                 f"flattened input of {d} features; got first tensors {tuple(s[0].shape)}, "
                                 f"{tuple(s[1].shape)} -- use e.g. --model mlp")
            key = id(m.public_images) if m.public_images is not None else id(m.mean_image)
            if key not in stats:
                stats[key] = _public_stats(m, d)
            mu, var, on = stats[key]
            B = m.batch_size
            imgs = self._sign_images(gw, gb, B, on) if self.sign else self._noise_images(gw, gb, B, mu, var)
            imgs = imgs.clamp(0, 1).float().reshape(B, *m.shape)
            labels = m.labels.long().reshape(-1) if m.labels is not None else recover_labels(s, m.num_classes, B)
            out.append(Reconstruction(images=imgs, labels=labels, loss=0.0, seconds=0.0, iterations=0))
        return out


def _pick_distinct(near: torch.Tensor, support: torch.Tensor, B: int) -> list[int]:
    """Greedily the ``B`` best-supported candidates, none a near-duplicate (``near``) of one already chosen."""
    chosen: list[int] = []
    blocked = torch.zeros(near.shape[0], dtype=torch.bool)
    for i in torch.argsort(support, descending=True).tolist():
        if len(chosen) == B:
            break
        if not blocked[i]:
            chosen.append(i)
            blocked |= near[i]
    return chosen
