import numpy as np
import pytest
import torch

from ssgd.data import dirichlet_partition, iid_partition, partition


def _covers_once(parts, n):
    allidx = torch.cat(parts)
    return allidx.numel() == n and torch.equal(allidx.sort().values, torch.arange(n))


def test_iid_covers_every_example_once_balanced_and_seeded():
    parts = iid_partition(103, 5, seed=1)
    assert _covers_once(parts, 103)
    assert {p.numel() for p in parts} <= {20, 21}
    assert all(torch.equal(a, b) for a, b in zip(parts, iid_partition(103, 5, seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(parts, iid_partition(103, 5, seed=2)))


def _classes_per_node(parts, y, frac=0.05):
    out = []
    for p in parts:
        counts = np.bincount(y[p.numpy()], minlength=10)
        out.append(int((counts > frac * counts.sum()).sum()))
    return np.mean(out)


def test_dirichlet_covers_once_and_alpha_controls_skew():
    y = np.repeat(np.arange(10), 100)
    skewed = dirichlet_partition(y, 10, alpha=0.1, seed=0)
    flat = dirichlet_partition(y, 10, alpha=100.0, seed=0)
    assert _covers_once(skewed, 1000) and _covers_once(flat, 1000)
    assert _classes_per_node(skewed, y) < 5 < _classes_per_node(flat, y)
    again = dirichlet_partition(torch.from_numpy(y), 10, alpha=0.1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(skewed, again))


def test_partition_errors_name_the_value():
    with pytest.raises(ValueError, match="alpha=0"):
        dirichlet_partition(np.zeros(10, int), 2, alpha=0)
    with pytest.raises(ValueError, match="num_nodes=20"):
        iid_partition(10, 20)
    with pytest.raises(ValueError, match="'zipf'"):
        partition(np.zeros(10, int), 2, scheme="zipf")
    assert len(partition(np.arange(10) % 2, 2, scheme="dirichlet", alpha=1.0)) == 2
