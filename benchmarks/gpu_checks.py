"""GPU checks that ``ssgd bench step`` does not cover, for ``benchmarks/gpu.sh``.

* ``whole-step``: forward + backward + step on a real model (ResNet-18 on 32x32 images,
  batch 256; the MLP of Table 2, batch 1024), SGD against SSGD, alternating, fastest of
  many samples; plus the host synchronisations of three whole training steps of each,
  counted with ``torch.cuda.set_sync_debug_mode("warn")``, split into zero_grad + forward +
  backward and ``opt.step()``, with the source lines that made them (a sync in the model's
  forward or backward is SGD's too, and not the optimizer's); and the kernels an SSGD step
  is made of (``_foreach_norm``, the joint norm, torch's fused SGD kernel in its three forms,
  the per-tensor division of layer scope) timed alone next to SGD(foreach)'s at 11.7M, 124M
  and 1B parameters: the floor under each isolated-step ratio;
* ``ddp``: the SSGD DDP communication hook over NCCL with two processes on GPU 0 (NCCL
  usually refuses two ranks on one device: then the reason is recorded, and the check is
  repeated over gloo with CUDA tensors where gloo allows it);
* ``summary``: the Markdown table of the issue-20 targets, from ``bench_step.json`` (``ssgd
  bench step --out``) and the ``--json`` file of the checks above (runs anywhere).

Each writes one JSON object to stdout's last line and to ``--json`` (merged into the file
under the check's name). Usage::

    python benchmarks/gpu_checks.py whole-step --json out.json
    python benchmarks/gpu_checks.py ddp --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

CHECKS = ("whole-step", "ddp", "summary")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _fastest(fns: dict, samples: int, dev: torch.device, warmup: int = 3) -> dict[str, float]:
    """Fastest time (ms) of each fn over ``samples`` rounds, fns alternating in rotating order."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(dev)
    best = {k: float("inf") for k in fns}
    names = list(fns)
    for i in range(samples):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            _sync(dev)
            t = time.perf_counter()
            fns[k]()
            _sync(dev)
            best[k] = min(best[k], (time.perf_counter() - t) * 1e3)
    return best


def _ssgd_variants(params, SSGD) -> dict:
    return {"ssgd": SSGD(params, lr=1e-3, momentum=0.9, scope="global")}


def _count_syncs(fn, dev: torch.device) -> tuple[int, list[str]]:
    """Host synchronisations CUDA's sync debug mode reports while ``fn`` runs once, and where (file:line)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    hits = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(hits), [f"{Path(w.filename).name}:{w.lineno}" for w in hits]


def _step_syncs(model, opt, x, y, dev: torch.device, steps: int = 3) -> dict | None:
    """Host syncs of ``steps`` consecutive training steps, split into zero_grad + forward + backward and the
    optimizer's step (the most of any one step each), with the lines that made them (None off CUDA)."""
    from torch.nn import functional as F

    if dev.type != "cuda":
        return None

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    counts: dict[str, list[int]] = {"forward_backward": [], "step": []}
    sites: set[str] = set()
    for _ in range(steps):
        for phase, fn in (("forward_backward", forward_backward), ("step", opt.step)):
            n, where = _count_syncs(fn, dev)
            counts[phase].append(n)
            sites.update(f"{phase}: {w}" for w in where)
    return {**{k: max(v) for k, v in counts.items()}, "sites": sorted(sites)[:8]}


def _kernel_fns(size: str, dev: torch.device) -> dict:
    """The kernels of one step at ``size``, on random tensors, each a function."""
    from ssgd.experiments.bench_step import param_shapes

    g = torch.Generator(device=dev).manual_seed(0)
    ps = [torch.randn(s, device=dev, generator=g) for s in param_shapes(size)]
    gs = [torch.randn(s, device=dev, generator=g) for s in param_shapes(size)]
    bufs = [torch.zeros_like(p) for p in ps]
    lr, one, zero = (torch.tensor(v, device=dev) for v in (1e-3, 1.0, 0.0))
    kw = dict(weight_decay=0.0, dampening=0.0, nesterov=False, maximize=False, found_inf=zero)
    norms = torch._foreach_norm(gs)
    return {
        "sgd_foreach_add": lambda: torch._foreach_add_(ps, gs, alpha=-1e-3),
        "foreach_norm": lambda: torch._foreach_norm(gs),
        "stack_joint_norm": lambda: torch.linalg.vector_norm(torch.stack(norms)),
        "fused_tensor_lr": lambda: torch._fused_sgd_(ps, gs, [], momentum=0.0, lr=lr, is_first_step=False, **kw),
        "fused_grad_scale": lambda: torch._fused_sgd_(ps, gs, [], momentum=0.0, lr=1e-3, is_first_step=False,
                                                      grad_scale=one, **kw),
        "fused_momentum": lambda: torch._fused_sgd_(ps, gs, bufs, momentum=0.9, lr=1e-3, is_first_step=False,
                                                    grad_scale=one, **kw),
        "foreach_div_0dim_list": lambda: torch._foreach_div_(gs, [one] * len(gs)),
    }


def kernels(samples: int, dev: torch.device, small: bool = False) -> dict:
    """Fastest time (ms) of each kernel an SSGD step is made of, and of SGD(foreach)'s, at each size: where
    the isolated step's excess over SGD goes (bandwidth of a kernel, or launches and Python around them)."""
    from ssgd.experiments.bench_step import param_shapes

    out = {}
    for size in ("tiny",) if small else ("11.7M", "124M", "1B"):
        out[size] = {"tensors": len(param_shapes(size)), **_fastest(_kernel_fns(size, dev), samples, dev)}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def whole_step(samples: int, dev: torch.device, small: bool = False) -> dict:
    from torch.nn import functional as F

    from ssgd import SSGD
    from ssgd.models import build_model

    out = {}
    for name, shape, batch in (("resnet18", (3, 32, 32), 4 if small else 256), ("mlp", (1, 28, 28), 8 if small else 1024)):
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn((batch, *shape), device=dev, generator=g)
        y = torch.randint(0, 10, (batch,), device=dev, generator=g)
        models = {"sgd": build_model(name, shape, 10, seed=0).to(dev)}
        opts = {"sgd": torch.optim.SGD(models["sgd"].parameters(), lr=1e-3, momentum=0.9, foreach=True)}
        for k in list(_ssgd_variants([torch.zeros(1, requires_grad=True)], SSGD)):
            models[k] = build_model(name, shape, 10, seed=0).to(dev)
            opts[k] = _ssgd_variants(list(models[k].parameters()), SSGD)[k]

        def make(k):
            def step():
                opts[k].zero_grad(set_to_none=True)
                F.cross_entropy(models[k](x), y).backward()
                opts[k].step()
            return step

        best = _fastest({k: make(k) for k in opts}, samples, dev)
        row = {"batch": batch, "parameters": sum(p.numel() for p in models["sgd"].parameters()),
               "goal": "ratio <= 1.01 (resnet18), <= 1.10 (mlp), 0 syncs"}
        for k in opts:
            row[f"{k}_ms"] = best[k]
            if k != "sgd":
                row[f"{k}_ratio"] = best[k] / best["sgd"]
            # the whole training step's syncs (SGD's too: a sync in the model's forward/backward is not the
            # optimizer's), and how many of them are in opt.step()
            syncs = _step_syncs(models[k], opts[k], x, y, dev)
            row[f"{k}_syncs"] = syncs
            row[f"{k}_step_syncs"] = None if syncs is None else syncs["forward_backward"] + syncs["step"]
        out[name] = row
    return out


def _ddp_worker(rank: int, world: int, backend: str, store: str, steps: int, q) -> None:
    import torch.distributed as dist
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ssgd.distributed import register
    from ssgd.models import build_model

    try:
        torch.cuda.set_device(0)
        dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
        model = DDP(build_model("convnet", (1, 28, 28), 10, seed=0).cuda(), device_ids=[0])
        register(model, "global")
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        g = torch.Generator(device="cuda").manual_seed(rank)
        x = torch.randn(64, 1, 28, 28, device="cuda", generator=g)
        y = torch.randint(0, 10, (64,), device="cuda", generator=g)
        times = []
        for i in range(steps + 3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= 3:
                times.append((time.perf_counter() - t) * 1e3)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        same = all(torch.equal(gathered[0], t) for t in gathered[1:])
        if rank == 0:
            q.put({"ok": True, "backend": backend, "fastest_step_ms": min(times), "replicas_identical": same})
        dist.destroy_process_group()
    except Exception as e:  # recorded, not raised: the script goes on with the next check
        q.put({"ok": False, "backend": backend, "rank": rank, "error": f"{type(e).__name__}: {e}"[:500]})


def ddp(steps: int) -> dict:
    import torch.multiprocessing as mp

    out = {}
    ctx = mp.get_context("spawn")
    for backend in ("nccl", "gloo"):
        q = ctx.Queue()
        with tempfile.TemporaryDirectory() as tmp:
            procs = [ctx.Process(target=_ddp_worker, args=(r, 2, backend, os.path.join(tmp, "store"), steps, q))
                     for r in range(2)]
            for p in procs:
                p.start()
            deadline = time.monotonic() + 20  # per backend: two NCCL ranks on one GPU may hang in init
            for p in procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
            results = []
            while not q.empty():
                results.append(q.get())
        ok = [r for r in results if r.get("ok")]
        out[backend] = ok[0] if ok else (results[0] if results else {"ok": False, "error": "no result (timeout)"})
        if backend == "nccl" and out[backend].get("ok"):
            break
    return out


TARGETS = {"11.7M": 1.5, "resnet18": 1.5, "124M": 1.25, "gpt2": 1.25, "1B": 1.25, "gpt1b": 1.25}
WHOLE_TARGETS = {"resnet18": 1.01, "mlp": 1.10}


def summary(bench: Path | None, checks: Path | None) -> str:
    """The issue-20 rows: isolated step (ratio, syncs, ops) and whole step, each against its target."""
    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    lines = []
    if bench is not None and bench.is_file():
        rows = json.loads(bench.read_text()).get("rows", [])
        lines += ["| isolated step | tensors | momentum | scope | SGD ms | SSGD ms | SSGD/SGD (median) | fastest "
                  "| target | met | syncs | ops (SSGD, SGD) | GPU launches (SSGD, SGD) |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|"]
        for r in rows:
            t = TARGETS.get(r["size"])
            lines.append(f"| {r['size']} ({r['n_params'] / 1e6:.1f}M) | {r['n_tensors']} | {r['momentum']:g} | "
                         f"{r['scope']} | {r['sgd_ms']:.3f} | {r['ssgd_ms']:.3f} | {r['ratio']:.2f}x | "
                         f"{r['fastest_ratio']:.2f}x | {'' if t is None else f'<= {t}'} | "
                         f"{'' if t is None else mark(r['ratio'] <= t and r['syncs'] == 0)} | {r['syncs']} | "
                         f"{r.get('ops', '?')}, {r.get('sgd_ops', '?')} | {r.get('launches', '?')}, "
                         f"{r.get('sgd_launches', '?')} |")
    else:
        lines.append("isolated step: no bench_step.json (the bench step failed; see run.log)")
    res = json.loads(checks.read_text()) if checks is not None and checks.is_file() else {}
    whole = res.get("whole-step", {})
    if any(k in whole for k in WHOLE_TARGETS):
        lines += ["", "| whole step | batch | SGD ms | SSGD ms | SSGD/SGD (fastest) | target | met "
                      "| syncs/step SSGD (in opt.step) | syncs/step SGD | where |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for name, t in WHOLE_TARGETS.items():
            r = whole.get(name)
            if r:
                mine = r.get("ssgd_syncs") or {}
                in_step = mine.get("step", r["ssgd_step_syncs"])
                ok = r["ssgd_ratio"] <= t and not in_step and not r["ssgd_step_syncs"]
                lines.append(f"| {name} | {r['batch']} | {r['sgd_ms']:.2f} | {r['ssgd_ms']:.2f} | "
                             f"{r['ssgd_ratio']:.3f}x | <= {t} | {mark(ok)} | {r['ssgd_step_syncs']} ({in_step}) | "
                             f"{r.get('sgd_step_syncs')} | {'; '.join(mine.get('sites', [])) or '-'} |")
    else:
        lines.append("\nwhole step: no result (see run.log)")
    kern = whole.get("kernels", {})
    if kern:
        names = [k for k in next(iter(kern.values())) if k != "tensors"]
        lines += ["", "kernel floor (fastest ms; an SSGD step is foreach_norm + stack_joint_norm + a fused kernel, "
                      "plus a few 1-element ops; layer scope adds foreach_div_0dim_list)", "",
                  "| size | tensors | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
        for size, r in kern.items():
            lines.append(f"| {size} | {r['tensors']} | " + " | ".join(f"{r[k]:.3f}" for k in names) + " |")
    ddp = res.get("ddp", {})
    for backend, r in ddp.items() if isinstance(ddp, dict) else []:
        if isinstance(r, dict):
            state = (f"ok, fastest step {r['fastest_step_ms']:.2f} ms, replicas identical: {r['replicas_identical']}"
                     if r.get("ok") else f"failed: {r.get('error', '?')}")
            lines.append(f"\nDDP hook over {backend}: {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", choices=CHECKS)
    ap.add_argument("--samples", type=int, default=30, help="timed rounds (the fastest counts)")
    ap.add_argument("--json", type=Path, default=None, help="merge the result into this JSON file")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny sizes on the CPU: checks the code path, measures nothing (not for ddp)")
    ap.add_argument("--bench", type=Path, default=None, help="summary: the bench_step.json to read")
    args = ap.parse_args(argv)
    if args.check == "summary":
        print(summary(args.bench, args.json))
        return 0
    if args.cpu_smoke:
        if args.check == "ddp":
            print("gpu_checks.py ddp: --cpu-smoke does not apply (the check is NCCL on a GPU)", file=sys.stderr)
            return 2
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(f"gpu_checks.py {args.check}: no CUDA GPU is visible; run it on a GPU machine", file=sys.stderr)
        return 3
    else:
        dev = torch.device("cuda")
    fn = {"whole-step": lambda: {**whole_step(args.samples, dev, args.cpu_smoke),
                                 "kernels": kernels(args.samples, dev, args.cpu_smoke)},
          "ddp": lambda: ddp(args.samples)}[args.check]
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           **fn()}
    if args.json is not None:
        old = json.loads(args.json.read_text()) if args.json.is_file() else {}
        old[args.check] = res
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(old, indent=1))
        tmp.replace(args.json)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
