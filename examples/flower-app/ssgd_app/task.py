"""YOUR model and YOUR data: the one file to edit.

``Net`` is any torch model without buffers (no BatchNorm: updates carry trainable parameters only).
``load_data(partition_id, num_partitions)`` returns this node's training examples and the test split.
Here: a small MLP on the MNIST copy that ships with ssgd, split IID across the nodes.
"""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(partition_id: int, num_partitions: int):
    """``(x_train, y_train, x_test, y_test)`` of this node's share (IID, seeded)."""
    from ssgd.data import load_dataset, partition

    data = load_dataset("mnist")
    idx = partition(data.y_train, num_partitions, scheme="iid", seed=0)[partition_id]
    return data.x_train[idx], data.y_train[idx], data.x_test[:1000], data.y_test[:1000]


def make_model() -> Net:
    torch.manual_seed(0)
    return Net()
