"""Single-process training on in-memory image data, writing a run folder.

``train(TrainConfig(...), run_dir)`` is what ``ssgd train`` and ``ssgd demo`` call.
Deterministic on CPU for a given seed: the model init, the batch order (a seeded
``torch.Generator``), the validation split, the data noise and the shard split depend
on ``seed`` only.

Checkpoints: with a run folder, ``checkpoint.pt`` (model, optimizer, scheduler, the
batch-order generator and the global RNG state, history) is written atomically after
every epoch; ``train(cfg, run_dir, resume=True)`` continues from it and reaches the
same final weights as an uninterrupted run (bit-identical on CPU).

The per-batch gradient computation is one swappable function, ``grad_fn(model, xb,
yb, cfg) -> loss`` that fills ``.grad`` (default :func:`compute_grads`: plain backward,
or SSGD(m)'s shard unit vectors), so other gradient rules (e.g. DP-SGD) plug in
without touching the loop.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset, load_dataset
from ..models import build_model, evaluate
from ..report.io import atomic_write_bytes, write_csv, write_json
from ..shards import shard_unit_grad_
from ..models.optimizers import SCHEDULES, build_optimizer, build_scheduler, default_schedule, uses_shards

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "set_seed", "compute_grads", "prepare_data",
           "CHECKPOINT", "GradFn", "restore_training_state"]

CHECKPOINT = "checkpoint.pt"
GradFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, "TrainConfig"], torch.Tensor]


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
    schedule: str | None = None  # None: the optimizer's default (cosine for nsgd, else constant)
    warmup: float = 0.0  # linear warm-up length in epochs (fractions allowed)
    val_fraction: float = 0.0  # carve a stratified validation split out of the training set
    noise_eps: float | None = None  # Laplace noise on training pixels at this privacy level (sensitivity 1)
    # differential privacy (ssgd.privacy): "off" | "example" | "node" | "node-local"; sigma or a target epsilon
    dp: str = "off"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    dp_accountant: str = "rdp"  # Opacus accountant: "rdp" | "prv"

    def validate(self) -> "TrainConfig":
        if self.batch_size < 1:
            raise ValueError(f"Invalid batch_size={self.batch_size}; must be >= 1")
        if self.epochs < 0:
            raise ValueError(f"Invalid epochs={self.epochs}; must be >= 0")
        if self.shards > self.batch_size:
            raise ValueError(f"shards={self.shards} exceeds batch_size={self.batch_size}; each shard needs >= 1 example")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"Invalid scope={self.scope!r}; expected 'global' or 'layer'")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule={self.schedule!r}; expected one of {list(SCHEDULES)}")
        if self.warmup < 0:
            raise ValueError(f"Invalid warmup={self.warmup}; must be >= 0 epochs")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"Invalid val_fraction={self.val_fraction}; must be in [0, 1), e.g. 0.1")
        if self.noise_eps is not None and not self.noise_eps > 0:
            raise ValueError(f"Invalid noise_eps={self.noise_eps}; must be > 0 (the paper uses 5, 2, 1)")
        if self.dp != "off" or self.noise_multiplier is not None or self.target_epsilon is not None:
            from ..privacy.training import check_train_config

            check_train_config(self)
        return self

    @property
    def resolved_schedule(self) -> str:
        return self.schedule if self.schedule is not None else default_schedule(self.optimizer)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    test_acc: float = float("nan")
    seconds: float = 0.0
    run_dir: Path | None = None
    val_acc: float = float("nan")
    privacy: dict[str, Any] | None = None  # ssgd.privacy summary (epsilon, sigma, ...) when cfg.dp != "off"


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def compute_grads(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Fill ``.grad`` for one batch and return the batch loss (detached).

    Plain backward of the mean cross-entropy, or for SSGD(m) the sum of the m shards'
    unit vectors (:func:`ssgd.shard_unit_grad_`)."""
    if uses_shards(cfg.optimizer, cfg.shards):
        shard_unit_grad_(model, F.cross_entropy, xb, yb, cfg.shards, scope=cfg.scope)
        with torch.no_grad():
            return F.cross_entropy(model(xb), yb)
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    return loss.detach()


def prepare_data(cfg: TrainConfig, data: ImageDataset | None = None) -> tuple[ImageDataset, ImageDataset | None]:
    """Load (unless given), add training-set noise (``noise_eps``), carve the validation split.

    Returns ``(train_data, val_data)``; ``val_data`` holds the held-out examples in its
    ``x_test``/``y_test`` (``None`` when ``val_fraction == 0``). The test split is untouched."""
    from ..data import train_val_split, with_laplace_noise

    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.noise_eps is not None:
        # noise on the training images only (the validation split, carved from them, is noisy too:
        # a data owner only has the noisy data); the test images stay clean
        data = with_laplace_noise(data, cfg.noise_eps, seed=cfg.seed)
    val = None
    if cfg.val_fraction > 0:
        data, val = train_val_split(data, cfg.val_fraction, seed=cfg.seed)
    return data, val


def _save_checkpoint(path: Path, **state: Any) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    saved = dict(ck.get("config", {}))
    now = cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k != "device" and saved.get(k) != now.get(k))
    if diff:
        raise ValueError(f"Cannot resume from {path}: its config differs in {diff} "
                         f"(saved {[saved.get(k) for k in diff]}, now {[now.get(k) for k in diff]}); "
                         "resume with the same settings or start a new run folder")
    return ck


def restore_training_state(ck: dict[str, Any], opt, sched, gen: torch.Generator, dp=None):
    """Load optimizer, scheduler, batch-order generator, torch RNG and DP state from checkpoint ``ck``
    (the model is the caller's: plain or DDP-wrapped). Returns ``(history, start_epoch, elapsed_seconds)``."""
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    gen.set_state(ck["generator"])
    torch.set_rng_state(ck["torch_rng"])
    if dp is not None:
        dp.load_state_dict(ck["dp"])
    return list(ck["history"]), ck["epoch"] + 1, float(ck.get("seconds", 0.0))


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, data: ImageDataset | None = None,
          progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None,
          resume: bool = False, checkpoint: bool = True, grad_fn: GradFn | None = None,
          stop_after: int | None = None, val: ImageDataset | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` with ``cfg.optimizer``; evaluate each epoch.

    Each epoch records the training loss, test accuracy/loss and, with ``val_fraction > 0``,
    validation accuracy/loss (model selection must use ``val_acc``, never ``test_acc``).
    ``resume=True`` continues from ``run_dir/checkpoint.pt`` when it exists.
    ``stop_after`` stops after that many epochs of this call (simulates an interruption).
    ``val`` (held-out examples in its ``x_test``/``y_test``) is used as given, with ``data``
    taken as already prepared (no noise or split applied again) -- for sweeps that share one split.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    grad_fn = grad_fn or compute_grads
    if val is None:
        data, val = prepare_data(cfg, data)
    gen = set_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed).to(device)
    opt = build_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, scope=cfg.scope, shards=cfg.shards)
    n = data.x_train.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    sched = build_scheduler(opt, cfg.resolved_schedule, steps_per_epoch * cfg.epochs,
                            int(round(cfg.warmup * steps_per_epoch)))
    dp = None
    if cfg.dp != "off":  # ssgd.privacy: Poisson batches / node ownership, noisy unit-vector sums, accountant
        from ..privacy.training import DPTraining

        if grad_fn is not compute_grads:
            raise ValueError("cfg.dp and a custom grad_fn are exclusive: DP computes the gradient itself")
        dp = DPTraining.from_train_config(cfg, model, n)
        grad_fn = dp.grad_fn
    run_dir = Path(run_dir) if run_dir is not None else None
    ck_path = run_dir / CHECKPOINT if run_dir is not None else None
    history: list[dict[str, float]] = []
    start_epoch, elapsed = 1, 0.0
    if resume and ck_path is not None and ck_path.is_file():
        ck = _load_checkpoint(ck_path, cfg)
        model.load_state_dict(ck["model"])
        history, start_epoch, elapsed = restore_training_state(ck, opt, sched, gen, dp)
    if run_dir is not None:
        write_json(run_dir / "config.json", cfg.to_dict())

    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    sharded = uses_shards(cfg.optimizer, cfg.shards)
    t0 = time.perf_counter() - elapsed
    remaining = max(0, cfg.epochs - start_epoch + 1)
    bar = tqdm(total=steps_per_epoch * remaining, desc=f"train {cfg.optimizer}", disable=not progress, leave=False)
    done_here = 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stop_after is not None and done_here >= stop_after:
            break
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        tot_loss, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if dp is not None:
                idx = dp.batch_indices(idx)  # example level: a Poisson-sampled batch
            if sharded and idx.numel() < cfg.shards:
                continue  # a tail smaller than m cannot be split into m shards
            xb, yb = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = grad_fn(model, xb, yb, cfg)
            opt.step()
            sched.step()
            tot_loss += float(loss) * idx.numel()
            seen += idx.numel()
            bar.update(1)
        acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": tot_loss / max(seen, 1),
               "test_loss": test_loss, "test_acc": acc}
        if val is not None:
            row["val_acc"], row["val_loss"] = evaluate(model, val.x_test, val.y_test, device=device)
        if dp is not None:
            row.update(dp.end_epoch(epoch))  # epsilon spent so far (Opacus accountant)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        done_here += 1
        bar.set_postfix(acc=f"{acc:.4f}")
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint and ck_path is not None:
            _save_checkpoint(ck_path, config=cfg.to_dict(), epoch=epoch, model=model.state_dict(),
                             optimizer=opt.state_dict(), scheduler=sched.state_dict(), generator=gen.get_state(),
                             torch_rng=torch.get_rng_state(), history=history, seconds=row["seconds"],
                             dp=dp.state_dict() if dp is not None else None)
    bar.close()
    if not history:
        acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
        row = {"epoch": 0, "lr": opt.param_groups[0]["lr"], "train_loss": float("nan"), "test_loss": test_loss,
               "test_acc": acc}
        if val is not None:
            row["val_acc"], row["val_loss"] = evaluate(model, val.x_test, val.y_test, device=device)
        row["seconds"] = 0.0
        history.append(row)
    res = TrainResult(model=model, history=history, test_acc=history[-1]["test_acc"],
                      seconds=time.perf_counter() - t0, run_dir=run_dir,
                      val_acc=history[-1].get("val_acc", float("nan")),
                      privacy=dp.summary() if dp is not None else None)
    if run_dir is not None:
        write_csv(run_dir / "metrics.csv", history)
        write_json(run_dir / "metrics.json", {"test_acc": res.test_acc, "val_acc": res.val_acc,
                                              "seconds": res.seconds, "epochs_done": history[-1]["epoch"],
                                              "history": history})
        if res.privacy is not None:
            write_json(run_dir / "privacy.json", res.privacy)
    return res
