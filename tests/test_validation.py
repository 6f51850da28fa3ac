"""The validation's scores against values derived by hand (SPEC 7.5): per-class AP and the mAP over the classes
present, the checkpoint score, and the shares of several processes merged into one split's scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.metrics import MaskScores, checkpoint_score, class_average_precision, mean_average_precision
from utils.validation import SplitPart, score_split

# three images, three classes: class 0 ranked pos, neg, pos; class 1 ranked perfectly; class 2 never present
Y_TRUE = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
Y_SCORE = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.4, 0.2, 0.1]])


def test_average_precision_by_hand():
    """Class 0: precision 1 at recall 1/2, 2/3 at recall 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; class 1: AP 1;
    class 2 has no positive image, so no AP (NaN), and the mAP is over the other two: (5/6 + 1) / 2."""
    ap = class_average_precision(Y_TRUE, Y_SCORE)
    assert ap[:2] == pytest.approx([5 / 6, 1.0]) and math.isnan(ap[2])
    assert mean_average_precision(ap) == pytest.approx(11 / 12)
    assert mean_average_precision(class_average_precision(np.zeros((2, 3)), Y_SCORE[:2])) is None


def test_checkpoint_score_is_one_minus_the_loss_or_the_predictions_miou():
    assert checkpoint_score(0.072, {"miou_pred": 0.5}, "loss") == pytest.approx(0.928)  # e020Xs0.928
    assert checkpoint_score(0.072, {"miou_cam": 0.9, "miou_pred": 0.5}, "miou") == 0.5
    assert checkpoint_score(0.072, {}, "miou") == 0.0  # no masks scored
    with pytest.raises(ValueError, match="loss, miou"):
        checkpoint_score(0.072, {}, "iou")


def _part(batches: list[tuple[int, float, int]], rows: list[int], pred: list[list[int]], gt: list[list[int]]
          ) -> SplitPart:
    masks = MaskScores(3)
    masks.update({"pred": np.array(pred)}, np.array(gt))
    return SplitPart([(b, {"loss": loss * n}, n) for b, loss, n in batches], torch.tensor(Y_SCORE[rows]),
                     torch.tensor(Y_TRUE[rows]), masks)


def test_the_shares_of_two_processes_score_as_one_split():
    # rank 0: 2 images of global batch 0 (mean loss 1) and 1 of batch 1 (loss 3); rank 1: 2 images of batch 0
    # (mean loss 2). Batch 0's mean is (2 + 4) / 4 = 1.5, batch 1's 3; the split's mean over batches 2.25.
    rank0 = _part([(0, 1.0, 2), (1, 3.0, 1)], [0, 1], pred=[[0, 1]], gt=[[0, 1]])
    rank1 = _part([(0, 2.0, 2)], [2], pred=[[2, 2]], gt=[[2, 1]])
    result = score_split([rank0, rank1], epoch=4, split="val", num_classes=3)
    assert result.means == {"loss": pytest.approx(2.25)}
    assert result.ap[:2] == pytest.approx([5 / 6, 1.0])
    # both ranks' masks: TP 1 for each class, one GT pixel of class 1 predicted 2 -> IoU 1, 1/2, 1/2
    assert result.mask_scores["miou_pred"] == pytest.approx(2 / 3)
    # the shares are not merged into each other: every process scores the same sum of all of them
    assert rank0.masks.conf["pred"].sum() == 2 and rank1.masks.conf["pred"].sum() == 2
    assert score_split([rank0, rank1], 4, "val", 3).mask_scores == result.mask_scores


def test_a_split_without_a_readable_image_is_an_error():
    empty = SplitPart([], None, None, MaskScores(3))
    with pytest.raises(UserError, match="validation at epoch 2: no readable image in the train split"):
        score_split([empty, empty], epoch=2, split="train", num_classes=3)
