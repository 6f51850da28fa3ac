"""Evaluation figures for people who would rather look than read: the confusion matrix and per-class IoU bars.

Rendered with matplotlib's Agg backend (no display needed) and written atomically as PNG.
"""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.fileio import atomic_path  # noqa: E402

FIG_DPI = 100
CELL_INCHES = 0.42  # size of one confusion-matrix cell: room for a two-digit percentage


def _save(fig: "matplotlib.figure.Figure", path: str | os.PathLike) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=FIG_DPI)
    finally:
        plt.close(fig)


def row_normalise(conf: np.ndarray) -> np.ndarray:
    """[C, C] counts -> [C, C] fraction of each GT class's pixels per predicted class (all-zero rows stay 0)."""
    conf = np.asarray(conf, dtype=np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    return np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)


def save_confusion_figure(conf: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "", pred_names: Sequence[str] | None = None) -> None:
    """Row-normalised confusion matrix: where the pixels of each GT class went, in % of the class.

    conf [R, P]: R GT classes (``class_names``) by P predicted ones (``pred_names``; the GT's when not given, for
    the usual square matrix).
    """
    norm = row_normalise(conf)  # [R, P]
    rows, cols = norm.shape
    pred_names = class_names if pred_names is None else pred_names
    fig, ax = plt.subplots(figsize=(max(4.0, CELL_INCHES * cols + 2.0) + 1.0, max(4.0, CELL_INCHES * rows + 2.0)))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(cols), labels=pred_names[:cols], rotation=90)
    ax.set_yticks(range(rows), labels=class_names[:rows])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    for i in range(rows):
        for j in range(cols):
            if norm[i, j] >= 0.005:  # cells that round to 0% stay empty to keep the matrix readable
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the GT class's pixels")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.tight_layout()
    _save(fig, path)


def save_iou_figure(iou: Sequence[float], class_names: Sequence[str], path: str | os.PathLike,
                    defined: Sequence[bool] | None = None, title: str = "") -> None:
    """Per-class IoU bars in %; classes absent from both GT and prediction (if ``defined`` is given) are grey."""
    values = 100 * np.asarray(iou, dtype=np.float64)
    n = len(values)
    colours = ["tab:blue" if defined is None or defined[c] else "lightgrey" for c in range(n)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 1.5), 4.5))
    bars = ax.bar(range(n), values, color=colours)
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(n), labels=class_names[:n], rotation=90)
    ax.set_ylim(0, 110)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title or "per-class IoU")
    fig.tight_layout()
    _save(fig, path)


def save_curves_figure(panels: dict[str, dict[str, dict[int, float]]], path: str | os.PathLike,
                       title: str = "") -> None:
    """Training curves: one axis per panel ({panel title: {series name: {epoch: value}}}), side by side.

    Series whose name starts with "val" are dashed (validation); every point is marked, so that a run of one or
    two epochs still shows its values.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, points in sorted(series.items()):
            steps = sorted(points)
            ax.plot(steps, [points[s] for s in steps], marker="o", markersize=3,
                    linestyle="--" if label.startswith("val") else "-", label=label)
        epochs = [e for points in series.values() for e in points]
        if epochs and max(epochs) == min(epochs):  # one epoch: whole-number ticks around it
            ax.set_xlim(min(epochs) - 1, max(epochs) + 1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
