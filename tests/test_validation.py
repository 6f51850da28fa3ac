"""The validation's scores against values derived by hand (SPEC 7.5): per-class AP and the mAP over the classes
present, and the checkpoint score."""
from __future__ import annotations

import math

import numpy as np
import pytest

from utils.metrics import checkpoint_score, class_average_precision, mean_average_precision

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
