"""Attack throughput, measured against references run in the same process.

    OMP_NUM_THREADS=1 python benchmarks/attack_throughput.py [--targets 32] [--iters 20] [--rounds 5]

Two measurements, each a ratio of times taken here, now, on this machine:

1. **Single target vs plain autograd.** ``inverting`` (restarts 1) on one 3x32x32 image with
   DLG's LeNet against a plain-autograd loop computing the same objective (``1 - cos`` over
   all gradient tensors + ``tv`` x total variation, Adam on the signed gradient with the same
   step decay, clamp to [0, 1]). The two are run alternately ``--rounds`` times; the ratio is
   total time ours / total time reference (target: <= 1.05).
2. **Stacked vs one at a time.** ``idlg`` (L-BFGS) and ``inverting`` (signed Adam) on DLG's
   LeNet with real 28x28 images, ``--targets`` targets run one at a time (``reconstruct`` in a
   loop) and all stacked (``reconstruct_batch``, one ``torch.func.vmap`` optimisation); the
   ratio is the speed-up (target: >= 8).

``--neighbour`` repeats measurement 1 while another process keeps one core busy.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F


def _cases(dataset: str, n: int):
    from ssgd.data import load_dataset
    from ssgd.defenses import get_defense
    from ssgd.models import build_model

    data = load_dataset(dataset)
    model = build_model("lenet", data.shape, data.num_classes, seed=0)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    d = get_defense("ssgd-global")
    shared = [d.shared_update(model, data.x_train[i:i + 1], data.y_train[i:i + 1]) for i in idx.tolist()]
    return model, data, shared


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def reference_inverting(net: torch.nn.Module, shared: list[torch.Tensor], label: torch.Tensor, x0: torch.Tensor,
                        iters: int, lr: float, tv: float) -> torch.Tensor:
    """Inverting Gradients written directly with torch.autograd: the reference of measurement 1."""
    params = list(net.parameters())
    tnorm = torch.sqrt(sum((t ** 2).sum() for t in shared))
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iters * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
    for _ in range(iters):
        opt.zero_grad(set_to_none=False)
        grads = torch.autograd.grad(F.cross_entropy(net(x), label), params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, shared))
        gnorm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        tvx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        cost = 1 - dot / (gnorm * tnorm) + tv * tvx
        (gx,) = torch.autograd.grad(cost, x)
        x.grad = gx.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def single_target(iters: int, rounds: int) -> dict:
    from ssgd.attacks import AttackMeta, get_attack
    from ssgd.models import build_model

    net = build_model("lenet", (3, 32, 32), 10, seed=0).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3])
    sh = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))]
    meta = AttackMeta((3, 32, 32), 1, 10)
    inv = get_attack(f"inverting:iters={iters},restarts=1,init=uniform")
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    inv.reconstruct(net, sh, meta)  # warm-up
    reference_inverting(net, sh, y, x0, 5, inv.lr, inv.tv)
    ours = ref = 0.0
    for _ in range(rounds):  # alternate, so drifts in machine load hit both alike
        ours += _time(lambda: inv.reconstruct(net, sh, meta))
        ref += _time(lambda: reference_inverting(net, sh, y, x0, iters, inv.lr, inv.tv))
    n = rounds * iters
    return {"ours_ms_per_iter": 1e3 * ours / n, "reference_ms_per_iter": 1e3 * ref / n, "ratio": ours / ref}


def stacked(dataset: str, targets: int, iters: int) -> dict:
    from ssgd.attacks import AttackMeta, get_attack

    model, data, shared = _cases(dataset, targets)
    metas = [AttackMeta(tuple(data.shape), 1, data.num_classes, seed=0) for _ in shared]
    out = {}
    for spec in (f"idlg:iters={iters},restarts=1", f"inverting:iters={iters},restarts=1"):
        a = get_attack(spec)
        a.reconstruct_batch(model, shared[:2], metas[:2])  # warm-up
        t_one = _time(lambda: [a.reconstruct(model, s, m) for s, m in zip(shared, metas)])
        t_all = _time(lambda: a.reconstruct_batch(model, shared, metas))
        out[spec.split(":")[0]] = {"one_at_a_time_per_s": targets / t_one, "stacked_per_s": targets / t_all,
                                   "speedup": t_one / t_all}
    return out


def _neighbour() -> "subprocess.Popen":
    """A busy neighbour: another process doing float32 matrix products on one thread until killed."""
    import subprocess
    import sys

    code = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\n"
            "while True:\n    a = torch.tanh(a @ a)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=32, help="independent attacks per stacked measurement")
    ap.add_argument("--iters", type=int, default=20, help="optimiser iterations per stacked attack")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--inverting-iters", type=int, default=100, help="iterations per single-target round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of the single-target comparison")
    ap.add_argument("--neighbour", action="store_true",
                    help="repeat measurement 1 with a busy neighbour process (one thread of matrix products)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    one = single_target(args.inverting_iters, args.rounds)
    print(f"1. inverting, one 3x32x32 image, DLG LeNet, {args.rounds} alternating rounds of {args.inverting_iters} "
          f"iterations: ours {one['ours_ms_per_iter']:.2f} ms/iter, plain autograd {one['reference_ms_per_iter']:.2f} "
          f"ms/iter, ratio {one['ratio']:.3f} (target <= 1.05)")
    busy = None
    if args.neighbour:
        proc = _neighbour()
        try:
            busy = single_target(args.inverting_iters, args.rounds)
        finally:
            proc.kill()
            proc.wait()
        print(f"   with a busy neighbour (one more process of matrix products): ours {busy['ours_ms_per_iter']:.2f} "
              f"ms/iter, plain autograd {busy['reference_ms_per_iter']:.2f} ms/iter, ratio {busy['ratio']:.3f} "
              "(target <= 1.05)")
    st = stacked(args.dataset, args.targets, args.iters)
    print(f"2. {args.targets} targets ({args.dataset} 28x28, DLG LeNet, batch 1), {args.iters} iterations each")
    print(f"   {'attack':<12}{'one-at-a-time':>16}{'stacked':>14}{'speed-up':>10}")
    for name, r in st.items():
        print(f"   {name:<12}{r['one_at_a_time_per_s']:>12.2f} /s{r['stacked_per_s']:>10.2f} /s"
              f"{r['speedup']:>9.1f}x (target >= 8)")
    return {"single_target": one, "single_target_busy": busy, "stacked": st}


if __name__ == "__main__":
    main()
