"""The masks of a training-mode forward as class-index maps (utils/inference_tools.py) and their scores against GT
masks (utils/metrics.MaskScores), on hand-built inputs with hand-derived numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from utils.inference_tools import forward_masks, label_maps, pseudo_label_map, single_scale_prediction
from utils.mask_eval import Entry, evaluate_image
from utils.metrics import MASK_KINDS, MaskScores, scores_from_confusion

GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 0, 1]], dtype=np.uint8)


def test_mask_scores_by_hand():
    """Background: TP 3, FN 1, FP 1 -> IoU 3/5; class 1: TP 2, FN 1, FP 1 -> 2/4; the 255 pixel is left out."""
    s = MaskScores(num_classes=21)
    s.update({"cam": PRED}, GT)
    out = s.summary()
    assert out == pytest.approx({"miou_cam": (0.6 + 0.5) / 2, "miou21_cam": (0.6 + 0.5) / 21})


def test_pseudo_labels_are_scored_where_they_label_and_counted_by_coverage():
    pseudo = np.array([[0, 255, 1, 1],
                       [255, 0, 1, 255]], dtype=np.uint8)
    s = MaskScores()
    s.update({"pseudo": torch.from_numpy(pseudo)}, torch.from_numpy(GT).long())
    out = s.summary()
    # the 5 labelled pixels are right; 5 of the 7 labelled GT pixels get a pseudo label
    assert out == pytest.approx({"miou_pseudo": 1.0, "miou21_pseudo": 2 / 21, "pseudo_coverage": 5 / 7})


def test_pseudo_labels_with_misses_score_as_eval_seg_scores_their_pngs(tmp_path):
    """The pseudo labels' misses (unlabelled pixels on labelled GT) give the score eval_seg.py's core gives the same
    masks written as PNGs: one rule for a 255 in a prediction."""
    pseudo = np.array([[0, 255, 1, 1],
                       [255, 0, 255, 255]], dtype=np.uint8)  # the last 255 lies on GT 255
    s = MaskScores()
    s.update({"pseudo": pseudo}, GT)
    # two 255s on GT background, one on GT 1 (misses), one on GT 255 (ignored); 4 labelled pixels, all right
    assert s.misses["pseudo"][:2].tolist() == [2, 1] and s.conf["pseudo"].sum() == 4
    # background: TP 2, FN 2 (the misses), FP 0 -> 2/4; class 1: TP 2, FN 1 (the miss), FP 0 -> 2/3
    expected = scores_from_confusion(s.conf["pseudo"], s.misses["pseudo"])
    assert expected["iou"][:2] == pytest.approx([2 / 4, 2 / 3])
    assert s.summary()["pseudo_coverage"] == pytest.approx(4 / 7)
    Image.fromarray(GT, mode="L").save(tmp_path / "gt.png")
    Image.fromarray(pseudo, mode="L").save(tmp_path / "pred.png")
    png = evaluate_image(Entry(0, "x", str(tmp_path / "gt.png"), str(tmp_path / "pred.png")), None)
    assert np.array_equal(png.conf, s.conf["pseudo"]) and np.array_equal(png.misses, s.misses["pseudo"])
    assert scores_from_confusion(png.conf, png.misses) == expected


def test_merge_of_parts_equals_one_pass_and_kinds_keep_their_order():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 4, (3, 5)).astype(np.uint8) for _ in range(3)]
    maps = [{k: rng.integers(0, 4, (3, 5)).astype(np.uint8) for k in ("pred", "cam")} for _ in range(3)]
    whole, first, rest = MaskScores(), MaskScores(), MaskScores()
    for i, (m, gt) in enumerate(zip(maps, gts)):
        whole.update(m, gt)
        (first if i == 0 else rest).update(m, gt)
    first.merge(rest)
    assert first.summary() == whole.summary()
    assert list(whole.summary()) == ["miou_cam", "miou21_cam", "miou_pred", "miou21_pred"]


def test_pseudo_label_map_marks_unlabelled_pixels():
    pseudo = torch.zeros(1, 3, 1, 3)
    pseudo[0, 2, 0, 0] = 1  # class 2
    pseudo[0, 0, 0, 1] = 1  # background
    assert pseudo_label_map(pseudo).tolist() == [[[2, 0, 255]]]


def test_single_scale_prediction_keeps_predicted_or_given_classes_and_raises_the_background():
    # two pixels; background 0.5 in both, class 1: 0.3 / 0.6, class 2: 0.4 / 0.1
    masks = torch.tensor([[[[0.5, 0.5]], [[0.3, 0.6]], [[0.4, 0.1]]]])  # [1,3,1,2]
    cls = torch.tensor([[2.0, -3.0]])  # sigmoid 0.88 (kept), 0.047 (below the cut 0.1)
    assert single_scale_prediction(masks, cls, 0.1, 1).tolist() == [[[0, 1]]]
    assert single_scale_prediction(masks, cls, 0.1, 2).tolist() == [[[1, 1]]]  # background 0.25
    given = torch.tensor([[0.0, 1.0]])  # GT labels: class 2 only
    assert single_scale_prediction(masks, cls, 0.1, 1, given).tolist() == [[[0, 0]]]
    assert single_scale_prediction(masks, cls, 0.1, 2, given).tolist() == [[[2, 0]]]


def test_label_maps_of_both_models():
    torch.manual_seed(0)
    cam = torch.rand(2, 21, 8, 8)
    ae = {"cls": torch.randn(2, 20), "cam": cam, "dec": torch.rand(2, 21, 8, 8), "logits": torch.randn(2, 21, 4, 4),
          "pseudo": (torch.rand(2, 21, 8, 8) > 0.97).float()}
    maps = label_maps(ae, 0.1, 3)
    assert list(maps) == list(MASK_KINDS)
    assert all(m.shape == (2, 8, 8) and m.dtype == torch.uint8 for m in maps.values())
    assert torch.equal(maps["cam"], cam.argmax(1).to(torch.uint8))
    expected = single_scale_prediction(forward_masks(ae, (8, 8)), ae["cls"], 0.1, 3)
    assert torch.equal(maps["pred"], expected)
    # the CAM baseline: its uncleaned masks, no refinement
    bsl = {"cls": ae["cls"], "cam": cam, "masks": cam}
    maps = label_maps(bsl, 0.1, 1)
    assert list(maps) == ["cam", "pred"] and torch.equal(forward_masks(bsl, (8, 8)), cam)
