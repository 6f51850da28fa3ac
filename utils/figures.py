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
                          title: str = "") -> None:
    """Row-normalised confusion matrix: where the pixels of each GT class went, in % of the class."""
    norm = row_normalise(conf)  # [C, C]
    n = norm.shape[0]
    side = max(4.0, CELL_INCHES * n + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=class_names[:n], rotation=90)
    ax.set_yticks(range(n), labels=class_names[:n])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    for i in range(n):
        for j in range(n):
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
