"""Scoring a batch reconstruction: the attacker's images come in no particular order.

:func:`match` pairs reconstructions with originals by an optimal assignment
(``scipy.optimize.linear_sum_assignment`` on the pairwise MSE), and :func:`score_batch`
returns the metrics of the matched pairs as plain floats. Label accuracy is order-free:
the overlap of the recovered and true label multisets, divided by the batch size.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from .image import mse_per_image, psnr_per_image, ssim_per_image

__all__ = ["label_accuracy", "match", "score_batch"]


def label_accuracy(pred: Tensor | list[int] | None, true: Tensor | list[int]) -> float:
    """Fraction of the true labels recovered, as multisets (order-free). ``None`` -> nan."""
    if pred is None:
        return float("nan")
    p = [int(v) for v in (pred.tolist() if isinstance(pred, Tensor) else pred)]
    t = [int(v) for v in (true.tolist() if isinstance(true, Tensor) else true)]
    if len(p) != len(t):
        raise ValueError(f"label counts differ: {len(p)} recovered vs {len(t)} true")
    if not t:
        return float("nan")
    overlap = sum((Counter(p) & Counter(t)).values())
    return overlap / len(t)


def match(recon: Tensor, target: Tensor) -> Tensor:
    """Permutation ``perm`` with ``recon[perm[i]]`` the reconstruction matched to ``target[i]``."""
    from scipy.optimize import linear_sum_assignment

    if recon.shape != target.shape:
        raise ValueError(f"shapes differ: recon {tuple(recon.shape)} vs target {tuple(target.shape)}")
    a = recon.detach().float().cpu().flatten(1)
    b = target.detach().float().cpu().flatten(1)
    cost = torch.cdist(b.double(), a.double()) ** 2  # rows: targets, cols: reconstructions
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def score_batch(recon: Tensor, target: Tensor, pred_labels: Tensor | None = None,
                true_labels: Tensor | None = None) -> dict[str, float]:
    """Match, then score: mean ``mse``, ``psnr``, ``ssim`` over the matched pairs and ``label_acc``."""
    perm = match(recon, target)
    r = recon.detach().float().cpu()[perm].clamp(0, 1)
    t = target.detach().float().cpu()
    m, p, s = mse_per_image(r, t), psnr_per_image(r, t), ssim_per_image(r, t)
    out = {
        "mse": float(sum(m) / len(m)),
        "psnr": float(sum(p) / len(p)),
        "ssim": float(sum(s) / len(s)),
        "label_acc": label_accuracy(pred_labels, true_labels) if true_labels is not None else float("nan"),
    }
    return out
