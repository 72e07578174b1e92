"""Driver: SSGD + noise vs Opacus DP-SGD on ScatterNet features of Fashion-MNIST at (ε = 3, δ = 1e-5).

Not the product command (which now has ``ssgd reproduce privacy --benchmark --features scatternet``, with lrs
chosen on validation): this script produced the published ``docs/results/dp_scatternet.json`` (at commit 46b71ba,
before the benchmark's paired Poisson masks; a rerun needs a new ``--out``). It runs its private training (:func:`ssgd.experiments.dp_benchmark.fit_private`,
the same accountant, model init and checkpoints) with the protocol of issue 21:

* Tramèr & Boneh's ScatterNet + linear setting (their README: batch 8192, lr 16, momentum 0.9, C = 0.1,
  GroupNorm with 27 groups, 40 epochs), with the learning rates fixed *before looking*: Opacus lr 16 (the
  anchor's) and SSGD lr 16 × C = 1.6 (SSGD's update has sensitivity 1 where DP-SGD's has C);
* σ solved by the RDP accountant for ε at δ, q = 1/ceil(N/B) and the epochs; both methods use it;
* seeds 0, 1, 2, paired: the same model initialisation per seed for both methods;
* every epoch checkpointed; rerunning the script resumes; ``docs/results/dp_scatternet.json`` is rewritten
  after every finished run (``"partial": true`` until the last).

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/dp_scatternet.py [--out results/dp-scatternet]
        [--publish docs/results] [--epochs 40] [--seeds 0,1,2] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssgd.experiments.dp_benchmark import DPBenchmarkConfig, _load_data, fit_private  # noqa: E402
from ssgd.experiments.sweep import welch  # noqa: E402
from ssgd.privacy import solve_noise_multiplier  # noqa: E402
from ssgd.report.io import atomic_write_text, check_saved_config, write_csv, write_json  # noqa: E402

ANCHOR = {"source": "Tramèr & Boneh, ICLR 2021, ScatterNet + linear (DP-SGD)", "test_acc": 0.897, "epsilon": 3.0,
          "delta": 1e-5, "batch_size": 8192, "lr": 16.0, "noise_multiplier": 4.05, "epochs": 40, "groups": 27,
          "clip": 0.1}
METHODS = ("ssgd", "opacus")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "dp-scatternet"))
    ap.add_argument("--publish", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ssgd-lr", type=float, default=1.6)
    ap.add_argument("--opacus-lr", type=float, default=16.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = DPBenchmarkConfig.for_features("scatternet", epochs=args.epochs, batch_size=8192, momentum=0.9,
                                          clip=0.1, ssgd_lrs=(args.ssgd_lr,), opacus_lrs=(args.opacus_lr,),
                                          seeds=tuple(seeds), device=args.device).validate()
    config = {**base.to_dict(), "lrs": {"ssgd": args.ssgd_lr, "opacus": args.opacus_lr}}
    check_saved_config(out, config)  # refuses a folder that holds another configuration
    write_json(out / "config.json", config)
    data = _load_data(base, "test")
    n = data.x_train.shape[0]
    steps = math.ceil(n / base.batch_size)
    q = 1.0 / steps
    sigma = solve_noise_multiplier(base.epsilon, base.delta, q, steps * base.epochs, base.accountant)
    print(f"{n} train / {data.x_test.shape[0]} test features {tuple(data.shape)}; q = 1/{steps}, sigma = {sigma:.4f}",
          flush=True)
    lrs = {"ssgd": args.ssgd_lr, "opacus": args.opacus_lr}
    finished: dict[str, dict[int, list[dict]]] = {m: {} for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            cfg = base
            hist = fit_private(method, data, cfg, lr=lrs[method], epochs=cfg.epochs, sigma=sigma, seed=seed,
                               checkpoint=out / f"{method}_seed{seed}.ckpt", resume=True, progress=False,
                               desc=f"{method} seed {seed}", log=lambda s: print(s, flush=True))
            write_csv(out / f"{method}_seed{seed}_history.csv", hist)
            finished[method][seed] = hist
            _publish(out, Path(args.publish), base, seeds, lrs, sigma, n, q, data.x_test.shape[0], finished)
    return 0


def _publish(out: Path, pub: Path, cfg: DPBenchmarkConfig, seeds, lrs, sigma, n, q, n_test, finished) -> None:
    runs = {}
    for method in METHODS:
        hs = finished[method]
        accs = [hs[s][-1]["test_acc"] for s in seeds if s in hs]
        if not accs:
            continue
        secs = [hs[s][-1]["seconds"] for s in seeds if s in hs]
        runs[method] = {
            "test_acc": statistics.fmean(accs), "test_acc_mean": statistics.fmean(accs),
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None, "test_accs": accs,
            "seeds": [s for s in seeds if s in hs], "lr": lrs[method], "noise_multiplier": sigma,
            "epsilon": max(hs[s][-1]["epsilon"] for s in hs),
            "epsilon_opacus_engine": max(hs[s][-1]["epsilon_opacus"] for s in hs),
            "steps": hs[next(iter(hs))][-1]["steps"], "seconds": statistics.fmean(secs),
            "examples_per_second": n * cfg.epochs / statistics.fmean(secs),
            "per_epoch_mean": [{"epoch": e + 1, "test_acc": statistics.fmean(hs[s][e]["test_acc"] for s in hs)}
                               for e in range(min(len(h) for h in hs.values()))],
        }
    if "ssgd" in runs:
        runs["ssgd"].update({"normalisation": cfg.normalisation, "gamma": cfg.gamma})
    if "opacus" in runs:
        runs["opacus"]["max_grad_norm"] = cfg.clip
    done = sum(len(finished[m]) for m in METHODS)
    p = welch(runs["ssgd"]["test_accs"], runs["opacus"]["test_accs"]) if len(runs) == 2 else None
    result = {"dataset": cfg.dataset, "model": cfg.model, "features": {"transform": "scattering", "J": 2, "L": 8,
                                                                        "shape": [81, 7, 7]},
              "n_train": n, "n_test": int(n_test), "epsilon": cfg.epsilon, "delta": cfg.delta,
              "accountant": cfg.accountant, "epochs": cfg.epochs, "seeds": list(seeds), "batch_size": cfg.batch_size,
              "sample_rate": q, "momentum": cfg.momentum, "device": cfg.device, "runs": runs, "welch_p": p,
              "lr_choice": "fixed before looking: Opacus at the anchor's lr, SSGD at the anchor's lr x C",
              "anchor": ANCHOR, "partial": done < len(seeds) * len(METHODS),
              "driver": "scripts/dp_scatternet.py (not the product command)"}
    write_json(out / "dp_scatternet.json", result)
    write_json(pub / "dp_scatternet.json", result)
    atomic_write_text(out / "report.md", report_markdown(result) + "\n")
    line = ", ".join(f"{m} {r['test_acc_mean']:.4f} over seeds {r['seeds']}" for m, r in runs.items())
    print(f"[{time.strftime('%H:%M:%S')}] published ({'partial' if result['partial'] else 'complete'}): {line}",
          flush=True)


def report_markdown(res: dict) -> str:
    """The run folder's report, generated from the results object."""
    a = res["anchor"]
    lines = [f"# SSGD + noise vs Opacus DP-SGD on ScatterNet features: {res['dataset']} at ε = {res['epsilon']:g}, "
             f"δ = {res['delta']:g}", "",
             f"Model `{res['model']}` on scattering features (J = 2, L = 8: 81 x 7 x 7), {res['n_train']} training / "
             f"{res['n_test']} test examples, {res['epochs']} epochs, Poisson sampling q = {res['sample_rate']:.4g} "
             f"(batch {res['batch_size']}), momentum {res['momentum']:g}, σ solved by the {res['accountant'].upper()} "
             f"accountant, seeds {res['seeds']} (paired initialisation), device {res['device']}. "
             f"Learning rates {res['lr_choice']}." + (" **Partial.**" if res["partial"] else ""), "",
             "| run | test accuracy (mean ± std) | per seed | lr | σ | ε (same accountant) | s per run | train examples/s (eval included) |",
             "|---|---|---|---|---|---|---|---|",
             f"| anchor: {a['source']} | {a['test_acc']:.3f} | - | {a['lr']:g} | {a['noise_multiplier']:g} | "
             f"{a['epsilon']:g} | - | - |"]
    names = {"ssgd": "SSGD + noise (γ = {g})", "opacus": "Opacus DP-SGD (C = {c})"}
    for m, r in res["runs"].items():
        std = "" if r["test_acc_std"] is None else f" ± {r['test_acc_std']:.4f}"
        lines.append(f"| {names[m].format(g=r.get('gamma'), c=r.get('max_grad_norm'))} | {r['test_acc_mean']:.4f}{std} | "
                     f"{', '.join(f'{x:.4f}' for x in r['test_accs'])} | {r['lr']:g} | {r['noise_multiplier']:.4f} | "
                     f"{r['epsilon']:.4g} | {r['seconds']:.0f} | {r['examples_per_second']:.0f} |")
    if res.get("welch_p") is not None:
        s_, o_ = res["runs"]["ssgd"], res["runs"]["opacus"]
        d = 100 * (s_["test_acc_mean"] - o_["test_acc_mean"])
        lines += ["", f"SSGD + noise − Opacus: {d:+.2f} points (Welch p = {res['welch_p']:.2f}); against the anchor "
                  f"({100 * a['test_acc']:.1f} %): SSGD {100 * (s_['test_acc_mean'] - a['test_acc']):+.2f}, Opacus "
                  f"{100 * (o_['test_acc_mean'] - a['test_acc']):+.2f} points."]
    lines += ["", f"Driver: {res['driver']}; per-epoch rows in `<method>_seed<k>_history.csv`."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
