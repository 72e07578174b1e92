"""Single-process training on in-memory image data, writing a run folder.

``train(TrainConfig(...), run_dir)`` is what ``ssgd train`` and ``ssgd demo`` call.
Deterministic on CPU for a given seed: the model init, the batch order (a seeded
``torch.Generator``), the validation split, the data noise and the shard split depend
on ``seed`` only.

Checkpoints: with a run folder, ``checkpoint.pt`` (model, optimizer, scheduler, the
batch-order generator and the global RNG state, history, DP state) is written atomically
after every epoch with :func:`ssgd.report.save_checkpoint`; ``train(cfg, run_dir,
resume=True)`` continues from it and reaches the same final weights as an uninterrupted
run (bit-identical on CPU). A checkpoint is hostile input: it is loaded as plain data
(``weights_only``) and refused in one line (:class:`ssgd.report.CheckpointError`) when it
is corrupt, foreign, or from another configuration or number of nodes.

:func:`fit` runs the project's one training loop (:func:`ssgd.loop.train_loop`) for every
engine; what differs is a :class:`TrainEngine`: :class:`LocalEngine` (one process: plain
backward, SSGD(m)'s shard unit vectors, or :class:`ssgd.privacy.DPTraining`'s noisy unit
vectors) and ``ssgd.experiments.ddp_train.DDPEngine`` (one rank of a multi-node run). ``fit``
turns the engine into the loop's hooks: the batch source (a seeded permutation, of which the
engine picks this process's part), the gradient path (``engine.step``), evaluation (the
public row, shared by the engine) and the checkpoint. The local engine's gradient is one
swappable function, ``grad_fn(model, xb, yb, cfg) -> loss`` that fills ``.grad`` (default
:func:`compute_grads`), so other gradient rules plug in without touching the loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageDataset, load_dataset
from ..models import MODELS, build_model, evaluate
from ..report.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..report.io import check_same_config, write_csv, write_json
from ..report.validate import bounded_text, check_finite_state, check_number
from ..loop import EpochStats, backward, train_loop
from ..shards import shard_unit_grad_
from ..transform import check_scope
from ..models.optimizers import (DEFAULT_LR, OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler,
                                default_schedule, uses_shards)

__all__ = ["TrainConfig", "TrainResult", "train", "fit", "evaluate", "set_seed", "compute_grads", "prepare_data",
           "CHECKPOINT", "CHECKPOINT_FORMAT", "GradFn", "TrainEngine", "LocalEngine", "load_train_checkpoint"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "ssgd-train"  # the tag ssgd.report.save_checkpoint writes; other files are refused
_CHECKPOINT_KEYS = ("config", "nodes", "epoch", "model", "optimizer", "scheduler", "generator", "torch_rng",
                    "history", "seconds", "dp")
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
        """Every check that needs no data: run before any file is written (ValueError naming the fix)."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; known: {list(OPTIMIZERS)}")
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; known: {sorted(MODELS)}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Invalid lr={self.lr!r}; must be a finite number > 0 "
                             f"(default for {self.optimizer}: {DEFAULT_LR.get(self.optimizer)})")
        if self.momentum is not None and not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ValueError(f"Invalid momentum={self.momentum!r}; must be in [0, 1), e.g. 0.9")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"Invalid weight_decay={self.weight_decay!r}; must be a finite number >= 0, e.g. 1e-4")
        if self.shards < 1:
            raise ValueError(f"Invalid shards={self.shards}; must be >= 1")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ValueError(f"Invalid device={self.device!r}; use cpu or cuda (or cuda:K)")
        if self.batch_size < 1:
            raise ValueError(f"Invalid batch_size={self.batch_size}; must be >= 1")
        if self.epochs < 0:
            raise ValueError(f"Invalid epochs={self.epochs}; must be >= 0")
        if self.shards > self.batch_size:
            raise ValueError(f"shards={self.shards} exceeds batch_size={self.batch_size}; "
                             "each shard needs >= 1 example")
        check_scope(self.scope)
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule={self.schedule!r}; expected one of {list(SCHEDULES)}")
        if self.warmup < 0:
            raise ValueError(f"Invalid warmup={self.warmup}; must be >= 0 epochs")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"Invalid val_fraction={self.val_fraction}; must be in [0, 1), e.g. 0.1")
        if self.noise_eps is not None and not self.noise_eps > 0:
            raise ValueError(f"Invalid noise_eps={self.noise_eps}; must be > 0 (the paper uses 5, 2, 1)")
        if self.dp != "off" or self.noise_multiplier is not None or self.target_epsilon is not None:
            from ..privacy.training import check_dp_setup

            check_dp_setup(self.dp_config(), optimizer=self.optimizer, shards=self.shards)
        if self.shards > 1 and self.optimizer != "ssgd":
            raise ValueError(f"shards={self.shards} only applies to optimizer='ssgd' (got {self.optimizer!r}); "
                             "leave shards at 1")
        return self

    def dp_config(self):
        """The privacy layer's own settings object (:class:`ssgd.privacy.DPConfig`): configs flow down."""
        from ..privacy.training import DPConfig

        return DPConfig(level=self.dp, noise_multiplier=self.noise_multiplier, target_epsilon=self.target_epsilon,
                        delta=self.delta, accountant=self.dp_accountant)

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
    return backward(model, xb, yb)


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




# ---------------------------------------------------------------- checkpoints


def load_train_checkpoint(path: str | Path, cfg: TrainConfig, nodes: int = 1) -> dict[str, Any]:
    """The training checkpoint at ``path``, checked against ``cfg`` and ``nodes`` before anything runs.

    Loaded as plain data (:func:`ssgd.report.load_checkpoint`); a corrupt, truncated, foreign or
    unsafe file raises :class:`ssgd.report.CheckpointError`, one written by other settings
    :class:`ssgd.report.ConfigMismatchError`, both one line naming the file and the fix."""
    ck = load_checkpoint(path, format=CHECKPOINT_FORMAT, required=_CHECKPOINT_KEYS)
    check_same_config(ck["config"], cfg.to_dict(), source=path, ignore=("device",))
    if ck["nodes"] != nodes:
        raise CheckpointError(f"cannot resume from {path}: it was written by a {ck['nodes']}-node run, this one has "
                              f"{nodes} node(s); resume with --nodes {ck['nodes']} or use a new run folder")
    epoch = ck["epoch"]
    if not isinstance(epoch, int) or not 1 <= epoch <= max(cfg.epochs, 1) or not isinstance(ck["history"], list):
        raise CheckpointError(f"refusing checkpoint {path}: its epoch {epoch!r} / history do not fit a "
                              f"{cfg.epochs}-epoch run; move it away to start afresh")
    check_finite_state(ck["model"], what="its model weights", source=f"checkpoint {path}", error=CheckpointError)
    check_number(ck["seconds"], what="its seconds", source=f"checkpoint {path}", low=0.0, error=CheckpointError)
    return ck


# a training history row: what fit() writes (epsilon may be +inf: dp with sigma 0); accuracies in [0, 1], losses,
# lr, epsilon and seconds >= 0, delta in (0, 1) (re-derived on a DP resume: _replay_privacy)
_HISTORY_FIELDS = {"epoch": "int", "lr": "nonneg", "train_loss": "nonneg", "test_loss": "nonneg",
                   "test_acc": "fraction", "val_acc": "fraction", "val_loss": "nonneg", "epsilon": "nonneg?",
                   "delta": "fraction", "seconds": "nonneg"}


def _check_history(path: Path, rows: Any, epoch: int) -> list[dict[str, Any]]:
    """The saved history, field by field (:func:`ssgd.report.check_history`): epochs 1..``epoch`` in order,
    finite numbers (ε may be +inf), no strings, no unknown keys -- nothing unchecked reaches metrics.json."""
    from ..report import ResultFileError, check_history

    if not isinstance(rows, list):
        raise CheckpointError(f"refusing checkpoint {path}: its history is not a list; move it away to start afresh")
    inf = [isinstance(r, dict) and r.get("epsilon") == math.inf for r in rows]
    plain = [{**r, "epsilon": None} if f else r for r, f in zip(rows, inf)]
    try:
        out = check_history(plain, _HISTORY_FIELDS, source=f"checkpoint {path}",
                            required=("epoch", "lr", "train_loss", "test_loss", "test_acc", "seconds"))
    except ResultFileError as e:
        raise CheckpointError(str(e)) from None
    for i, (r, f) in enumerate(zip(out, inf)):
        if f:
            r["epsilon"] = math.inf
        elif "epsilon" in r and r["epsilon"] is None:
            raise CheckpointError(f"refusing checkpoint {path}: history row {i} field 'epsilon' is None; "
                                  "move it away to start afresh")
    if [r["epoch"] for r in out] != list(range(1, epoch + 1)):
        raise CheckpointError(f"refusing checkpoint {path}: its history does not hold epochs 1..{epoch} in order; "
                              "move it away to start afresh")
    return out


def releases_per_epoch(n_train: int, batch_size: int, min_batch: int = 1) -> int:
    """The noisy releases (optimizer steps) of one epoch: one per batch of the epoch's permutation, except a
    tail smaller than ``min_batch`` (the shards ``m`` or the DDP nodes: it cannot give each one an example),
    which the engines skip."""
    return n_train // batch_size + (1 if n_train % batch_size >= max(1, min_batch) else 0)


def _replay_privacy(path: Path, dp, epoch: int, releases: int, history: list[dict[str, Any]]) -> None:
    """The DP accountant of a resumed run, re-derived from this run's settings and the ``epoch`` epochs it
    completed (``releases`` per epoch) -- never taken from the checkpoint, whose accountant may be rewound
    (a smaller published ε). The checkpoint's per-epoch ε/δ in the history must be exactly those."""
    rows = dp.accountant.replay(releases, epoch)
    for got, want in zip(history, rows):
        for k in ("epsilon", "delta"):
            if k not in got or not (got[k] == want[k] or math.isclose(got[k], want[k], rel_tol=1e-9)):
                raise CheckpointError(f"refusing checkpoint {path}: its epoch {got['epoch']} {k} "
                                      f"{bounded_text(repr(got.get(k)), 40)} is not the {want[k]:.6g} that "
                                      f"{got['epoch']} epoch(s) of this run spend; move it away to start afresh")


def _restore(path: Path, ck: dict[str, Any], model: nn.Module, opt, sched, gen: torch.Generator, dp,
             releases: int) -> tuple:
    """Load every state of ``ck``; any shape or type that does not fit is a one-line CheckpointError. The DP
    accountant is re-derived (``releases`` per completed epoch, :func:`_replay_privacy`), not loaded."""
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        history = _check_history(path, ck["history"], ck["epoch"])
        if dp is not None:
            dp.load_state_dict(ck["dp"])  # its random streams (sampler, noise)
            _replay_privacy(path, dp, ck["epoch"], releases, history)
        seconds = float(ck["seconds"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"refusing checkpoint {path}: its state does not fit this model/optimizer "
                              f"({type(e).__name__}: {first}); move it away to start afresh") from None
    return history, ck["epoch"] + 1, seconds


# ---------------------------------------------------------------- engines


class TrainEngine:
    """What :func:`fit` asks of an engine (one process, or one rank of a multi-node run).

    ``nodes``: processes in the run (1 here); ``writes``: this process writes the run
    folder and evaluates (rank 0); ``dp``: the privacy object (``state_dict``,
    ``load_state_dict``, ``end_epoch``, ``summary``) or ``None``."""

    nodes: int = 1
    writes: bool = True
    dp: Any = None

    def device(self, cfg: TrainConfig) -> torch.device:
        return torch.device(cfg.device)

    def setup(self, cfg: TrainConfig, model: nn.Module, n_train: int, steps_per_epoch: int) -> tuple[nn.Module, int]:
        """Return ``(net, shards)``: the module to train through, the ``shards`` for the optimizer."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        pass

    def batch(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The indices this process trains on in this step (``None``: skip the step)."""
        return idx

    def step(self, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        """Fill ``.grad`` for one batch; return the batch's mean loss (stays in this process)."""
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def share(self, epoch: int, row: dict[str, Any] | None) -> dict[str, Any]:
        """The evaluation row of ``epoch`` on every process (public values only: no training data);
        ``row`` is ``None`` on processes that do not evaluate."""
        assert row is not None
        return row

    def config_extra(self) -> dict[str, Any]:
        return {}

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Extra entries of metrics.json (collective: every process calls it)."""
        return {}

    def report(self, run_dir: Path, cfg: TrainConfig, res: "TrainResult", extra: dict[str, Any]) -> None:
        pass


class LocalEngine(TrainEngine):
    """One process: ``grad_fn`` (plain backward or SSGD(m)'s shard unit vectors), or the DP glue."""

    def __init__(self, grad_fn: GradFn | None = None):
        self.grad_fn = grad_fn or compute_grads
        self.custom = grad_fn is not None and grad_fn is not compute_grads

    def setup(self, cfg, model, n_train, steps_per_epoch):
        self.sharded = uses_shards(cfg.optimizer, cfg.shards)
        self.shards = cfg.shards
        if cfg.dp != "off":  # ssgd.privacy: Poisson batches / node ownership, noisy unit-vector sums, accountant
            from ..privacy.training import DPTraining

            if self.custom:
                raise ValueError("cfg.dp and a custom grad_fn are exclusive: DP computes the gradient itself")
            self.dp = DPTraining(cfg.dp_config(), model, n_train, cfg.batch_size, cfg.epochs, num_nodes=cfg.shards,
                                 scope=cfg.scope, seed=cfg.seed)
        return model, cfg.shards

    def batch(self, idx):
        if self.dp is not None:
            idx = self.dp.batch_indices(idx)  # example level: a Poisson-sampled batch
        if self.sharded and idx.numel() < self.shards:
            return None  # a tail smaller than m cannot be split into m shards
        self.idx = idx
        return idx

    def step(self, net, xb, yb, cfg):
        if self.dp is not None:  # node level needs the indices: which node owns which example
            return self.dp.backward(net, xb, yb, self.idx)
        return self.grad_fn(net, xb, yb, cfg)


# ---------------------------------------------------------------- the run


def fit(cfg: TrainConfig, run_dir: str | Path | None = None, *, engine: TrainEngine | None = None,
        data: ImageDataset | None = None, val: ImageDataset | None = None, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None, resume: bool = False, checkpoint: bool = True,
        stop_after: int | None = None) -> TrainResult:
    """Train through the one loop (:func:`ssgd.loop.train_loop`) with ``engine``'s hooks (see :func:`train` for the
    arguments); ``engine`` defaults to :class:`LocalEngine`."""
    from tqdm.auto import tqdm

    cfg.validate()
    engine = engine or LocalEngine()
    if val is None:
        data, val = prepare_data(cfg, data)
    gen = set_seed(cfg.seed)
    device = engine.device(cfg)
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed).to(device)
    n = data.x_train.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    run_dir = Path(run_dir) if run_dir is not None else None
    ck_path = run_dir / CHECKPOINT if run_dir is not None else None
    ck = None
    if resume and ck_path is not None and ck_path.exists():
        ck = load_train_checkpoint(ck_path, cfg, engine.nodes)  # checked before the model is touched
    net, opt_shards = engine.setup(cfg, model, n, steps_per_epoch)
    opt = build_optimizer(cfg.optimizer, net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, scope=cfg.scope, shards=opt_shards)
    sched = build_scheduler(opt, cfg.resolved_schedule, steps_per_epoch * cfg.epochs,
                            int(round(cfg.warmup * steps_per_epoch)))
    dp = engine.dp
    history: list[dict[str, float]] = []
    start_epoch, elapsed = 1, 0.0
    if ck is not None:
        history, start_epoch, elapsed = _restore(ck_path, ck, model, opt, sched, gen, dp,
                                                 releases_per_epoch(n, cfg.batch_size, max(cfg.shards, engine.nodes)))
    writes = run_dir is not None and engine.writes
    if writes:  # the values actually used: the optimizer's lr and momentum (defaults resolved), the schedule
        group = opt.param_groups[0]
        used = {"lr": group["initial_lr"], "momentum": group.get("momentum"), "schedule": cfg.resolved_schedule}
        write_json(run_dir / "config.json", {**cfg.to_dict(), **used, **engine.config_extra()})

    def public_row(epoch: int) -> dict[str, Any]:
        """What is evaluated on the test set / validation split: public values, no training data."""
        row: dict[str, Any] | None = None
        if engine.writes:
            acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "test_loss": test_loss, "test_acc": acc}
            if val is not None:
                row["val_acc"], row["val_loss"] = evaluate(model, val.x_test, val.y_test, device=device)
            if dp is not None and epoch > 0:
                row.update(dp.end_epoch(epoch))  # epsilon spent so far (Opacus accountant)
            row["seconds"] = time.perf_counter() - t0 if epoch > 0 else 0.0
        return engine.share(epoch, row)

    def full_row(pub: dict[str, Any], train_loss: float) -> dict[str, Any]:
        # train_loss: this process's own examples; it never leaves the process
        return {"epoch": pub["epoch"], "lr": pub["lr"], "train_loss": train_loss,
                **{k: v for k, v in pub.items() if k not in ("epoch", "lr")}}

    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    t0 = time.perf_counter() - elapsed
    remaining = max(0, cfg.epochs - start_epoch + 1)
    tag = f"train {cfg.optimizer}" + (f" x{engine.nodes}" if engine.nodes > 1 else "")
    bar = tqdm(total=steps_per_epoch * remaining, desc=tag, disable=not progress or not engine.writes, leave=False)

    def batches(epoch: int):  # a seeded permutation in batches; the engine picks this process's part
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, cfg.batch_size):
            idx = engine.batch(perm[i:i + cfg.batch_size])
            if idx is not None:
                yield xtr[idx], ytr[idx]

    def after_step() -> None:
        engine.after_step()
        bar.update(1)

    def end_epoch(epoch: int, stats: EpochStats) -> dict[str, Any]:
        check_finite = getattr(opt, "check_finite", None)
        if check_finite is not None:  # a GPU step raises a NaN's error later: surface the last steps' errors now
            check_finite()
        return full_row(public_row(epoch), stats.train_loss)

    def epoch_done(row: dict[str, Any]) -> None:
        bar.set_postfix(acc=f"{row['test_acc']:.4f}")
        if on_epoch is not None:
            on_epoch(row)

    def save(epoch: int, history: list[dict[str, Any]]) -> None:
        save_checkpoint(ck_path, {"config": cfg.to_dict(), "nodes": engine.nodes, "epoch": epoch,
                                  "model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "scheduler": sched.state_dict(), "generator": gen.get_state(),
                                  "torch_rng": torch.get_rng_state(), "history": history,
                                  "seconds": history[-1]["seconds"], "dp": dp.state_dict() if dp is not None else None},
                        format=CHECKPOINT_FORMAT)
        write_csv(run_dir / "metrics.csv", history)

    train_loop(net, opt, batches, epochs=cfg.epochs, grad=lambda m, x, y: engine.step(m, x, y, cfg),
               scheduler=sched, start_epoch=start_epoch, history=history, stop_after=stop_after,
               before_epoch=engine.start_epoch, after_step=after_step, end_epoch=end_epoch, on_epoch=epoch_done,
               checkpoint=save if writes and checkpoint else None)
    bar.close()
    if not history:
        history.append(full_row(public_row(0), float("nan")))
    extra = engine.finish(model)
    res = TrainResult(model=model, history=history, test_acc=history[-1]["test_acc"],
                      seconds=time.perf_counter() - t0, run_dir=run_dir,
                      val_acc=history[-1].get("val_acc", float("nan")),
                      privacy=dp.summary() if dp is not None and engine.writes else None)
    if writes:
        if res.privacy is not None:
            write_json(run_dir / "privacy.json", res.privacy)
        write_csv(run_dir / "metrics.csv", history)
        write_json(run_dir / "metrics.json", {"test_acc": res.test_acc, "val_acc": res.val_acc,
                                              "seconds": res.seconds, "epochs_done": history[-1]["epoch"],
                                              **extra, "history": history})
        engine.report(run_dir, cfg, res, extra)
    return res


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, data: ImageDataset | None = None,
          progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None,
          resume: bool = False, checkpoint: bool = True, grad_fn: GradFn | None = None,
          stop_after: int | None = None, val: ImageDataset | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` with ``cfg.optimizer`` in this process; evaluate each epoch.

    Each epoch records the training loss, test accuracy/loss and, with ``val_fraction > 0``,
    validation accuracy/loss (model selection must use ``val_acc``, never ``test_acc``).
    ``resume=True`` continues from ``run_dir/checkpoint.pt`` when it exists.
    ``stop_after`` stops after that many epochs of this call (simulates an interruption).
    ``val`` (held-out examples in its ``x_test``/``y_test``) is used as given, with ``data``
    taken as already prepared (no noise or split applied again) -- for sweeps that share one split.
    """
    return fit(cfg, run_dir, engine=LocalEngine(grad_fn), data=data, val=val, progress=progress,
               on_epoch=on_epoch, resume=resume, checkpoint=checkpoint, stop_after=stop_after)
