"""Worker side of tests/distributed/test_ddp.py: one ``torch.multiprocessing.spawn`` of 3 gloo
processes runs every multi-process check and saves what it observed; the test functions
assert on those files. (One spawn instead of many keeps the suite within its time budget:
starting a process that imports torch costs seconds on a busy machine.)

World sizes 3 (the world) and 2 (a subgroup of ranks 0 and 1) are both exercised.
"""

from __future__ import annotations

import math
import os
import traceback
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = ["WORLD", "AUDIT_WORLD", "make_model", "make_data", "local_batch", "train_configs", "audit_configs",
           "spawn", "run_all", "run_audit"]

WORLD = 3
SMALL_CAP_MB = 0.001  # ~1 KB buckets: after its first step DDP spreads the model below over 4 buckets


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 48), nn.Tanh(), nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 24),
                         nn.Tanh(), nn.Linear(24, 5))


def local_batch(rank: int, it: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * it + rank)
    return torch.randn(n, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def make_data():
    """A small learnable synthetic image task (fast; no files)."""
    from ssgd.data import ImageDataset

    g = torch.Generator().manual_seed(7)
    w = torch.randn(64, 4, generator=g)
    x = torch.rand(300, 1, 8, 8, generator=g)
    y = (x.reshape(300, -1) @ w).argmax(1)
    return ImageDataset("synthetic", x[:240], y[:240], x[240:], y[240:], 4)


def train_configs():
    from ssgd.experiments.train import TrainConfig

    ssgd_cfg = TrainConfig(dataset="synthetic", model="mlp", optimizer="ssgd", scope="global", lr=0.2, momentum=0.9,
                           weight_decay=1e-4, schedule="cosine", batch_size=48, epochs=2, seed=3)
    sgd_cfg = TrainConfig(dataset="synthetic", model="mlp", optimizer="sgd", lr=0.1, batch_size=48, epochs=2, seed=3)
    layer_cfg = TrainConfig(dataset="synthetic", model="mlp", optimizer="ssgd", scope="layer", lr=0.1,
                            batch_size=48, epochs=1, seed=4)
    return {"ssgd": ssgd_cfg, "sgd": sgd_cfg, "ssgd_layer": layer_cfg}


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _hook_case(rank, group, scope, reduce, cap, as_view, iters=3):
    """DDP with the SSGD hook vs a plain replica on the same local batch: what each rank sees."""
    from ssgd.distributed import register

    net = make_model()
    ref = make_model()
    ddp = DDP(net, process_group=group, bucket_cap_mb=cap, gradient_as_bucket_view=as_view)
    state = register(ddp, scope=scope, reduce=reduce)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    out = {"local": [], "reduced": [], "buckets": [], "norms": []}
    for it in range(iters):
        ref.load_state_dict(net.state_dict())
        x, y = local_batch(rank, it)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        ref.zero_grad(set_to_none=True)
        F.cross_entropy(ref(x), y).backward()
        out["local"].append(_grads(ref))
        out["reduced"].append(_grads(net))
        out["buckets"].append(state.num_buckets)
        out["norms"].append(list(state.last_norms))
        opt.step()
    out["steps"] = state.steps
    return out


def _allreduce_case(rank, group, scope, reduce):
    from ssgd.distributed import allreduce_unit_

    ref = make_model()
    x, y = local_batch(rank, 7)
    F.cross_entropy(ref(x), y).backward()
    local = _grads(ref)
    norms = allreduce_unit_(ref.named_parameters(), scope, group, reduce=reduce)
    return {"local": local, "reduced": _grads(ref), "norms": norms}


def _nan_case(rank, bad_rank, scope, nonfinite, param_index, use_ddp=True):
    """Rank ``bad_rank`` gets NaN in one parameter's local gradient."""
    from ssgd.distributed import allreduce_unit_, register

    net = make_model()
    ref = make_model()
    x, y = local_batch(rank, 11)
    if rank == bad_rank:
        p = list(net.parameters())[param_index]
        p.register_hook(lambda g: torch.full_like(g, math.nan))
    F.cross_entropy(ref(x), y).backward()
    res = {"local": _grads(ref)}
    try:
        if use_ddp:
            ddp = DDP(net, bucket_cap_mb=SMALL_CAP_MB)
            state = register(ddp, scope=scope, nonfinite=nonfinite)
            # skip: the second step runs on the rebuilt (several) buckets; raise: the failing rank leaves
            # after the first step and a launcher would stop the others (here: they stop too)
            for _ in range(2 if nonfinite == "skip" else 1):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(ddp(x), y).backward()
            res["skipped"] = state.skipped
        else:
            F.cross_entropy(net(x), y).backward()
            allreduce_unit_(net.parameters(), scope, nonfinite=nonfinite)
        res["reduced"] = _grads(net)
        res["error"] = None
    except Exception as e:  # noqa: BLE001 - the test inspects it
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def _train_cases(rank, tmp: Path):
    from ssgd.experiments.ddp_train import train_ddp

    data = make_data()
    cfgs = train_configs()
    out = {}
    for name, cfg in cfgs.items():
        res = train_ddp(cfg, tmp / f"run-{name}", data=data, progress=False)
        out[name] = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
        out[name + "_history"] = res.history
    # interrupted after one epoch, then resumed to the end, in a fresh DDP model
    cfg = cfgs["ssgd"]
    train_ddp(cfg, tmp / "run-resume", data=data, progress=False, stop_after=1)
    res = train_ddp(cfg, tmp / "run-resume", data=data, progress=False, resume=True)
    out["resumed"] = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
    out["resumed_history"] = res.history
    return out


def _train_pair_cases(rank, pair, tmp: Path):
    """The same on 2 ranks (a subgroup): straight vs interrupted + resumed."""
    from ssgd.experiments.ddp_train import train_ddp

    data = make_data()
    cfg = train_configs()["ssgd"]
    full = train_ddp(cfg, tmp / "pair-full", data=data, progress=False, group=pair)
    train_ddp(cfg, tmp / "pair-resume", data=data, progress=False, stop_after=1, group=pair)
    res = train_ddp(cfg, tmp / "pair-resume", data=data, progress=False, resume=True, group=pair)
    return {"full": {k: v.detach().clone() for k, v in full.model.state_dict().items()},
            "resumed": {k: v.detach().clone() for k, v in res.model.state_dict().items()}}


def spawn(worker: Callable[[int, int, str, str], None], world: int, out: Path, name: str) -> list[dict]:
    """``worker(rank, world, store, out_dir)`` in ``world`` spawned processes (gloo over the loopback unless
    GLOO_SOCKET_IFNAME says otherwise); what each rank saved, ``out/<name><rank>.pt``, by rank."""
    env_before = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        mp.spawn(worker, args=(world, str(out / "store"), str(out)), nprocs=world, join=True)
    finally:
        if env_before is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
    return [torch.load(out / f"{name}{r}.pt", weights_only=False) for r in range(world)]


def _as_rank(rank: int, world: int, store: str, saved: Path, cases: Callable[[dict], None]) -> None:
    """Join the gloo group (one thread), let ``cases`` fill the results, save them to ``saved`` (also after a
    crash, with its traceback, before re-raising it), leave the group."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    res: dict = {}
    try:
        cases(res)
    except Exception:  # noqa: BLE001 - saved for the test to print, then re-raised
        res["crash"] = traceback.format_exc()
        torch.save(res, saved)
        raise
    torch.save(res, saved)
    dist.barrier()
    dist.destroy_process_group()


def run_all(rank: int, world: int, store: str, out_dir: str) -> None:
    _as_rank(rank, world, store, Path(out_dir) / f"rank{rank}.pt", partial(_all_cases, rank, Path(out_dir)))


def _all_cases(rank: int, out_dir: Path, res: dict) -> None:
    """Every multi-process check of test_ddp.py on this rank."""
    # a fresh interpreter: importing ssgd.distributed must stay lazy and never pull in flwr
    import sys

    import ssgd.distributed as sd

    imp = {"lazy": "ssgd.distributed.ddp" not in sys.modules, "flwr_after_import": "flwr" in sys.modules,
           "all": list(sd.__all__)}
    sd.register, sd.allreduce_unit_, sd.launch_training  # noqa: B018 - resolve the lazy exports
    imp["flwr_after_use"] = "flwr" in sys.modules
    res["import"] = imp
    pair = dist.new_group([0, 1])
    groups = {3: None, 2: pair}
    for size, group in groups.items():
        if rank >= size:
            continue
        for scope in ("global", "layer"):
            for cap_name, cap in (("one", 25.0), ("many", SMALL_CAP_MB)):
                res[("hook", size, scope, "mean", cap_name, False)] = _hook_case(rank, group, scope, "mean",
                                                                                 cap, False)
            res[("hook", size, scope, "sum", "many", True)] = _hook_case(rank, group, scope, "sum",
                                                                         SMALL_CAP_MB, True)
            res[("allreduce", size, scope, "mean")] = _allreduce_case(rank, group, scope, "mean")
    res["train"] = _train_cases(rank, out_dir)
    if rank < 2:
        res["train_pair"] = _train_pair_cases(rank, pair, out_dir)
    # non-finite: skip, then raise (last, since a raise leaves that DDP model unusable)
    for scope in ("global", "layer"):
        res[("nan", scope, "skip")] = _nan_case(rank, 2, scope, "skip", param_index=2)
    for scope in ("global", "layer"):
        res[("nan", scope, "raise")] = _nan_case(rank, 1, scope, "raise", param_index=2)
    res[("nan", "allreduce", "raise")] = _nan_case(rank, 1, "global", "raise", 2, use_ddp=False)


# ---------------------------------------------------------------- leak audit (tests/distributed/test_ddp_audit.py)

AUDIT_WORLD = 2
_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter",
                "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter", "send", "isend",
                "broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
                "send_object_list")


def audit_configs():
    from ssgd.experiments.train import TrainConfig

    base = dict(dataset="synthetic", model="mlp", optimizer="ssgd", lr=0.1, batch_size=48, epochs=1, seed=2,
                val_fraction=0.2)
    return {"global": TrainConfig(**base, scope="global"),
            "layer": TrainConfig(**base, scope="layer"),
            "dp-node-global": TrainConfig(**base, scope="global", dp="node", noise_multiplier=0.8),
            "dp-node-layer": TrainConfig(**base, scope="layer", dp="node", noise_multiplier=0.8),
            "dp-local-layer": TrainConfig(**base, scope="layer", dp="node-local", noise_multiplier=0.5),
            "batchnorm": TrainConfig(**{**base, "model": "audit-bn"}, scope="global")}


def _register_bn_model() -> None:
    """A tiny model with BatchNorm buffers (running statistics of a rank's own data)."""
    from ssgd.models import MODELS, register_model

    if "audit-bn" not in MODELS:
        register_model("audit-bn")(lambda shape, num_classes, **kw: nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, num_classes)))


def _audit_case(rank, cfg, run_dir):
    """Train with every torch.distributed collective wrapped: record what this rank sends, step by step."""
    from ssgd import unit
    from ssgd.experiments import ddp_train as D

    log: list = []
    originals = {name: getattr(dist, name) for name in _COLLECTIVES if hasattr(dist, name)}

    def wrap(name, fn):
        def spy(*args, **kwargs):
            payload = args[0] if args else kwargs.get("tensor", kwargs.get("object_list"))
            sent = payload.detach().clone() if isinstance(payload, torch.Tensor) else repr(payload)
            log.append({"op": name, "sent": sent, "src": kwargs.get("src", args[1] if len(args) > 1 else None)
                        if name == "broadcast" else None})
            return fn(*args, **kwargs)
        return spy

    engine_step, engine_setup = D.DDPEngine.step, D.DDPEngine.setup

    def step(self, net, xb, yb, cfg_):
        params = [p for p in net.module.parameters()]
        bufs = [b.detach().clone() for b in net.module.buffers()]
        ref = torch.autograd.grad(F.cross_entropy(net.module(xb), yb), params)  # no .grad, no DDP hook
        for b, saved in zip(net.module.buffers(), bufs):  # the reference pass must not move BatchNorm statistics
            b.copy_(saved)
        entry = {"op": "step", "unit": [u.detach().clone() for u in unit(list(ref), cfg_.scope)],
                 "n_tensors": len(params)}
        bn = [m for m in net.module.modules() if isinstance(m, nn.BatchNorm1d)]
        if bn:  # this rank's running mean before the step, and the mean of its own BatchNorm input
            with torch.no_grad():
                entry["bn_before"] = bn[0].running_mean.clone()
                entry["bn_batch_mean"] = net.module[1](net.module[0](xb)).mean(0)
        log.append(entry)
        out = engine_step(self, net, xb, yb, cfg_)
        if bn:
            entry["bn_after"] = bn[0].running_mean.clone()
        return out

    def setup(self, cfg_, model, n, spe):
        out = engine_setup(self, cfg_, model, n, spe)
        if self.dp is not None:  # record each noise addition: the buffers before and after this rank's noise
            add = self.dp.add_

            def noisy_add(tensors, scale=1.0):
                before = [t.detach().clone() for t in tensors]
                res = add(tensors, scale)
                log.append({"op": "noise", "before": before, "after": [t.detach().clone() for t in tensors],
                            "std": self.dp.noise.std * scale})
                return res
            self.dp.add_ = noisy_add
        return out

    for name, fn in originals.items():
        setattr(dist, name, wrap(name, fn))
    D.DDPEngine.step, D.DDPEngine.setup = step, setup
    try:
        res = D.train_ddp(cfg, run_dir, data=make_data(), progress=False)
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
        D.DDPEngine.step, D.DDPEngine.setup = engine_step, engine_setup
    final = torch.nn.utils.parameters_to_vector([p.detach() for p in res.model.parameters()]).clone()
    buffers = {k: v.detach().clone() for k, v in res.model.state_dict().items() if "running" in k}
    return {"log": log, "history": res.history, "final": final, "buffers": buffers}


def run_audit(rank: int, world: int, store: str, out_dir: str) -> None:
    _as_rank(rank, world, store, Path(out_dir) / f"audit{rank}.pt", partial(_audit_cases, rank, Path(out_dir)))


def _audit_cases(rank: int, out_dir: Path, res: dict) -> None:
    _register_bn_model()
    for name, cfg in audit_configs().items():
        res[name] = _audit_case(rank, cfg, out_dir / f"audit-{name}")
