"""Accuracy and mean cross-entropy of a classifier on in-memory data."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``(x, y)``; the model's train/eval mode is restored."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, x.shape[0]
    for i in range(0, n, batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        out = model(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    model.train(was)
    return correct / max(n, 1), loss / max(n, 1)
