r"""One rank of ``ssgd train --nodes N`` (run by ``torchrun``), on the one training loop.

Every rank runs :func:`train_ddp` with the same :class:`~ssgd.experiments.train.TrainConfig`
(the CLI's options travel as one JSON object, so there is one place where options are
defined). :func:`train_ddp` is :func:`ssgd.experiments.train.fit` with a :class:`DDPEngine`,
so each rank mirrors single-process training step for step:

* the same data (:func:`~ssgd.experiments.train.prepare_data`), seed, model init, batch
  order (one seeded generator, identical on every rank) and learning-rate schedule;
* each global batch of ``batch_size`` examples is split into ``N`` contiguous shards
  (:func:`ssgd.split_shards`), rank ``r`` computes the gradient of shard ``r`` only;
* ``--optimizer ssgd``: the SSGD DDP hook (:func:`ssgd.distributed.register`, the chosen
  ``scope``, ``reduce="sum"``) all-reduces the ranks' unit vectors and a plain
  ``torch.optim.SGD`` steps along their sum. This is exactly single-process
  ``--shards N`` (the paper's SSGD(m) with m = N), now with the shards on N processes:
  same lr, same defaults, same update (up to float rounding);
* other optimizers use DDP's default all-reduce (the gradient mean), the SGD baseline
  (it shares raw gradients: no protection);
* rank 0 evaluates on the test set (and the validation split), writes the run folder
  (``config.json``, ``metrics.json``/``.csv``, ``report.md``) and an atomic
  ``checkpoint.pt`` after every epoch; ``resume=True`` continues from it on every rank
  and reaches the same weights as an uninterrupted run.

What leaves a rank (docs/threat-model.md): its (noised, under ``--dp``) unit vectors,
and control values that carry no training data -- DDP's start-up parameter-shape check
and rank 0's initial model, rank 0's public evaluation row each epoch (a float tensor,
never a pickle), and at the end rank 0's final parameters plus one "replicas identical"
flag per rank. The training loss stays on each rank (``train_loss`` in rank 0's files is
the loss on rank 0's own shards).

Command line (what :func:`run_nodes` starts through :func:`ssgd.distributed.launch.launch_training`)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m ssgd.experiments.ddp_train --config-json '{"model": "mlp", ...}' --run-dir runs/x [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..data import ImageDataset
from ..distributed.ddp import register
from ..loop import backward
from ..shards import split_shards
from .train import CHECKPOINT, TrainConfig, TrainEngine, TrainResult, fit, load_train_checkpoint

__all__ = ["MODULE", "SUPPORTED_OPTIONS", "DDPEngine", "check_config", "check_resume", "train_ddp", "run_nodes",
           "main"]

#: the module torchrun starts on every rank
MODULE = "ssgd.experiments.ddp_train"

#: TrainConfig fields this loop implements; any other field must keep its default.
SUPPORTED_OPTIONS = frozenset({
    "dataset", "data_dir", "model", "optimizer", "scope", "shards", "lr", "momentum", "weight_decay",
    "batch_size", "epochs", "seed", "device", "schedule", "warmup", "val_fraction", "noise_eps",
    "dp", "noise_multiplier", "target_epsilon", "delta", "dp_accountant",  # node-level DP (ssgd.privacy)
})


def check_config(cfg: TrainConfig, nodes: int) -> TrainConfig:
    """Validate ``cfg`` for an ``nodes``-process run; ValueError naming the option otherwise."""
    cfg.validate()
    if nodes < 1:
        raise ValueError(f"Invalid nodes={nodes}; must be >= 1")
    if cfg.shards != 1 and nodes > 1:
        raise ValueError(f"--shards {cfg.shards} with --nodes {nodes}: in multi-node training m is the number of "
                         "nodes (each node shares one unit vector); drop --shards")
    if cfg.batch_size < nodes:
        raise ValueError(f"batch_size={cfg.batch_size} < nodes={nodes}: every node needs >= 1 example per step; "
                         f"use --batch-size >= {nodes}")
    defaults = TrainConfig()
    extra = [f.name for f in dataclasses.fields(cfg)
             if f.name not in SUPPORTED_OPTIONS and getattr(cfg, f.name) != getattr(defaults, f.name)]
    if extra:
        raise ValueError(f"option(s) {extra} are not supported with --nodes > 1 yet; "
                         "run them single-process (--nodes 1) or leave them at their defaults")
    if cfg.dp != "off":
        from ..privacy.training import check_dp_setup

        check_dp_setup(cfg.dp_config(), optimizer=cfg.optimizer, shards=cfg.shards, nodes=nodes)
    return cfg


def check_resume(cfg: TrainConfig, run_dir: str | Path, nodes: int) -> bool:
    """Before any process starts: the run folder's checkpoint (if any) fits ``cfg`` and ``nodes``.

    Returns whether there is a checkpoint to resume from; raises the one-line
    :class:`ssgd.report.CheckpointError` / :class:`ssgd.report.ConfigMismatchError` otherwise."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return False
    load_train_checkpoint(path, cfg, nodes)
    return True


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available; use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(cfg.device)


class DDPEngine(TrainEngine):
    """This rank's part of :func:`~ssgd.experiments.train.fit`: DDP with the SSGD hook, its shard, its DP noise."""

    def __init__(self, group: Any = None, bucket_cap_mb: float | None = None):
        if not dist.is_initialized():
            raise RuntimeError("train_ddp needs an initialised process group; launch it with "
                               "`ssgd train --nodes N` or torchrun (see ssgd.distributed.launch)")
        self.group = group
        self.rank, self.nodes = dist.get_rank(group), dist.get_world_size(group)
        self.src = 0 if group is None else dist.get_global_rank(group, 0)
        self.writes = self.rank == 0
        self.backend = dist.get_backend(group)
        self.bucket_cap_mb = bucket_cap_mb

    def device(self, cfg):
        check_config(cfg, self.nodes)
        self._dev = _device(cfg)
        return self._dev

    def setup(self, cfg, model, n_train, steps_per_epoch):
        self.cfg = cfg
        kw: dict[str, Any] = {"device_ids": [self._dev.index]} if self._dev.type == "cuda" else {}
        kw["process_group"] = self.group
        # BatchNorm running statistics are statistics of this rank's data: they stay on the rank (training-mode
        # BatchNorm uses batch statistics, so the gradients do not depend on them; rank 0 evaluates with its own)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            kw["forward_sync_buffers"] = False  # torch >= 2.13 (still syncs the initial, seeded buffers at start)
        else:
            kw["broadcast_buffers"] = False
        if self.bucket_cap_mb is not None:
            kw["bucket_cap_mb"] = self.bucket_cap_mb
        self.ddp = DistributedDataParallel(model, **kw)
        self.use_hook = cfg.optimizer == "ssgd"
        if cfg.dp != "off":  # ssgd.privacy: every rank adds its noise share to its unit vector before the all-reduce
            from ..privacy.training import ddp_privacy

            self.dp = ddp_privacy(cfg.dp_config(), world=self.nodes, rank=self.rank, model=model,
                                  rounds=steps_per_epoch * cfg.epochs, scope=cfg.scope, seed=cfg.seed)
        if self.use_hook:
            register(self.ddp, scope=cfg.scope, reduce="sum", noise=self.dp)
        # ssgd with shards=N is SGD along the summed unit vectors -- the optimizer of single-process --shards N
        return self.ddp, self.nodes if self.use_hook else 1

    def start_epoch(self, epoch):
        if self.dp is not None:
            self.dp.reseed(epoch)  # the noise stream of an epoch depends on (seed, rank, epoch): resumable

    def batch(self, idx):
        if idx.numel() < self.nodes:
            return None  # a tail smaller than N cannot give every node an example (as with --shards N)
        return idx[split_shards(idx.numel(), self.nodes)[self.rank]]

    def step(self, net, xb, yb, cfg):
        return backward(net, xb, yb)  # the SSGD hook (if registered) all-reduces the unit vectors

    def after_step(self):
        if self.dp is not None:
            self.dp.step()

    def share(self, epoch, row):
        """Rank 0's public evaluation row, broadcast as one float64 tensor (keys fixed by the config: no pickle)."""
        keys = ["epoch", "lr", "test_loss", "test_acc"]
        if self.cfg.val_fraction > 0:
            keys += ["val_acc", "val_loss"]
        if self.dp is not None and epoch > 0:
            keys += ["epsilon", "delta"]
        keys.append("seconds")
        if row is not None and list(row) != keys:
            raise RuntimeError(f"evaluation row keys {list(row)} differ from the shared layout {keys}")  # a bug
        buf = torch.tensor([float(row[k]) for k in keys] if row is not None else [0.0] * len(keys),
                           dtype=torch.float64, device=self._dev)
        dist.broadcast(buf, src=self.src, group=self.group)
        if row is not None:
            return row
        out: dict[str, Any] = dict(zip(keys, buf.tolist()))
        out["epoch"] = int(out["epoch"])
        return out

    def config_extra(self):
        return {"nodes": self.nodes, "backend": self.backend,
                "reduction": "ssgd-hook-sum" if self.use_hook else "ddp-mean"}

    def finish(self, model):
        flat = torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).clone()
        ref = flat.clone()
        dist.broadcast(ref, src=self.src, group=self.group)
        same = torch.tensor([1.0 if torch.equal(flat, ref) else 0.0], device=flat.device)
        dist.all_reduce(same, op=dist.ReduceOp.MIN, group=self.group)
        self.identical = bool(same.item() == 1.0)
        return {"nodes": self.nodes, "backend": self.backend, "replicas_identical": self.identical}


def train_ddp(cfg: TrainConfig, run_dir: str | Path | None = None, *, data: ImageDataset | None = None,
              progress: bool = True, resume: bool = False, stop_after: int | None = None,
              bucket_cap_mb: float | None = None, group: Any = None) -> TrainResult:
    """Train on this rank of an initialised process group; rank 0 writes ``run_dir``.

    Returns the :class:`TrainResult` (the same evaluation rows on every rank; ``train_loss`` is
    this rank's own). ``stop_after`` stops after that many epochs of this call (an interruption,
    for resume tests). ``group``: train on this process group (default: the world); ranks
    outside it must not call this."""
    engine = DDPEngine(group, bucket_cap_mb)
    res = fit(cfg, run_dir, engine=engine, data=data, progress=progress, resume=resume, stop_after=stop_after)
    if not engine.identical:
        raise RuntimeError("the model replicas diverged across ranks (their parameters differ after training); "
                           "this is a bug -- please report it with the run folder")
    return res


def run_nodes(cfg: TrainConfig, run_dir: str | Path, nodes: int, *, resume: bool = False, progress: bool = True,
              timeout: float | None = None, echo: bool = True) -> dict:
    """``ssgd train --nodes N``: check everything a rank would refuse, then start ``nodes`` processes.

    Config, GPUs and (with ``resume``) the checkpoint are checked here, before torchrun starts, so a
    mistake is one line from this process instead of one traceback per rank. Returns metrics.json."""
    from ..distributed.launch import launch_training

    check_config(cfg, nodes)
    if str(cfg.device).startswith("cuda") and torch.cuda.device_count() < nodes:
        raise ValueError(f"--nodes {nodes} on {cfg.device!r} needs {nodes} GPUs (NCCL, one per node), "
                         f"found {torch.cuda.device_count()}; use --device cpu (gloo) or fewer nodes")
    if resume:
        check_resume(cfg, run_dir, nodes)
    return launch_training(cfg.to_dict(), run_dir, nodes, module=MODULE, resume=resume, progress=progress,
                           timeout=timeout, echo=echo)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                 description="One rank of `ssgd train --nodes N` (start it through torchrun).")
    ap.add_argument("--config-json", required=True, help="the TrainConfig as a JSON object")
    ap.add_argument("--run-dir", required=True, help="run folder (rank 0 writes it)")
    ap.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt if present")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def _config(text: str) -> TrainConfig:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config-json is not valid JSON ({e}); pass TrainConfig.to_dict() as JSON") from e
    if not isinstance(d, dict):
        raise ValueError("--config-json must be a JSON object (TrainConfig.to_dict())")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"--config-json has unknown option(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**d)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    @record
    def _run() -> int:
        args = _parse(argv)
        cfg = _config(args.config_json)
        if "RANK" not in os.environ:
            raise RuntimeError(f"{MODULE} must be started by torchrun (RANK is not set); "
                               "use `ssgd train --nodes N ...`")
        use_cuda = cfg.device.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        try:
            train_ddp(cfg, args.run_dir, progress=not args.no_progress, resume=args.resume)
            # every rank done with every collective before any tears the group down: a rank that
            # destroys gloo while a peer still finishes (rank 0 writes the report) can abort at exit
            dist.barrier()
        finally:
            dist.destroy_process_group()
        return 0

    return _run()


if __name__ == "__main__":  # pragma: no cover - run by torchrun
    sys.exit(main())
