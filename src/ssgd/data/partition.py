"""Partitioning a training set across nodes: IID and Dirichlet(alpha) label skew, seeded.

Both return a list of index tensors (one per node) that together cover every example
exactly once. ``dirichlet_partition`` follows the usual federated-learning recipe
(Hsu et al. 2019): for each class ``c`` draw proportions ``p_c ~ Dir(alpha * 1_K)`` and
deal the class's examples to the K nodes in those proportions; small ``alpha`` gives
nodes that see few classes, large ``alpha`` approaches IID.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["iid_partition", "dirichlet_partition", "partition"]


def _check(n: int, num_nodes: int) -> None:
    if num_nodes < 1:
        raise ValueError(f"Invalid num_nodes={num_nodes}; must be >= 1")
    if num_nodes > n:
        raise ValueError(f"Cannot split {n} examples across num_nodes={num_nodes}; use at most {n} nodes")


def iid_partition(n: int, num_nodes: int, seed: int = 0) -> list[Tensor]:
    """Shuffle ``range(n)`` (seeded) and cut it into ``num_nodes`` near-equal parts."""
    _check(n, num_nodes)
    perm = np.random.default_rng(seed).permutation(n)
    return [torch.from_numpy(np.sort(p)).long() for p in np.array_split(perm, num_nodes)]


def dirichlet_partition(labels: Tensor | np.ndarray, num_nodes: int, alpha: float, seed: int = 0,
                        min_size: int = 1, max_tries: int = 100) -> list[Tensor]:
    """Label-skewed partition: class proportions per node drawn from Dirichlet(``alpha``).

    Redraws (up to ``max_tries``) until every node has at least ``min_size`` examples.
    """
    y = np.asarray(labels.cpu().numpy() if isinstance(labels, Tensor) else labels)
    _check(len(y), num_nodes)
    if not alpha > 0:
        raise ValueError(f"Invalid alpha={alpha}; the Dirichlet concentration must be > 0 (e.g. 0.5)")
    if min_size * num_nodes > len(y):
        raise ValueError(f"min_size={min_size} x num_nodes={num_nodes} exceeds the {len(y)} examples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_nodes)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            p = rng.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for node, chunk in enumerate(np.split(idx, cuts)):
                parts[node].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]
    raise ValueError(f"Could not give every one of {num_nodes} nodes >= {min_size} examples with alpha={alpha} "
                     f"in {max_tries} draws; raise alpha or lower num_nodes/min_size")


def partition(labels: Tensor | np.ndarray, num_nodes: int, scheme: str = "iid", alpha: float = 0.5,
              seed: int = 0) -> list[Tensor]:
    """``scheme="iid"`` or ``"dirichlet"`` (with ``alpha``)."""
    if scheme == "iid":
        return iid_partition(len(labels), num_nodes, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, num_nodes, alpha, seed)
    raise ValueError(f"Unknown partition scheme {scheme!r}; expected 'iid' or 'dirichlet'")
