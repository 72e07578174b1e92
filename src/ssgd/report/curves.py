"""Line plots of values per epoch or per round (training curves), one home for every run folder's curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from .io import new_figure, save_figure

__all__ = ["Panel", "plot_curves"]

# one panel: (x label, y label, {series label: (xs, ys)}); a series with no points is left out
Panel = tuple[str, str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]


def plot_curves(path: str | os.PathLike, panels: Sequence[Panel], title: str) -> Path:
    """Side-by-side panels of lines with markers, saved atomically as PNG (:func:`ssgd.report.save_figure`)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (xlabel, ylabel, series) in zip(axes[0], panels):
        for i, (label, (xs, ys)) in enumerate(series.items()):
            if len(xs):
                ax.plot(list(xs), list(ys), "os^vd"[i % 5] + "-", label=label, markersize=4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and rounds are whole
        ax.grid(alpha=0.3)
        if any(len(xs) for xs, _ in series.values()):
            ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)
