"""Segmentation scores from a confusion matrix: per-class IoU, precision, recall and their means (SPEC 9.2).

The confusion matrix is accumulated over a whole split (rows = GT class, columns = predicted class) and the
scores are computed once at the end (SPEC 9.2); per-image IoUs are never averaged.
Scores are fractions in [0, 1]; the printed table multiplies them by 100.

The masks of a training-mode forward (raw, PAMR-refined, pseudo labels) and the single-scale final prediction
are scored the same way by ``MaskScores`` (validation during training, tools/eval_pseudo.py); it takes numpy
arrays or torch tensors, and this module imports no torch (eval_seg.py runs without it). The validation during
training also takes its classification AP and the score that picks snapshots from here.
"""
from __future__ import annotations

import numpy as np

from datasets.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

# added to every denominator (SPEC 9.2): a class that is absent and never predicted scores 0
EPS = 1e-20
NO_CLASS = IGNORE_INDEX  # a prediction pixel without a class: what pseudo-label masks leave unlabelled
NAME_WIDTH = 12  # the class-name column; wider only for longer names (COCO's "baseball glove"), never for VOC
TABLE_WIDTH = 44  # "{:>12}" + 4 x " | {:>5}"; the separator is 44 dashes (SPEC 9.2)
_HEAD_FMT = "{:>{w}}" + " | {:>5}" * 4
_ROW_FMT = "{:>{w}} | {:>5}" + " | {:>5.1f}" * 3
_ORIGINAL_SUMMARY_FMT = "mIoU: {:.2f}\t  Pr: {:.2f}\t  Re: {:.2f}"  # SPEC 9.2's summary lines, tabs included
_WITH_BACKGROUND = "With background: "  # trailing space included
_SUMMARY_FMT = "mIoU: {:.2f}  Pr: {:.2f}  Re: {:.2f}"  # the summary over the classes present


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Pixel counts [C, C] int64, rows = GT class, columns = predicted class.

    gt, pred: integer arrays of the same shape (e.g. [H, W]). GT pixels with a value >= num_classes (255,
    "ambiguous") are ignored; predictions must lie in 0..C-1. One bincount of ``C * gt + pred``: since
    pred < C, every index below C * C comes from a GT value below C, so ignoring GT 255 is a slice.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} differs from prediction shape {pred.shape}")
    size = num_classes * num_classes
    if gt.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    if pred.min() < 0 or pred.max() >= num_classes:
        raise ValueError(f"prediction values must lie in 0..{num_classes - 1}, found {pred.min()}..{pred.max()}")
    if gt.min() < 0:
        raise ValueError(f"GT values must not be negative, found {gt.min()}")
    # 8-bit PNGs (the usual case) fit a uint16 index (255 * C + C - 1 < 2**16 for C <= 256), which is
    # several times faster to build than a 64-bit one
    small = gt.dtype == np.uint8 and pred.dtype == np.uint8 and num_classes <= 256
    index = gt.astype(np.uint16 if small else np.intp).ravel() * num_classes + pred.ravel()  # [H*W]
    counts = np.bincount(index, minlength=size)[:size]
    return counts.astype(np.int64).reshape(num_classes, num_classes)


def confusion_and_misses(gt: np.ndarray, pred: np.ndarray,
                         num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """(confusion matrix [C, C], misses [C]) of a prediction that may leave pixels without a class.

    A prediction pixel of NO_CLASS (255, as pseudo-label masks leave the pixels they do not label) predicts no
    class: where the GT is 255 too it is ignored like any other pixel there; elsewhere it is a miss of the GT
    class, counted in ``misses[gt]`` (a false negative of that class) and a false positive of none. Every other
    prediction value must lie in 0..C-1, as for ``confusion_matrix``.
    """
    pred = np.asarray(pred)
    no_class = pred == NO_CLASS
    if not no_class.any():  # the usual prediction: one pass, no copies
        return confusion_matrix(gt, pred, num_classes), np.zeros(num_classes, dtype=np.int64)
    gt = np.asarray(gt)
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} differs from prediction shape {pred.shape}")
    # the matrix over the pixels with a class (the others' GT set to 255, ignored), the misses by their GT class
    conf = confusion_matrix(np.where(no_class, IGNORE_INDEX, gt), np.where(no_class, 0, pred), num_classes)
    missed_gt = gt[no_class]
    missed_gt = missed_gt[missed_gt < num_classes].astype(np.intp)
    return conf, np.bincount(missed_gt, minlength=num_classes).astype(np.int64)


def tp_fn_fp(conf: np.ndarray, misses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positives, false negatives (row sum - TP, plus the ``misses`` of ``confusion_and_misses``)
    and false positives (column sum - TP), each [C]."""
    conf = np.asarray(conf)
    tp = np.diag(conf)
    fn = conf.sum(axis=1) - tp
    if misses is not None:
        fn = fn + np.asarray(misses)
    return tp, fn, conf.sum(axis=0) - tp


def image_class_scores(conf: np.ndarray, misses: np.ndarray | None = None) -> dict[int, int]:
    """TP - FN - FP of one image for every class present in its GT (the --log-scores ranking, SPEC 9.2)."""
    tp, fn, fp = tp_fn_fp(conf, misses)
    present = np.flatnonzero(tp + fn > 0)  # GT pixels of the class
    return {int(c): int(tp[c] - fn[c] - fp[c]) for c in present}


def _mean(values: np.ndarray, select: np.ndarray) -> float:
    return float(values[select].mean()) if select.any() else 0.0


def scores_from_confusion(conf: np.ndarray, misses: np.ndarray | None = None) -> dict:
    """Per-class scores and the three class means of a [C, C] confusion matrix (plain Python types, JSON-ready),
    with the prediction's pixels without a class as ``misses`` [C] of their GT class (``confusion_and_misses``).

    Keys: ``count`` (GT pixels per class), ``iou``, ``precision``, ``recall`` (lists of C fractions),
    ``iou_defined`` (TP + FP + FN > 0), and for each average ``miou_*``, ``precision_*``, ``recall_*`` with
    ``*`` = ``fg`` (the C-1 foreground classes: the first summary line), ``<C>`` (all classes with
    background: ``21`` for VOC, the standard PASCAL VOC mIoU and the "With background" line; ``81`` for
    COCO) and ``present``
    (only the classes with iou_defined, for data sets that use fewer classes).
    """
    conf = np.asarray(conf, dtype=np.float64)
    tp, fn, fp = tp_fn_fp(conf, misses)
    per_class = {
        "iou": tp / (tp + fp + fn + EPS),
        "precision": tp / (tp + fp + EPS),
        "recall": tp / (tp + fn + EPS),
    }
    num_classes = conf.shape[0]
    defined = (tp + fp + fn) > 0
    subsets = {
        "fg": np.arange(num_classes) > 0,
        str(num_classes): np.ones(num_classes, dtype=bool),
        "present": defined,
    }
    out: dict = {"count": [int(v) for v in tp + fn]}
    out.update({k: [float(v) for v in vals] for k, vals in per_class.items()})
    out["iou_defined"] = [bool(v) for v in defined]
    for name, select in subsets.items():
        out[f"miou_{name}"] = _mean(per_class["iou"], select)
        out[f"precision_{name}"] = _mean(per_class["precision"], select)
        out[f"recall_{name}"] = _mean(per_class["recall"], select)
    return out


def _summary(scores: dict, name: str, fmt: str) -> str:
    return fmt.format(100 * scores[f"miou_{name}"], 100 * scores[f"precision_{name}"], 100 * scores[f"recall_{name}"])


def format_scores(scores: dict, class_names: tuple[str, ...] = CLASS_NAMES) -> list[str]:
    """The printed table and summary lines of SPEC 9.2 byte for byte, then one line over the classes present.

    ``Class | # | IoU | Pr | Re`` with right-aligned columns (count = GT pixels, scores in % with one decimal)
    between 44-dash separators, the 20-class mean, a separator, "With background: " on a line of its own and the
    21-class mean (the standard VOC mIoU) under it; the summaries are tab-separated.
    The last line is the mean over the classes that occur in the GT or the prediction. With C classes the table has C
    rows and the second summary is the C-class mean.
    """
    w = max([NAME_WIDTH] + [len(class_names[c]) for c in range(len(scores["count"]))])
    separator = "-" * (TABLE_WIDTH + w - NAME_WIDTH)
    lines = [_HEAD_FMT.format("Class", "#", "IoU", "Pr", "Re", w=w), separator]
    for c, count in enumerate(scores["count"]):
        lines.append(_ROW_FMT.format(class_names[c], count, 100 * scores["iou"][c],
                                     100 * scores["precision"][c], 100 * scores["recall"][c], w=w))
    lines += [separator, _summary(scores, "fg", _ORIGINAL_SUMMARY_FMT), separator,
              _WITH_BACKGROUND, _summary(scores, str(len(scores["count"])), _ORIGINAL_SUMMARY_FMT)]
    lines.append("Over classes present in GT or prediction: " + _summary(scores, "present", _SUMMARY_FMT))
    return lines


# --------------------------------------------------------------------------------------------------------------
# masks of a training-mode forward, scored against GT masks

# what MaskScores scores, in this order: "cam" raw masks, "dec" PAMR-refined masks (both cleaned with the image
# labels), "pseudo" the pseudo labels (on the pixels they label), "pred" the final prediction (single scale);
# utils/inference_tools.label_maps makes them from a training-mode forward
MASK_KINDS = ("cam", "dec", "pseudo", "pred")


class MaskScores:
    """Confusion matrices of the mask kinds against GT masks, and how much of the GT the pseudo labels label.

    Pseudo labels are scored on the pixels they label: their unlabelled pixels (NO_CLASS) are ignored by the
    loss, so ``summary`` counts them in ``pseudo_coverage`` instead of as errors; ``misses`` keeps them by GT
    class, for the score eval_seg.py gives the same masks (``scores_from_confusion(conf, misses)``).
    Accumulators of disjoint image sets add up (``merge``).
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.conf: dict[str, np.ndarray] = {}  # kind -> [C, C] over the pixels the masks label
        self.misses: dict[str, np.ndarray] = {}  # kind -> [C] labelled GT pixels the masks leave unlabelled

    def update(self, maps: dict, gt) -> None:
        """Add a batch: maps kind -> class indices [..., H, W] (NO_CLASS only in "pseudo"), gt [..., H, W]."""
        gt = _numpy_u8(gt)
        for kind, lab in maps.items():
            conf, misses = confusion_and_misses(gt, _numpy_u8(lab), self.num_classes)
            self.conf[kind] = self.conf.get(kind, 0) + conf
            self.misses[kind] = self.misses.get(kind, 0) + misses

    def merge(self, other: "MaskScores") -> None:
        for kind, conf in other.conf.items():
            self.conf[kind] = self.conf.get(kind, 0) + conf
            self.misses[kind] = self.misses.get(kind, 0) + other.misses[kind]

    def summary(self) -> dict[str, float]:
        """``miou_<kind>`` (mean IoU over the classes present in the GT or the masks), ``miou<C>_<kind>`` (over
        all C classes: ``miou21_<kind>`` is the standard VOC mIoU) for every kind seen, and ``pseudo_coverage``
        (fraction of the labelled GT pixels that the pseudo labels label) when pseudo labels were seen; kinds in
        MASK_KINDS order."""
        out: dict[str, float] = {}
        for kind in sorted(self.conf, key=lambda k: MASK_KINDS.index(k) if k in MASK_KINDS else len(MASK_KINDS)):
            if self.conf[kind].sum() == 0:
                continue
            s = scores_from_confusion(self.conf[kind])
            out[f"miou_{kind}"] = s["miou_present"]
            out[f"miou{self.num_classes}_{kind}"] = s[f"miou_{self.num_classes}"]
        if "pseudo" in self.conf:
            labelled, missed = int(self.conf["pseudo"].sum()), int(self.misses["pseudo"].sum())
            if labelled + missed:
                out["pseudo_coverage"] = labelled / (labelled + missed)
        return out


def _numpy_u8(x) -> np.ndarray:
    """A torch tensor (this module does not import torch: eval_seg.py runs without it) or array as uint8."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.uint8, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# validation during training (SPEC 7.5): the classification AP and the checkpoint score

SNAPSHOT_SCORES = ("loss", "miou")  # TRAIN.SNAPSHOT_SCORE: 1 - mean validation loss (SPEC 7.5), or mIoU
SCORED_PRED = "miou_pred"  # the MaskScores key "miou" selects by: the final prediction's mIoU over classes present


def class_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-class average precision [K] of image-level scores y_score [N,K] against 0/1 labels y_true [N,K]
    (scikit-learn's, SPEC 7.5); NaN for a class without a positive image, whose AP is undefined."""
    from sklearn.metrics import average_precision_score  # only training imports scikit-learn

    y_true = np.asarray(y_true).astype(np.int64)
    present = y_true.sum(0) > 0
    ap = np.full(y_true.shape[1], np.nan)
    if present.any():
        ap[present] = average_precision_score(y_true[:, present], np.asarray(y_score)[:, present], average=None)
    return ap


def mean_average_precision(ap: np.ndarray) -> float | None:
    """The mAP over the classes that have an AP (absent classes are left out, not counted as 0); None if none has."""
    ap = np.asarray(ap, dtype=np.float64)
    return float(np.nanmean(ap)) if not np.isnan(ap).all() else None


def checkpoint_score(mean_loss: float, mask_scores: dict[str, float], kind: str) -> float:
    """The score that picks snapshots (TRAIN.SNAPSHOT_SCORE ``kind``): "loss", 1 - mean validation loss (SPEC 7.5);
    "miou", the mIoU of the validation's final prediction (``MaskScores.summary``; 0 if nothing was scored)."""
    if kind == "loss":
        return 1.0 - mean_loss
    if kind == "miou":
        return mask_scores.get(SCORED_PRED, 0.0)
    raise ValueError(f"snapshot score {kind!r}: expected one of {', '.join(SNAPSHOT_SCORES)}")


# ---------------------------------------------------------------------------------------------------------------
# the background-threshold sweep of class activation maps (how the field reports CAM quality)

def default_thresholds() -> list[float]:
    """0.05, 0.10, ..., 0.95: the usual sweep of eval_cam scripts over CAMs normalised to [0, 1]."""
    return [round(0.05 * k, 2) for k in range(1, 20)]


def best_foreground(fg_scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best of the image's GT classes at every pixel: fg_scores [C-1, H, W], labels [C-1] 0/1 ->
    (its score [H, W] float32, -inf where the image has no label; the class [H, W] in 1..C-1, 0 without labels)."""
    keep = np.asarray(labels).astype(bool)  # [C-1]
    scores = np.where(keep[:, None, None], np.asarray(fg_scores, dtype=np.float32), -np.inf)  # [C-1, H, W]
    best = scores.max(0)  # [H, W]
    cls = np.where(np.isfinite(best), scores.argmax(0) + 1, 0)  # [H, W]
    return best.astype(np.float32), cls.astype(np.uint8)


def threshold_prediction(best: np.ndarray, cls: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """``argmax([t, s_1, ..., s_{C-1}])`` from ``best_foreground``'s maps: the class where its score exceeds the
    constant background score t, background elsewhere (a tie goes to the background, the argmax's first channel).
    best, cls [H, W]; threshold a scalar or [T, 1, 1] -> [H, W] or [T, H, W]."""
    return np.where(best > np.asarray(threshold, dtype=np.float32), cls, 0).astype(np.uint8)


def threshold_sweep_confusion(fg_scores: np.ndarray, labels: np.ndarray, gt: np.ndarray,
                              thresholds: np.ndarray | list[float], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrices [T, C, C] of one image's masks with a constant background score t, for every t.

    fg_scores [C-1, H, W]: foreground scores (CAMs or masks); labels [C-1] 0/1: the image's GT classes, the only
    ones that may be predicted; gt [H, W] with 255 ignored; thresholds [T]. For each t the prediction is
    ``threshold_prediction``: a pixel is its best labelled class c where s_c > t and background otherwise.
    One bincount over ``(t * C + gt) * C + pred`` for all thresholds at once.
    """
    gt = np.asarray(gt)
    if np.shape(fg_scores)[1:] != gt.shape:
        raise ValueError(f"score maps {np.shape(fg_scores)[1:]} differ from GT shape {gt.shape}")
    thresholds = np.asarray(thresholds, dtype=np.float32)  # [T]
    num_t = len(thresholds)
    best, cls = best_foreground(fg_scores, labels)  # [H, W] each
    pred = threshold_prediction(best, cls, thresholds[:, None, None])  # [T, H, W]
    valid = gt < num_classes  # [H, W]
    gt_v = gt[valid].astype(np.intp)  # [N]
    pred_v = pred[:, valid].astype(np.intp)  # [T, N]
    index = (np.arange(num_t)[:, None] * num_classes + gt_v[None]) * num_classes + pred_v  # [T, N]
    size = num_t * num_classes * num_classes
    return np.bincount(index.ravel(), minlength=size).astype(np.int64).reshape(num_t, num_classes, num_classes)


def sweep_scores(confs: np.ndarray, thresholds: np.ndarray | list[float]) -> dict:
    """The mIoU at every threshold of a sweep and the best threshold (JSON-ready).

    confs [T, C, C] accumulated over a split by ``threshold_sweep_confusion``. The mIoU is over the classes
    present (``miou_present`` of ``scores_from_confusion``); the best threshold is the one with the highest such
    mIoU (the lowest threshold among equals). Keys: ``thresholds``, ``miou`` and ``miou_<C>`` (lists of T; the
    mean over all C classes, ``miou_21`` for VOC),
    ``best_threshold``, ``best_index`` and ``best`` (every score of ``scores_from_confusion`` at that threshold).
    """
    per_t = [scores_from_confusion(c) for c in confs]
    miou = [s["miou_present"] for s in per_t]
    best = int(np.argmax(miou))
    all_classes = f"miou_{np.shape(confs)[-1]}"
    return {"thresholds": [float(t) for t in thresholds], "miou": miou, all_classes: [s[all_classes] for s in per_t],
            "best_threshold": float(thresholds[best]), "best_index": best, "best": per_t[best]}
