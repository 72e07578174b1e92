"""The tuning run behind the attacks' defaults (docs/attacks.md): step sizes, TV weight and start.

    OMP_NUM_THREADS=1 python benchmarks/attack_tuning.py --stage inv|dlg|two --out results/leakage-grid

Validation set: 4 MNIST *test-split* images (seed 123), disjoint from the training-split images
that ``ssgd reproduce leakage`` attacks; untrained DLG LeNet; per-layer unit vectors
(``ssgd-layer``), the case the old defaults missed. Prints one JSON line per setting and writes
``tuning_<stage>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch


def main(argv=None) -> list[dict]:
    from ssgd.attacks import AttackMeta, get_attack
    from ssgd.data import load_dataset
    from ssgd.defenses import get_defense
    from ssgd.metrics import score_batch
    from ssgd.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("inv", "dlg", "two"), required=True)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    data = load_dataset("mnist")
    net = build_model("lenet", data.shape, 10, seed=0).eval()
    idx = torch.randperm(data.x_test.shape[0], generator=torch.Generator().manual_seed(123))[:4]
    xv, yv = data.x_test[idx], data.y_test[idx]
    mean_img = data.x_train.mean(0)
    rows: list[dict] = []

    def run(spec: str, defense: str) -> None:
        d = get_defense(defense)
        shared = [d.shared_update(net, xv[k:k + 1], yv[k:k + 1]) for k in range(4)]
        metas = [AttackMeta(tuple(data.shape), 1, 10, seed=0, mean_image=mean_img) for _ in shared]
        a = get_attack(spec)
        t = time.perf_counter()
        recs = a.reconstruct_batch(net, shared, metas)
        ps = [score_batch(r.images, xv[k:k + 1])["psnr"] for k, r in enumerate(recs)]
        row = {"attack": a.spec, "defense": defense, "psnr_mean": sum(ps) / 4, "psnr": ps,
               "seconds": time.perf_counter() - t}
        print(json.dumps(row), flush=True)
        rows.append(row)

    if args.stage == "inv":
        for tv, lr in itertools.product([0.0, 1e-4, 1e-3, 1e-2], [0.03, 0.1, 0.3]):
            run(f"inverting-layer:iters=500,restarts=1,tv={tv},lr={lr}", "ssgd-layer")
        for init in ("randn", "mean"):
            run(f"inverting-layer:iters=500,restarts=1,tv=0.0001,lr=0.1,init={init}", "ssgd-layer")
    if args.stage == "dlg":
        for lr, init in itertools.product([0.3, 1.0], ["uniform", "randn", "mean"]):
            run(f"dlg-unit:scope=layer,iters=200,restarts=1,lr={lr},init={init}", "ssgd-layer")
    if args.stage == "two":
        for lr in (0.3, 1.0):
            run(f"dlg-unit:scope=layer,iters=300,restarts=2,lr={lr},init=mean", "ssgd-layer")
        for tv in (1e-5, 3e-5, 3e-4):
            run(f"inverting-layer:iters=500,restarts=1,tv={tv},lr=0.1", "ssgd-layer")
        for tv in (1e-4, 3e-5):
            run(f"inverting:iters=500,restarts=1,tv={tv},lr=0.1", "ssgd-global")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tuning_{args.stage}.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
