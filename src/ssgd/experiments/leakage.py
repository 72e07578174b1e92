"""Gradient leakage, measured: attacks x defences x batch sizes on real images.

:func:`attack_once` is one attack on one shared update (``ssgd attack``);
:func:`run_leakage` is the grid behind ``ssgd reproduce leakage``: for every dataset,
model state (untrained / briefly trained), batch size, attack and defence it attacks the
same seeded images, scores every reconstruction (optimal assignment, then PSNR / SSIM /
MSE, label accuracy) and writes per-image and per-cell tables, image grids, a
privacy-vs-accuracy plot and ``report.md``. Attacks of one grid row run stacked (all
defences and targets in one optimisation), so the grid is affordable on a CPU.

The SSGD-aware attacks are told the defence (the threat model "the attacker knows SSGD
is used"): ``dlg-unit`` uses the defence's scope and shard count, ``analytic`` rescales
under layer scope. Partial results are written after every attack, so an interrupted
or budget-limited run still leaves consistent tables of what it finished.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import AttackMeta, get_attack
from ..attacks.base import Attack
from ..data import ImageDataset, load_dataset
from ..defenses import Defense, get_defense
from ..metrics import match, mse_per_image, psnr_per_image, ssim_per_image
from ..metrics.matching import label_accuracy
from ..models import build_model
from ..report.io import atomic_write_text, save_figure, write_csv, write_json

__all__ = ["LeakageConfig", "DEFAULT_ATTACKS", "DEFAULT_DEFENSES", "adapt_attack", "attack_once", "build_state_model",
           "run_leakage", "summarize", "train_with_defense"]

DEFAULT_ATTACKS = ["dlg", "idlg", "dlg-unit", "inverting", "inverting-layer", "analytic"]
DEFAULT_DEFENSES = ["none", "ssgd-global", "ssgd-layer", "ssgd-shards:m=4", "prune:p=90", "noise:sigma=0.01", "sign",
                    "fp16", "dp:clip=1,sigma=1", "ssgd-noise:sigma=0.01"]
OPT_ATTACKS = ("dlg", "idlg", "dlg-unit")
INV_ATTACKS = ("inverting", "inverting-layer")


@dataclass
class LeakageConfig:
    datasets: list[str] = field(default_factory=lambda: ["mnist", "fashion-mnist"])
    states: list[str] = field(default_factory=lambda: ["untrained", "trained"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8])
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    images: int = 16
    dlg_iters: int = 100
    inverting_iters: int = 200
    restarts: int = 1
    train_epochs: int = 5
    train_images: int = 4000
    accuracy_model: str = "convnet"
    accuracy_epochs: int = 2
    seed: int = 0
    budget_minutes: float = 0.0  # 0: no limit; else stop starting new attacks after this many minutes
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> "LeakageConfig":
        base = dict(datasets=["mnist"], states=["untrained"], batch_sizes=[1, 4], images=4, dlg_iters=25,
                    inverting_iters=30, train_epochs=1, train_images=500, accuracy_epochs=1, quick=True)
        base.update(kw)
        return cls(**base)

    def validate(self) -> "LeakageConfig":
        for b in self.batch_sizes:
            if b < 1 or self.images % b:
                raise ValueError(f"batch size {b} must be >= 1 and divide images={self.images}")
        for s in self.states:
            if s not in ("untrained", "trained"):
                raise ValueError(f"unknown model state {s!r}; expected 'untrained' or 'trained'")
        for a in self.attacks:
            get_attack(a)
        for d in self.defenses:
            get_defense(d)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def adapt_attack(attack: str, defense: Defense, batch_size: int, **iters) -> Attack:
    """The attack as run against ``defense``: SSGD-aware attacks without explicit parameters get the
    defence's scope / shard count (they know the defence); ``iters`` are applied where accepted."""
    from ..defenses.spec import parse_spec

    name, params = parse_spec(attack)
    if name == "dlg-unit":
        if defense.name == "ssgd-layer":
            params.setdefault("scope", "layer")
        elif defense.name == "ssgd-shards":
            params.setdefault("scope", defense.scope)
            params.setdefault("shards", str(effective_shards(defense, batch_size)))
    if name == "analytic" and defense.name == "ssgd-layer" or (
            name == "analytic" and defense.name == "ssgd-shards" and defense.scope == "layer"):
        params.setdefault("rescale", "true")
    spec = name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    a = get_attack(spec)
    for k, v in iters.items():
        if v is not None and hasattr(a, k) and k not in params:
            setattr(a, k, v)
    return a


def effective_shards(defense: Defense, batch_size: int) -> int:
    m = min(defense.m, batch_size)
    while batch_size % m:
        m -= 1
    return m


def _effective_defense(defense: Defense, batch_size: int) -> Defense:
    if defense.name == "ssgd-shards":
        m = effective_shards(defense, batch_size)
        if m != defense.m:
            return dataclasses.replace(defense, m=m)
    return defense


def _subset(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    if data.x_train.shape[0] <= n:
        return data
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return ImageDataset(data.name, data.x_train[idx], data.y_train[idx], data.x_test, data.y_test, data.num_classes)


def build_state_model(model: str, state: str, data: ImageDataset, *, seed: int = 0, epochs: int = 5,
                      train_images: int = 4000, progress: bool = False) -> tuple[nn.Module, float]:
    """``(model, test accuracy)``: freshly initialised (``untrained``) or trained briefly (Adam, lr 1e-3,
    batch 32, ``epochs`` epochs on ``train_images`` training images; DLG's sigmoid LeNet needs about
    three such epochs before it starts to learn)."""
    from .train import TrainConfig, evaluate, train

    if state == "untrained":
        net = build_model(model, data.shape, data.num_classes, seed=seed)
        acc, _ = evaluate(net, data.x_test[:2000], data.y_test[:2000])
        return net, acc
    if state != "trained":
        raise ValueError(f"unknown model state {state!r}; expected 'untrained' or 'trained'")
    sub = _subset(data, train_images, seed)
    res = train(TrainConfig(dataset=data.name, model=model, optimizer="adam", lr=1e-3, epochs=epochs, batch_size=32,
                            seed=seed),
                data=ImageDataset(sub.name, sub.x_train, sub.y_train, sub.x_test[:2000], sub.y_test[:2000],
                                  sub.num_classes), progress=progress)
    return res.model, res.test_acc


def _select(data: ImageDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return data.x_train[idx], data.y_train[idx]


def _score(rec, x, y) -> list[dict[str, float]]:
    perm = match(rec.images, x)
    r = rec.images.detach().float()[perm].clamp(0, 1)
    lab = label_accuracy(rec.labels, y) if rec.labels is not None else float("nan")
    m, p, s = mse_per_image(r, x), psnr_per_image(r, x), ssim_per_image(r, x)
    return [{"psnr": p[i], "ssim": s[i], "mse": m[i], "label_acc": lab} for i in range(x.shape[0])], r


def attack_once(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, defense: str, *,
                iters: int | None = None, seed: int = 0, labels_known: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """One attack on the shared update of batch ``(x, y)``: returns scores and the matched reconstruction."""
    d = _effective_defense(get_defense(defense), x.shape[0])
    gen = torch.Generator().manual_seed(seed)
    shared = d.shared_update(model, x, y, generator=gen)
    over = {"iters": iters} if iters is not None else {}
    a = adapt_attack(attack, d, x.shape[0], **over)
    meta = AttackMeta(tuple(x.shape[1:]), x.shape[0], int(model_num_classes(model, shared)),
                      labels=y.clone() if labels_known else None, seed=seed)
    rec = a.reconstruct_batch(model, [shared], [meta], progress=progress)[0]
    per, matched = _score(rec, x, y)
    out = {k: float(sum(r[k] for r in per) / len(per)) for k in ("psnr", "ssim", "mse")}
    out["label_acc"] = per[0]["label_acc"]
    out.update(attack=a.spec, defense=d.spec, seconds=rec.seconds, iterations=rec.iterations, loss=rec.loss,
               recovered_labels=rec.labels.tolist() if rec.labels is not None else None, true_labels=y.tolist(),
               per_image=per)
    return {"result": out, "reconstruction": matched}


def model_num_classes(model: nn.Module, shared) -> int:
    return int(shared[-1].shape[0])


def _stats(vals: list[float]) -> tuple[float, float]:
    v = [x for x in vals if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(statistics.fmean(v)), float(statistics.pstdev(v)) if len(v) > 1 else 0.0


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-cell mean and spread (population std over images) of PSNR/SSIM/MSE and label accuracy."""
    keys = ("dataset", "state", "model", "batch", "attack", "defense")
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in cells.items():
        row = dict(zip(keys, key))
        for m in ("psnr", "ssim", "mse", "label_acc"):
            mean, sd = _stats([r[m] for r in rs])
            row[f"{m}_mean"], row[f"{m}_std"] = mean, sd
        row["images"] = len(rs)
        row["seconds_per_attack"] = float(statistics.fmean(r["seconds"] for r in rs))
        row["attack_spec"] = rs[0]["attack_spec"]
        out.append(row)
    return out


def train_with_defense(defense: str, data: ImageDataset, *, model: str = "convnet", epochs: int = 2,
                       batch_size: int = 64, seed: int = 0, train_images: int = 4000, progress: bool = False) -> float:
    """Test accuracy of ``model`` trained with every shared update replaced by ``defense``'s.

    The default is the project's ReLU ConvNet (DLG's sigmoid LeNet barely moves under plain SGD
    in a few epochs, which would hide every defence's cost). Plain SGD steps along the shared
    update; the learning rate suits its scale: 0.1 for
    gradient-scale updates (the project's SGD default), 0.5 for unit vectors (its SSGD default;
    divided by m for a sum of m unit vectors), 0.001 for signs."""
    from tqdm.auto import tqdm

    from .train import evaluate, set_seed

    d = get_defense(defense)
    gen = set_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    sub = _subset(data, train_images, seed)
    net = build_model(model, data.shape, data.num_classes, seed=seed)
    lr = {"ssgd-global": 0.5, "ssgd-layer": 0.5, "ssgd-noise": 0.5, "sign": 1e-3}.get(d.name, 0.1)
    if d.name == "ssgd-shards":
        lr = 0.5 / d.m
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    n = sub.x_train.shape[0]
    bar = tqdm(total=epochs * -(-n // batch_size), desc=f"train {d.spec}", disable=not progress, leave=False)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            dd = _effective_defense(d, idx.numel())
            shared = dd.shared_update(net, sub.x_train[idx], sub.y_train[idx], generator=noise_gen)
            for p, g in zip(net.parameters(), shared):
                p.grad = g
            opt.step()
            bar.update(1)
    bar.close()
    acc, _ = evaluate(net, data.x_test[:2000], data.y_test[:2000])
    return acc


def _grid_figure(path: Path, originals: torch.Tensor, recs: dict[tuple[str, str], torch.Tensor], attacks: list[str],
                 defenses: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = len(attacks) + 1
    fig, axes = plt.subplots(len(defenses), ncol, figsize=(1.3 * ncol, 1.35 * len(defenses) + 0.4), squeeze=False)
    for i, d in enumerate(defenses):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = originals if j == 0 else recs.get((attacks[j - 1], d))
            if img is not None:
                ax.imshow(img[0].clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title("original" if j == 0 else attacks[j - 1], fontsize=7)
            if j == 0:
                ax.set_ylabel(d.split(":")[0], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.2, w_pad=0.2)
    save_figure(fig, path)


def _fmt(row: dict | None) -> str:
    if row is None:
        return "–"
    return f"{row['psnr_mean']:.1f}±{row['psnr_std']:.1f} / {row['ssim_mean']:.2f}"


def _markdown(summary: list[dict], cfg: LeakageConfig, accuracy: dict[str, float], figures: list[str],
              elapsed: float, stopped_early: bool) -> str:
    lines = ["# Gradient leakage: attacks x defences", "",
             f"{'Quick' if cfg.quick else 'Full'} mode, seed {cfg.seed}, {cfg.images} images per cell "
             f"(batches of B: {cfg.images}/B shared updates), DLG-family L-BFGS iterations {cfg.dlg_iters}, "
             f"Inverting iterations {cfg.inverting_iters} x {cfg.restarts} restart(s). Models: DLG's LeNet "
             "(analytic: a 2-hidden-layer ReLU MLP, whose first layer is linear); 'trained' = Adam for "
             f"{cfg.train_epochs} epoch(s) on {cfg.train_images} training images. Test accuracy column: "
             f"{cfg.accuracy_model} trained {cfg.accuracy_epochs} epoch(s) by SGD steps along each defence's shared "
             f"update. Run time {elapsed / 60:.1f} min.",
             "", "Cells: PSNR mean ± std (dB) / SSIM mean over the images (after optimal assignment). "
             "Higher = more leakage. Label accuracy is in `leakage.csv`.", ""]
    if stopped_early:
        lines += ["**The time budget ran out: cells marked – were not run.**", ""]
    index = {(r["dataset"], r["state"], r["batch"], r["attack"], r["defense"]): r for r in summary}
    combos = sorted({(r["dataset"], r["state"], r["batch"]) for r in summary}, key=lambda c: (c[0], c[1], c[2]))
    attacks = [a.split(":")[0] for a in cfg.attacks]
    # headline: the strongest attack per defence
    lines += ["## Worst case per defence (max over attacks of mean PSNR)", "",
              "| defence | " + " | ".join(f"{d} {s} B={b}" for d, s, b in combos) + " | test acc. (trained with it) |",
              "|---|" + "---|" * (len(combos) + 1)]
    for d in cfg.defenses:
        cells = []
        for c in combos:
            rs = [index.get((*c, a, d)) for a in attacks]
            rs = [r for r in rs if r is not None]
            if rs:
                best = max(rs, key=lambda r: r["psnr_mean"])
                cells.append(f"{best['psnr_mean']:.1f} ({best['attack']})")
            else:
                cells.append("–")
        acc = accuracy.get(d)
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {acc:.3f} |" if acc is not None else
                     f"| {d} | " + " | ".join(cells) + " | – |")
    lines.append("")
    for c in combos:
        lines += [f"## {c[0]}, {c[1]} model, batch {c[2]}", "",
                  "| defence | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
        for d in cfg.defenses:
            lines.append(f"| {d} | " + " | ".join(_fmt(index.get((*c, a, d))) for a in attacks) + " |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [
        "", "Files: `leakage.csv` (per cell), `images.csv` (per image), `accuracy.csv`, `config.json`.", ""]
    return "\n".join(lines)


def run_leakage(cfg: LeakageConfig, run_dir: str | Path, *, progress: bool = True) -> Path:
    """Run the grid; write config.json, images.csv, leakage.csv, leakage.md, accuracy.csv, PNGs, report.md."""
    from tqdm.auto import tqdm

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg.validate()
    run_dir = Path(run_dir)
    write_json(run_dir / "config.json", cfg.to_dict())
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    figures: list[str] = []
    skipped: list[str] = []
    defenses = [get_defense(d) for d in cfg.defenses]
    datasets: dict[str, ImageDataset] = {}
    for name in cfg.datasets:
        try:
            datasets[name] = load_dataset(name)
        except (ValueError, OSError) as e:
            skipped.append(f"{name}: {e}")
    models: dict[tuple[str, str, str], nn.Module] = {}
    model_acc: dict[str, float] = {}
    # privacy vs accuracy: accuracy of training with each defence (MNIST if present)
    acc_ds = "mnist" if "mnist" in datasets else next(iter(datasets), None)
    accuracy: dict[str, float] = {}
    if acc_ds is not None and cfg.accuracy_epochs > 0:
        for d in tqdm(cfg.defenses, desc="accuracy per defence", disable=not progress):
            accuracy[d] = train_with_defense(d, datasets[acc_ds], model=cfg.accuracy_model, epochs=cfg.accuracy_epochs,
                                             seed=cfg.seed,
                                             train_images=cfg.train_images, progress=progress)
        write_csv(run_dir / "accuracy.csv", [{"dataset": acc_ds, "defense": d, "test_acc": a} for d, a in accuracy.items()])
    combos = [(b, ds, st) for b in cfg.batch_sizes for ds in datasets for st in cfg.states]
    stopped = False
    total_groups = len(combos) * len(cfg.attacks)
    bar = tqdm(total=total_groups, desc="leakage grid", disable=not progress)
    recs_for_fig: dict[tuple, dict] = {}

    def flush():
        write_csv(run_dir / "images.csv", [{k: v for k, v in r.items()} for r in rows])
        write_csv(run_dir / "leakage.csv", summarize(rows))

    for b, ds, st in combos:
        data = datasets[ds]
        x_all, y_all = _select(data, cfg.images, cfg.seed)
        K = cfg.images // b
        xs, ys = x_all.reshape(K, b, *data.shape), y_all.reshape(K, b)
        fig_recs: dict[tuple[str, str], torch.Tensor] = {}
        for attack in cfg.attacks:
            if cfg.budget_minutes and (time.perf_counter() - t_start) / 60 > cfg.budget_minutes:
                stopped = True
                break
            aname = attack.split(":")[0]
            mname = "mlp" if aname == "analytic" else "lenet"
            if (ds, st, mname) not in models:
                net, acc = build_state_model(mname, st, data, seed=cfg.seed, epochs=cfg.train_epochs,
                                             train_images=cfg.train_images, progress=progress)
                models[(ds, st, mname)] = net
                model_acc[f"{ds}/{st}/{mname}"] = acc
            net = models[(ds, st, mname)]
            # group defences by the attack configuration they get (stacked into one optimisation)
            groups: dict[str, tuple[Attack, list[tuple[int, Defense]]]] = {}
            for di, d in enumerate(defenses):
                de = _effective_defense(d, b)
                a = adapt_attack(attack, de, b, iters=cfg.dlg_iters if aname in OPT_ATTACKS else
                                 cfg.inverting_iters if aname in INV_ATTACKS else None)
                if aname in INV_ATTACKS and "restarts" not in attack:
                    a.restarts = cfg.restarts
                groups.setdefault(a.spec, (a, []))[1].append((di, de))
            for spec, (a, members) in groups.items():
                shared, metas, owners = [], [], []
                for di, de in members:
                    for k in range(K):
                        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + di * 1009 + k)
                        shared.append(de.shared_update(net, xs[k], ys[k], generator=gen))
                        metas.append(AttackMeta(tuple(data.shape), b, data.num_classes, seed=cfg.seed))
                        owners.append((di, de, k))
                recs = a.reconstruct_batch(net, shared, metas, progress=progress)
                for rec, (di, de, k) in zip(recs, owners):
                    per, matched = _score(rec, xs[k], ys[k])
                    if k == 0:
                        fig_recs[(aname, cfg.defenses[di])] = matched
                    for i, p in enumerate(per):
                        rows.append({"dataset": ds, "state": st, "model": mname, "batch": b, "attack": aname,
                                     "defense": cfg.defenses[di], "attack_spec": spec, "defense_spec": de.spec,
                                     "target": k, "image": k * b + i, "label": int(ys[k][i]), **p,
                                     "seconds": rec.seconds})
            flush()
            bar.update(1)
        recs_for_fig[(ds, st, b)] = fig_recs
        fname = f"grid_{ds}_{st}_b{b}.png"
        _grid_figure(run_dir / fname, xs[0], fig_recs, [a.split(":")[0] for a in cfg.attacks], cfg.defenses,
                     f"{ds}, {st} model, batch {b}: first image of target 0 (matched, clipped to [0,1])")
        figures.append(fname)
        if stopped:
            break
    bar.close()

    summary = summarize(rows)
    if accuracy and summary:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for d in cfg.defenses:
            rs = [r for r in summary if r["defense"] == d and r["dataset"] == acc_ds]
            if not rs or d not in accuracy:
                continue
            worst = statistics.fmean(max((r["psnr_mean"] for r in rs if (r["state"], r["batch"]) == sb), default=0)
                                     for sb in {(r["state"], r["batch"]) for r in rs})
            ax.scatter(accuracy[d], worst)
            ax.annotate(d.split(":")[0], (accuracy[d], worst), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"test accuracy: {cfg.accuracy_model} trained {cfg.accuracy_epochs} epoch(s) with it ({acc_ds})")
        ax.set_ylabel("leakage: PSNR of the strongest attack (dB)")
        ax.set_title("privacy vs accuracy (lower-right is better)", fontsize=9)
        ax.grid(alpha=0.3)
        save_figure(fig, run_dir / "privacy_vs_accuracy.png")
        figures.append("privacy_vs_accuracy.png")
    flush()
    elapsed = time.perf_counter() - t_start
    md = _markdown(summary, cfg, accuracy, figures, elapsed, stopped)
    if skipped:
        md += "\nSkipped datasets: " + "; ".join(skipped) + "\n"
    md += "\nModel test accuracies (attacked models): " + ", ".join(f"{k} {v:.3f}" for k, v in model_acc.items()) + "\n"
    atomic_write_text(run_dir / "leakage.md", md)
    write_json(run_dir / "summary.json", {"cells": summary, "accuracy": accuracy, "model_acc": model_acc,
                                           "seconds": elapsed, "stopped_early": stopped, "skipped": skipped})
    return atomic_write_text(run_dir / "report.md", md)
