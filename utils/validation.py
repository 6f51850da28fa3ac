"""The validation of a training run (SPEC 7.5), in the steps train.py's trainer runs: the forward pass over a
split (each process its share), the shares gathered, the scores, the logs. The checkpoint policy stays with the
trainer, which holds the best score."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from utils.config import AttrDict
from utils.errors import UserError
from utils.inference_tools import label_maps
from utils.metrics import MaskScores, class_average_precision, mean_average_precision
from utils.training import batch_to_device, forward_losses

MASK_NAMES = {"cam": "raw masks", "dec": "PAMR-refined masks", "pseudo": "pseudo labels", "pred": "prediction"}


@dataclass
class SplitPart:
    """One process's share of a validation pass."""

    batches: list[tuple[int, dict[str, float], int]]  # (global batch index, logged value x its images, its images)
    scores: torch.Tensor | None  # [N,C-1] sigmoid of the class scores
    targets: torch.Tensor | None  # [N,C-1] image labels
    masks: MaskScores  # the masks against the GT masks


@dataclass
class ValidationResult:
    means: dict[str, float]  # each logged value (loss_cls, loss_fg, loss_mask, loss): mean over the global batches
    ap: np.ndarray  # [C-1] average precision per foreground class, NaN where the split has no positive image
    mask_scores: dict[str, float]  # MaskScores.summary() over the whole split


def forward_split(net: nn.Module, criterion: Callable, loader: DataLoader, epoch: int, cfg: AttrDict,
                  num_classes: int, device: torch.device) -> SplitPart:
    """Every batch of this process through the training-mode forward without gradients (PAMR, pseudo labels and
    the mask loss included; the caller puts the model in eval mode), its losses, class scores and masks."""
    batches: list[tuple[int, dict[str, float], int]] = []
    scores, targets = [], []
    masks = MaskScores(num_classes)
    test = cfg.TEST
    with torch.no_grad():
        for b, batch in enumerate(loader):
            if batch is None:  # every image of the batch was skipped (TRAIN.ON_CORRUPT skip)
                continue
            image, labels, gt_mask = batch_to_device(batch, cfg, device)
            _, logs, out = forward_losses(net, criterion, image, labels, epoch, cfg, gt_mask)
            n = image.shape[0]
            batches.append((b, {k: v.item() * n for k, v in logs.items()}, n))
            scores.append(torch.sigmoid(out["cls"].float()).cpu())
            targets.append(labels.cpu())
            # the masks against the GT masks of the (validation-transformed) images
            masks.update(label_maps(out, test.FP_CUT_SCORE, test.BG_POW,
                                    labels if test.USE_GT_LABELS else None), batch[3])
    return SplitPart(batches, torch.cat(scores) if scores else None, torch.cat(targets) if targets else None, masks)


def score_split(parts: Sequence[SplitPart], epoch: int, split: str, num_classes: int) -> ValidationResult:
    """The scores of a split from the shares of all processes (in rank order).

    The loss means are per global batch first (the shards of one batch have the same index on every process), then
    over the batches: the mean of per-batch losses of SPEC 7.5.
    """
    merged: dict[int, tuple[dict[str, float], int]] = {}
    for part in parts:
        for b, sums, n in part.batches:
            acc, m = merged.get(b, ({}, 0))
            merged[b] = ({k: acc.get(k, 0.0) + v for k, v in sums.items()}, m + n)
    if not merged:
        raise UserError(f"validation at epoch {epoch}: no readable image in the {split} split")
    means = {k: float(np.mean([s[k] / n for s, n in merged.values()])) for k in next(iter(merged.values()))[0]}
    y_score = torch.cat([p.scores for p in parts if p.scores is not None]).numpy()
    y_true = torch.cat([p.targets for p in parts if p.targets is not None]).numpy()
    masks = MaskScores(num_classes)
    for part in parts:
        masks.merge(part.masks)
    return ValidationResult(means, class_average_precision(y_true, y_score), masks.summary())


def log_validation(writer: Any, result: ValidationResult, epoch: int, class_names: Sequence[str]) -> None:
    """The validation's logs (SPEC 7.5): ``AP_<name>`` lines and ``%02d_<name>/AP`` tags, ``mAP`` and
    ``all_wo_BG/mAP``, ``<key>: <mean>`` lines and ``all/<key>`` tags; then the masks' scores."""
    for k, ap in enumerate(result.ap):
        name = class_names[k + 1]
        if not np.isnan(ap):
            # COCO's names have spaces ("traffic light"), which tags avoid; VOC's names have none
            writer.add_scalar("%02d_%s/AP" % (k + 1, name.replace(" ", "_")), ap, epoch)
            print("AP_{}: {:4.3f}".format(name, ap))
    absent = [class_names[k + 1] for k, ap in enumerate(result.ap) if np.isnan(ap)]
    if absent:
        print(f"No AP for {len(absent)} classes absent from this split (left out of the mAP): " + ", ".join(absent))
    mean_ap = mean_average_precision(result.ap)
    if mean_ap is not None:
        writer.add_scalar("all_wo_BG/mAP", mean_ap, epoch)
        print("mAP: {:4.3f}".format(mean_ap))
    for k, v in result.means.items():
        writer.add_scalar(f"all/{k}", v, epoch)
        print("{}: {:4.3f}".format(k, v))
    log_mask_scores(writer, result.mask_scores, epoch, len(class_names))


def log_mask_scores(writer: Any, scores: dict[str, float], epoch: int, num_classes: int) -> None:
    """The masks' scores of a validation (``MaskScores.summary``) as TensorBoard scalars ``masks/<key>`` and console
    lines after those of SPEC 7.5: mIoU over the classes present and over all C classes (21 for VOC), in %."""
    for k, v in scores.items():
        writer.add_scalar(f"masks/{k}", v, epoch)
    for kind, name in MASK_NAMES.items():
        if f"miou_{kind}" in scores:
            print("mIoU {}: {:.2f} (classes present), {:.2f} (all {} classes)".format(
                name, 100 * scores[f"miou_{kind}"], 100 * scores[f"miou{num_classes}_{kind}"], num_classes))
    if "pseudo_coverage" in scores:
        print("pseudo labels label {:.1f}% of the GT pixels".format(100 * scores["pseudo_coverage"]))
