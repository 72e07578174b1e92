"""DDP training-step benchmark: the SSGD communication hook vs DDP's default all-reduce.

Same model, same per-rank batch, same optimizer (plain SGD), N gloo processes on this
machine (2 by default). Every variant has its own DDP model (from the same init) inside
the same processes; the variants are timed step by step, interleaved (A B C D, B C D A,
...), after a barrier, so that load drift on a shared machine hits them alike. A step is
forward + backward (with the hook's all-reduce) + ``opt.step()``; its time is the slowest
rank's. Printed: the median step time and steps/s per variant and the ratio of medians to
DDP's default (target >= 0.95x), plus the ratio of 25th percentiles (less sensitive to
bursts of load from other processes).

Variants: ``ddp-default`` (no hook: DDP's built-in C++ all-reduce), ``py-allreduce``
(PyTorch's Python ``allreduce_hook``: the cost of a Python hook alone), ``ssgd-global``
and ``ssgd-layer`` (:func:`ssgd.distributed.register`).

    OMP_NUM_THREADS=1 python benchmarks/ddp_step.py                 # convnet, batch 64 per rank
    OMP_NUM_THREADS=1 python benchmarks/ddp_step.py --model resnet18 --batch 16 --steps 5
    OMP_NUM_THREADS=1 python benchmarks/ddp_step.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

VARIANTS = ("ddp-default", "py-allreduce", "ssgd-global", "ssgd-layer")
SHAPES = {"convnet": (1, 28, 28), "mlp": (1, 28, 28), "lenet": (1, 28, 28), "resnet18": (3, 32, 32)}


def _worker(rank: int, world: int, store: str, args: argparse.Namespace, out_path: str) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ssgd.distributed import register
    from ssgd.models import build_model

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    shape = SHAPES[args.model]
    g = torch.Generator().manual_seed(rank)
    x = torch.rand(args.batch, *shape, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)

    models, opts = {}, {}
    for v in args.variants:
        net = build_model(args.model, shape, 10, seed=0)
        ddp = DDP(net, bucket_cap_mb=args.bucket_cap_mb)
        if v == "py-allreduce":
            ddp.register_comm_hook(None, allreduce_hook)
        elif v.startswith("ssgd-"):
            register(ddp, scope=v.split("-", 1)[1])
        models[v], opts[v] = ddp, torch.optim.SGD(ddp.parameters(), lr=1e-3)

    def step(v: str) -> None:
        ddp, opt = models[v], opts[v]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()

    for v in args.variants:  # warm-up (includes DDP's bucket rebuild after the first step)
        for _ in range(args.warmup):
            step(v)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    k = len(args.variants)
    for s in range(args.steps):  # interleaved step by step, rotating the order
        for v in args.variants[s % k:] + args.variants[:s % k]:
            dist.barrier()
            t0 = time.perf_counter()
            step(v)
            times[v].append(time.perf_counter() - t0)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, times)
    if rank == 0:
        slowest = {v: [max(t[v][i] for t in gathered) for i in range(args.steps)] for v in args.variants}
        with open(out_path, "w") as fh:
            json.dump(slowest, fh)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="convnet", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=64, help="examples per rank per step")
    ap.add_argument("--world", type=int, default=2, help="number of processes")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant (interleaved)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP bucket size (default: DDP's)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if "ddp-default" not in args.variants:
        args.variants = ["ddp-default"] + args.variants
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        mp.spawn(_worker, args=(args.world, os.path.join(tmp, "store"), args, out), nprocs=args.world)
        with open(out) as fh:
            times = json.load(fh)
    from ssgd.models import build_model

    n_params = sum(p.numel() for p in build_model(args.model, SHAPES[args.model], 10).parameters())
    print(f"DDP step: {args.model} ({n_params / 1e6:.2f}M params), batch {args.batch}/rank, {args.world} gloo "
          f"ranks, {args.threads} thread(s)/rank, bucket {args.bucket_cap_mb} MB, {args.steps} interleaved steps "
          f"per variant, torch {torch.__version__}")
    print(f"{'variant':<14}{'ms/step (median)':>18}{'steps/s':>10}{'ratio vs ddp-default':>23}{'ratio (p25)':>13}")
    summary = {}
    base = statistics.median(times["ddp-default"])
    base25 = statistics.quantiles(times["ddp-default"], n=4)[0]
    for v in args.variants:
        med, p25 = statistics.median(times[v]), statistics.quantiles(times[v], n=4)[0]
        summary[v] = {"ms_per_step": 1e3 * med, "steps_per_s": 1.0 / med, "ratio": base / med, "ratio_p25": base25 / p25}
        print(f"{v:<14}{1e3 * med:>18.1f}{1.0 / med:>10.2f}{base / med:>22.3f}x{base25 / p25:>12.3f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": vars(args), "params": n_params, "step_seconds": times, "summary": summary}, fh, indent=2)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
