"""Attack throughput: stacked (batched) attacks vs one at a time, on the same cases.

    OMP_NUM_THREADS=1 python benchmarks/attack_throughput.py [--targets 32] [--iters 20]

Prints attacks per second for ``idlg`` (L-BFGS) and ``inverting`` (signed Adam) on DLG's
LeNet with real 28x28 images, run one target at a time (``reconstruct`` in a loop) and all
targets stacked (``reconstruct_batch``, one ``torch.func.vmap`` optimisation), the ratio, and
seconds per iteration of ``inverting`` on one 3x32x32 image with DLG's LeNet (the reference
framework breaching takes about 2.6-6 ms per iteration on a CPU).
"""

from __future__ import annotations

import argparse
import time

import torch


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


def main(argv=None) -> dict:
    from ssgd.attacks import AttackMeta, get_attack
    from ssgd.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=32, help="independent attacks per measurement")
    ap.add_argument("--iters", type=int, default=20, help="optimiser iterations per attack")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--inverting-iters", type=int, default=50, help="iterations for the 3x32x32 timing")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, data, shared = _cases(args.dataset, args.targets)
    metas = [AttackMeta(tuple(data.shape), 1, data.num_classes, seed=0) for _ in shared]
    out = {}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.targets} targets "
          f"({args.dataset} 28x28, DLG LeNet, batch 1), {args.iters} iterations each")
    print(f"{'attack':<12}{'one-at-a-time':>16}{'stacked':>14}{'speed-up':>10}")
    for spec in (f"idlg:iters={args.iters}", f"inverting:iters={args.iters}"):
        a = get_attack(spec)
        a.reconstruct_batch(model, shared[:2], metas[:2])  # warm-up
        t_one = _time(lambda: [a.reconstruct(model, s, m) for s, m in zip(shared, metas)])
        t_all = _time(lambda: a.reconstruct_batch(model, shared, metas))
        one, allr = args.targets / t_one, args.targets / t_all
        out[spec.split(":")[0]] = {"one_at_a_time_per_s": one, "stacked_per_s": allr, "speedup": allr / one}
        print(f"{spec.split(':')[0]:<12}{one:>12.2f} /s{allr:>10.2f} /s{allr / one:>9.1f}x")
    # seconds per iteration: inverting on one 3x32x32 image, DLG's LeNet
    net = build_model("lenet", (3, 32, 32), 10, seed=0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3])
    sh = [g.detach() for g in torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y),
                                                  list(net.parameters()))]
    meta = AttackMeta((3, 32, 32), 1, 10)
    inv = get_attack(f"inverting:iters={args.inverting_iters}")
    inv.reconstruct(net, sh, meta)  # warm-up
    dt = _time(lambda: inv.reconstruct(net, sh, meta)) / args.inverting_iters
    out["inverting_3x32x32_s_per_iter"] = dt
    print(f"inverting, one 3x32x32 image, DLG LeNet: {dt * 1e3:.2f} ms per iteration "
          "(breaching: ~2.6-6 ms per iteration on a CPU)")
    return out


if __name__ == "__main__":
    main()
