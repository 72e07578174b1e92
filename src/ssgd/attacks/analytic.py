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

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Attack, Reconstruction, register_attack
from .labels import recover_labels

__all__ = ["Analytic"]


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
        chosen: list[int] = []
        blocked = torch.zeros(cands.shape[0], dtype=torch.bool)
        for i in torch.argsort(support, descending=True).tolist():
            if len(chosen) == B:
                break
            if blocked[i]:
                continue
            chosen.append(i)
            blocked |= near[i]
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
