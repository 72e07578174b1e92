"""Single-process training on in-memory image data, writing a run folder.

``train(TrainConfig(...), run_dir)`` is what ``ssgd train`` and ``ssgd demo`` call.
Deterministic on CPU for a given seed: the model init, the batch order (a seeded
``torch.Generator``) and the shard split depend on ``seed`` only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset, load_dataset
from ..models import build_model
from ..report.io import write_csv, write_json
from ..shards import shard_unit_grad_
from .optimizers import build_optimizer, uses_shards

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "set_seed"]


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    model: str = "convnet"
    optimizer: str = "ssgd"
    scope: str = "global"
    shards: int = 1
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 5
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "TrainConfig":
        if self.batch_size < 1:
            raise ValueError(f"Invalid batch_size={self.batch_size}; must be >= 1")
        if self.epochs < 0:
            raise ValueError(f"Invalid epochs={self.epochs}; must be >= 0")
        if self.shards > self.batch_size:
            raise ValueError(f"shards={self.shards} exceeds batch_size={self.batch_size}; each shard needs >= 1 example")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"Invalid scope={self.scope!r}; expected 'global' or 'layer'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    test_acc: float = float("nan")
    seconds: float = 0.0
    run_dir: Path | None = None


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``(x, y)``."""
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


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, data: ImageDataset | None = None,
          progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` with ``cfg.optimizer``; evaluate on the test split each epoch."""
    from tqdm.auto import tqdm

    cfg.validate()
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    gen = set_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed).to(device)
    opt = build_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, scope=cfg.scope, shards=cfg.shards)
    sharded = uses_shards(cfg.optimizer, cfg.shards)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        write_json(run_dir / "config.json", cfg.to_dict())

    n = data.x_train.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc=f"train {cfg.optimizer}", disable=not progress, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot_loss, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if sharded and idx.numel() < cfg.shards:
                continue  # a tail smaller than m cannot be split into m shards
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)
            opt.zero_grad(set_to_none=True)
            if sharded:
                shard_unit_grad_(model, F.cross_entropy, xb, yb, cfg.shards, scope=cfg.scope)
                with torch.no_grad():
                    loss = F.cross_entropy(model(xb), yb)
            else:
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            bar.update(1)
        acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
        row = {"epoch": epoch, "train_loss": tot_loss / max(seen, 1), "test_loss": test_loss, "test_acc": acc,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(acc=f"{acc:.4f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    if cfg.epochs == 0:
        acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
        history.append({"epoch": 0, "train_loss": float("nan"), "test_loss": test_loss, "test_acc": acc, "seconds": 0.0})
    res = TrainResult(model=model, history=history, test_acc=history[-1]["test_acc"],
                      seconds=time.perf_counter() - t0, run_dir=run_dir)
    if run_dir is not None:
        write_csv(run_dir / "metrics.csv", history)
        write_json(run_dir / "metrics.json", {"test_acc": res.test_acc, "seconds": res.seconds, "history": history})
    return res
