"""Pictures of a run: training curves and mask overlays (Matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def training_curves(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> None:
    """Plots every logged quantity per epoch, one panel per name, train and `val_` together."""
    names = sorted({k.removeprefix("val_") for k in history if history[k]})
    if not names:
        return
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            values = history.get(key) or []
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mask_overlays(
    images: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: Path, ncols: int = 4
) -> None:
    """Shows each image with the predicted mask tinted red and the true outline in green.

    Args:
        images: float images in [0, 1], `[N, H, W, 3]`.
        truth: boolean true masks `[N, H, W]`.
        pred: boolean predicted masks `[N, H, W]`.
        path: where to write the PNG.
        ncols: pictures per row.
    """
    from training.metrics import dice_score

    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        shown = np.clip(images[i], 0, 1).copy()
        shown[pred[i]] = 0.55 * shown[pred[i]] + 0.45 * np.array([1.0, 0.1, 0.1])
        ax.imshow(shown)
        ax.contour(truth[i], levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"Dice {dice_score(truth[i], pred[i])[0]:.3f}", fontsize=9)
    fig.suptitle("validation: predicted mask (red), true outline (green)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
