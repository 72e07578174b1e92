r"""Per-rank training entry point for ``ssgd train --nodes N`` (run by ``torchrun``).

Every rank runs :func:`train_ddp` with the same :class:`~ssgd.experiments.train.TrainConfig`
(the CLI's options travel as one JSON object, so there is one place where options are
defined). What each rank does mirrors single-process training step for step:

* the same data (:func:`~ssgd.experiments.train.prepare_data`), seed, model init, batch
  order (one seeded generator, identical on every rank) and learning-rate schedule;
* each global batch of ``batch_size`` examples is split into ``N`` contiguous shards
  (:func:`ssgd.split_shards`), rank ``r`` computes the gradient of shard ``r`` only;
* ``--optimizer ssgd``: the SSGD DDP hook (:func:`ssgd.distributed.register`, the chosen
  ``scope``, ``reduce="sum"``) all-reduces the ranks' unit vectors and a plain
  ``torch.optim.SGD`` steps along their sum. This is exactly single-process
  ``--shards N`` (the paper's SSGD(m) with m = N), now with the shards on N processes:
  same lr, same defaults, same update (up to float rounding);
* other optimizers use DDP's default all-reduce (the gradient mean), the SGD baseline;
* rank 0 evaluates, writes the run folder (``config.json``, ``metrics.json``/``.csv``,
  ``report.md``) and an atomic ``checkpoint.pt`` after every epoch; ``resume=True``
  continues from it on every rank and reaches the same weights as an uninterrupted run.

At the end every rank checks that all replicas hold bit-identical parameters
(``replicas_identical`` in ``metrics.json``).

Command line (what :func:`ssgd.distributed.launch.launch_training` runs)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m ssgd.distributed.ddp_train --config-json '{"model": "mlp", ...}' --run-dir runs/x [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from ..data import ImageDataset
from ..models.optimizers import build_optimizer, build_scheduler
from ..experiments.train import (CHECKPOINT, TrainConfig, TrainResult, evaluate, prepare_data,
                                 restore_training_state, set_seed)
from ..models import build_model
from ..report.io import atomic_write_bytes, atomic_write_text, write_csv, write_json
from ..shards import split_shards
from .ddp import register

__all__ = ["SUPPORTED_OPTIONS", "check_config", "train_ddp", "main"]

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
        from ..privacy.training import check_ddp_config

        check_ddp_config(cfg, nodes)
    return cfg


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available; use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(cfg.device)


def _save(path: Path, **state: Any) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, cfg: TrainConfig, world: int) -> dict[str, Any]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    saved, now = dict(ck.get("config", {})), cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in ("device", "epochs") and saved.get(k) != now.get(k))
    if diff:
        raise ValueError(f"Cannot resume from {path}: its config differs in {diff} "
                         f"(saved {[saved.get(k) for k in diff]}, now {[now.get(k) for k in diff]}); "
                         "resume with the same settings or start a new run folder")
    if ck.get("nodes") != world:
        raise ValueError(f"Cannot resume from {path}: it was written by a {ck.get('nodes')}-node run, this one has "
                         f"{world} nodes; resume with --nodes {ck.get('nodes')}")
    if saved.get("epochs") != cfg.epochs:
        raise ValueError(f"Cannot resume from {path} with epochs={cfg.epochs}: it was started with "
                         f"epochs={saved.get('epochs')} (the schedule depends on it); keep --epochs")
    return ck


def _replicas_identical(model: torch.nn.Module, group: Any = None, src: int = 0) -> bool:
    flat = torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).clone()
    ref = flat.clone()
    dist.broadcast(ref, src=src, group=group)
    same = torch.tensor([1.0 if torch.equal(flat, ref) else 0.0], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN, group=group)
    return bool(same.item() == 1.0)


def _report(run_dir: Path, cfg: TrainConfig, world: int, backend: str, res: TrainResult, identical: bool) -> None:
    hook = f"SSGD hook (scope={cfg.scope}, reduce=sum)" if cfg.optimizer == "ssgd" else "DDP default all-reduce"
    lines = [
        f"# ssgd train --nodes {world}", "",
        f"{world} processes ({backend}), {hook}; optimizer `{cfg.optimizer}`, model `{cfg.model}`, "
        f"dataset `{cfg.dataset}`, global batch {cfg.batch_size} ({cfg.batch_size // world}+ per node), "
        f"{cfg.epochs} epochs, seed {cfg.seed}.", "",
        f"- final test accuracy: **{res.test_acc:.4f}**",
        f"- wall time: {res.seconds:.1f} s",
        f"- replicas bit-identical at the end: {identical}", "",
        "Files: [config.json](config.json), [metrics.json](metrics.json), [metrics.csv](metrics.csv), "
        f"[{CHECKPOINT}]({CHECKPOINT}).", "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))


def train_ddp(cfg: TrainConfig, run_dir: str | Path | None = None, *, data: ImageDataset | None = None,
              progress: bool = True, resume: bool = False, stop_after: int | None = None,
              bucket_cap_mb: float | None = None, group: Any = None) -> TrainResult:
    """Train on this rank of an initialised process group; rank 0 writes ``run_dir``.

    Returns the :class:`TrainResult` (same history on every rank). ``stop_after`` stops after
    that many epochs of this call (an interruption, for resume tests). ``group``: train on
    this process group (default: the world); ranks outside it must not call this."""
    from tqdm.auto import tqdm

    if not dist.is_initialized():
        raise RuntimeError("train_ddp needs an initialised process group; launch it with "
                           "`ssgd train --nodes N` or torchrun (see ssgd.distributed.launch)")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    src = 0 if group is None else dist.get_global_rank(group, 0)
    check_config(cfg, world)
    device = _device(cfg)
    data, val = prepare_data(cfg, data)
    gen = set_seed(cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed).to(device)
    n = data.x_train.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    run_dir = Path(run_dir) if run_dir is not None else None
    ck_path = run_dir / CHECKPOINT if run_dir is not None else None

    history: list[dict[str, float]] = []
    start_epoch, elapsed = 1, 0.0
    ck = None
    if resume and ck_path is not None and ck_path.is_file():
        ck = _load_checkpoint(ck_path, cfg, world)
        model.load_state_dict(ck["model"])
    kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
    kw["process_group"] = group
    if bucket_cap_mb is not None:
        kw["bucket_cap_mb"] = bucket_cap_mb
    ddp = DistributedDataParallel(model, **kw)
    use_hook = cfg.optimizer == "ssgd"
    privacy = None
    if cfg.dp != "off":  # ssgd.privacy: every rank adds its noise share to its unit vector before the all-reduce
        from ..privacy.training import ddp_privacy

        privacy = ddp_privacy(cfg, world, rank, model, steps_per_epoch)
    if use_hook:
        register(ddp, scope=cfg.scope, reduce="sum", noise=privacy)
    # ssgd with shards=world is SGD along the summed unit vectors -- the same optimizer as single-process --shards N
    opt = build_optimizer(cfg.optimizer, ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, scope=cfg.scope, shards=world if use_hook else 1)
    sched = build_scheduler(opt, cfg.resolved_schedule, steps_per_epoch * cfg.epochs,
                            int(round(cfg.warmup * steps_per_epoch)))
    if ck is not None:
        history, start_epoch, elapsed = restore_training_state(ck, opt, sched, gen, privacy)
    backend = dist.get_backend(group)
    if run_dir is not None and rank == 0:
        write_json(run_dir / "config.json", {**cfg.to_dict(), "nodes": world, "backend": backend,
                                             "reduction": "ssgd-hook-sum" if use_hook else "ddp-mean"})

    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    t0 = time.perf_counter() - elapsed
    remaining = max(0, cfg.epochs - start_epoch + 1)
    bar = tqdm(total=steps_per_epoch * remaining, desc=f"train {cfg.optimizer} x{world}",
               disable=not progress or rank != 0, leave=False)
    done_here = 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stop_after is not None and done_here >= stop_after:
            break
        ddp.train()
        perm = torch.randperm(n, generator=gen).to(device)
        if privacy is not None:
            privacy.reseed(epoch)  # the noise stream of an epoch depends on (seed, rank, epoch): resumable
        tot = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of loss * examples, examples)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if idx.numel() < world:
                continue  # a tail smaller than N cannot give every node an example (as with --shards N)
            mine = idx[split_shards(idx.numel(), world)[rank]]
            xb, yb = xtr[mine], ytr[mine]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            if privacy is not None:
                privacy.step()
            tot[0] += loss.detach().double() * mine.numel()
            tot[1] += mine.numel()
            bar.update(1)
        dist.all_reduce(tot, group=group)
        row: dict[str, float] | None = None
        if rank == 0:
            acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"],
                   "train_loss": float(tot[0] / tot[1].clamp_min(1)), "test_loss": test_loss, "test_acc": acc}
            if val is not None:
                row["val_acc"], row["val_loss"] = evaluate(model, val.x_test, val.y_test, device=device)
            if privacy is not None:
                row.update(privacy.end_epoch(epoch))  # epsilon per node so far (Opacus accountant)
            row["seconds"] = time.perf_counter() - t0
            bar.set_postfix(acc=f"{acc:.4f}")
        box = [row]
        dist.broadcast_object_list(box, src=src, group=group)
        history.append(box[0])
        done_here += 1
        if rank == 0 and ck_path is not None:
            _save(ck_path, config=cfg.to_dict(), nodes=world, epoch=epoch, model=model.state_dict(),
                  optimizer=opt.state_dict(), scheduler=sched.state_dict(), generator=gen.get_state(),
                  torch_rng=torch.get_rng_state(), history=history, seconds=box[0]["seconds"],
                  dp=privacy.state_dict() if privacy is not None else None)
            write_csv(run_dir / "metrics.csv", history)
    bar.close()
    if not history:
        row = None
        if rank == 0:
            acc, test_loss = evaluate(model, data.x_test, data.y_test, device=device)
            row = {"epoch": 0, "lr": opt.param_groups[0]["lr"], "train_loss": float("nan"),
                   "test_loss": test_loss, "test_acc": acc, "seconds": 0.0}
        box = [row]
        dist.broadcast_object_list(box, src=src, group=group)
        history.append(box[0])
    identical = _replicas_identical(model, group, src)
    res = TrainResult(model=model, history=history, test_acc=history[-1]["test_acc"],
                      seconds=time.perf_counter() - t0, run_dir=run_dir,
                      val_acc=history[-1].get("val_acc", float("nan")),
                      privacy=privacy.summary() if privacy is not None and rank == 0 else None)
    if run_dir is not None and rank == 0:
        if res.privacy is not None:
            write_json(run_dir / "privacy.json", res.privacy)
        write_csv(run_dir / "metrics.csv", history)
        write_json(run_dir / "metrics.json", {"test_acc": res.test_acc, "val_acc": res.val_acc,
                                              "seconds": res.seconds, "epochs_done": history[-1]["epoch"],
                                              "nodes": world, "backend": backend,
                                              "replicas_identical": identical, "history": history})
        _report(run_dir, cfg, world, backend, res, identical)
    if not identical:
        raise RuntimeError("the model replicas diverged across ranks (their parameters differ after training); "
                           "this is a bug -- please report it with the run folder")
    return res


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ssgd.distributed.ddp_train",
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
            raise RuntimeError("ssgd.distributed.ddp_train must be started by torchrun (RANK is not set); "
                               "use `ssgd train --nodes N ...`")
        use_cuda = cfg.device.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        try:
            train_ddp(cfg, args.run_dir, progress=not args.no_progress, resume=args.resume)
        finally:
            dist.destroy_process_group()
        return 0

    return _run()


if __name__ == "__main__":  # pragma: no cover - run by torchrun
    sys.exit(main())
