"""``ssgd attack``: one gradient-inversion attack on one shared update; writes result.json and a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["attack_cmd"]


def attack_cmd(
    attack: str = typer.Option("dlg", help="dlg | idlg | inverting | analytic | dlg-unit | inverting-layer "
                                           "(optionally with parameters, e.g. 'inverting:restarts=8,init=randn'; "
                                           "init=uniform|randn|mean)"),
    defense: str = typer.Option("none", help="defence spec, e.g. ssgd-global, ssgd-shards:m=4, noise:sigma=0.01"),
    dataset: str = typer.Option("mnist", help="dataset name"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the dataset's files", file_okay=False),
    batch_size: int = typer.Option(1, help="images in the attacked batch"),
    index: int = typer.Option(0, help="first training image of the batch"),
    iters: Optional[int] = typer.Option(None, help="optimiser iterations (default: the attack's own)"),
    model: str = typer.Option("auto", help="model: auto (lenet; mlp for analytic) | lenet | mlp | convnet"),
    trained_epochs: int = typer.Option(0, help="train the model briefly (Adam) for this many epochs first"),
    labels_known: bool = typer.Option(False, help="give the attacker the true labels"),
    seed: int = typer.Option(0, help="random seed (model init, attack init, defence noise)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/attack-<time>)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Attack the update a node shares for one batch of real images and score the reconstruction."""
    from ..attacks import get_attack
    from ..data import load_dataset
    from ..defenses import get_defense
    from ..experiments.leakage import attack_once, build_state_model
    from ._experiment_cli import open_run_dir
    from ..report.io import atomic_write_text, new_figure, save_figure, write_json

    try:
        get_attack(attack)
        get_defense(defense)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if batch_size < 1:
        raise typer.BadParameter(f"--batch-size {batch_size} must be >= 1")
    if iters is not None and iters < 1:
        raise typer.BadParameter(f"--iters {iters} must be >= 1 (or leave it out for the attack's default)")
    if trained_epochs < 0:
        raise typer.BadParameter(f"--trained-epochs {trained_epochs} must be >= 0")
    try:
        data = load_dataset(dataset, data_dir)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    n = data.x_train.shape[0]
    if not 0 <= index <= n - batch_size:
        raise typer.BadParameter(f"--index {index} with --batch-size {batch_size} is outside the {n} training images; "
                                 f"use 0 <= index <= {n - batch_size}")
    name = model if model != "auto" else ("mlp" if attack.split(":")[0] in ("analytic", "analytic-aware") else "lenet")
    try:
        net, acc = build_state_model(name, "trained" if trained_epochs else "untrained", data, seed=seed,
                                     epochs=trained_epochs, progress=progress)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    x, y = data.x_train[index:index + batch_size], data.y_train[index:index + batch_size]
    try:
        res = attack_once(net, x, y, attack, defense, iters=iters, seed=seed, labels_known=labels_known,
                          mean_image=data.x_test.mean(0), public_images=data.x_test, progress=progress)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run_dir = open_run_dir(out, "attack", resumable=False)
    result = res["result"]
    result.update(dataset=dataset, model=name, model_test_acc=acc, batch_size=batch_size, index=index, seed=seed,
                  labels_known=labels_known)
    write_json(run_dir / "config.json", {"attack": attack, "defense": defense, "dataset": dataset,
                                         "batch_size": batch_size, "index": index, "iters": iters, "model": name,
                                         "trained_epochs": trained_epochs, "labels_known": labels_known,
                                         "seed": seed})
    write_json(run_dir / "result.json", result)
    rec = res["reconstruction"]
    fig, axes = new_figure(2, batch_size, figsize=(1.4 * batch_size + 0.6, 3.2), squeeze=False)
    for i in range(batch_size):
        for r, (img, lab) in enumerate(((x[i], "original"), (rec[i], "reconstruction"))):
            ax = axes[r][i]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(lab, fontsize=7)
    fig.suptitle(f"{result['attack']} vs {result['defense']}: PSNR {result['psnr']:.1f} dB, "
                 f"SSIM {result['ssim']:.2f}", fontsize=8)
    save_figure(fig, run_dir / "reconstruction.png")
    atomic_write_text(run_dir / "report.md", "\n".join([
        f"# {result['attack']} vs {result['defense']}", "",
        f"{dataset}, images {index}..{index + batch_size - 1}, model {name} (test acc. {acc:.3f}), seed {seed}.", "",
        "| PSNR (dB) | SSIM | MSE | label acc. | iterations x restarts | init | seconds |",
        "|---|---|---|---|---|---|---|",
        f"| {result['psnr']:.2f} | {result['ssim']:.3f} | {result['mse']:.4f} | {result['label_acc']:.2f} | "
        f"{result['iterations']} x {result['restarts']} | {result['init']} | {result['seconds']:.2f} |", "",
        "![original vs reconstruction](reconstruction.png)", "",
        "[result.json](result.json)", ""]))
    typer.echo(f"{result['attack']} vs {result['defense']}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}, "
               f"label acc {result['label_acc']:.2f}, {result['iterations']} iterations x {result['restarts']} "
               f"restart(s), init {result['init']}, {result['seconds']:.1f} s  run folder: {run_dir}")
