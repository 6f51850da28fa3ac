"""Baseline for bench/eval.py: the original's evaluation of one image, a per-pixel Python loop (SPEC 9.2).

Kept as a direct transcription, slow on purpose: every pixel whose GT is a class (< 21, so 255 is skipped)
increments M[gt, pred] of a float confusion matrix, one Python operation per pixel.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

NUM_CLASSES = 21


def confusion_loop(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[H, W] GT and prediction -> [C, C] float64 counts, one pixel at a time as the original."""
    conf = np.zeros((num_classes, num_classes))
    height, width = gt.shape
    for i in range(height):
        for j in range(width):
            g = gt[i, j]
            if g < num_classes:
                conf[g, pred[i, j]] += 1
    return conf


def evaluate_pair_loop(gt_path: str, pred_path: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Decode one GT/prediction pair with PIL and count it with the loop."""
    gt = np.array(Image.open(gt_path)).astype(np.int64)
    pred = np.array(Image.open(pred_path)).astype(np.int64)
    return confusion_loop(gt, pred, num_classes)
