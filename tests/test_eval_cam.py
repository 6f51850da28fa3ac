"""The background-threshold sweep of CAMs: the maths on a hand-made case, tools/eval_cam.py through its CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from PIL import Image

from datasets.pascal_voc import read_file_list
from tests.helpers import EXIT_USER_ERROR, describe, files_under, run_script, save_model_snapshot, stderr_lines
from utils.metrics import (confusion_matrix, default_thresholds, scores_from_confusion, sweep_scores,
                           threshold_sweep_confusion)

C = 21

# one image of 2 x 4 pixels: background on the left, aeroplane (1) on the right, one ignored pixel.
GT = np.array([[0, 0, 1, 1],
               [0, 255, 1, 1]], dtype=np.uint8)
LABELS = np.zeros(C - 1, dtype=np.float32)
LABELS[0] = 1.0  # aeroplane only
SCORES = np.zeros((C - 1, 2, 4), dtype=np.float32)
SCORES[0] = [[0.1, 0.3, 0.5, 0.7],
             [0.2, 0.9, 0.6, 0.8]]  # the 0.9 lies on GT 255
SCORES[1] = 0.95  # bicycle scores everywhere but is not among the image's labels: never predicted
# t = 0.2: aeroplane where s > 0.2: [0,1,1,1] / [0,-,1,1]: bg TP 2 FN 1; aeroplane TP 4 FP 1
#          IoU bg 2/3, aeroplane 4/5 -> mIoU (bg, aeroplane) 0.7333
# t = 0.4: [0,0,1,1] / [0,-,1,1]: perfect -> 1.0 (the best threshold)
# t = 0.65: [0,0,0,1] / [0,-,0,1]: bg TP 3 FP 2 -> 3/5; aeroplane TP 2 FN 2 -> 2/4 -> 0.55
THRESHOLDS = [0.2, 0.4, 0.65]


def test_threshold_sweep_by_hand():
    confs = threshold_sweep_confusion(SCORES, LABELS, GT, THRESHOLDS, C)
    assert confs.shape == (3, C, C) and confs.dtype == np.int64
    expected = np.zeros((3, C, C), dtype=np.int64)
    expected[0, 0, 0], expected[0, 0, 1], expected[0, 1, 1] = 2, 1, 4
    expected[1, 0, 0], expected[1, 1, 1] = 3, 4
    expected[2, 0, 0], expected[2, 1, 0], expected[2, 1, 1] = 3, 2, 2
    np.testing.assert_array_equal(confs, expected)
    s = sweep_scores(confs, THRESHOLDS)
    np.testing.assert_allclose(s["miou"], [(2 / 3 + 4 / 5) / 2, 1.0, (3 / 5 + 2 / 4) / 2])
    np.testing.assert_allclose(s["miou_21"], np.array([(2 / 3 + 4 / 5), 2.0, (3 / 5 + 2 / 4)]) / 21)
    assert s["best_threshold"] == 0.4 and s["best_index"] == 1
    assert s["best"]["iou_defined"][:3] == [True, True, False] and s["best"]["miou_present"] == 1.0


def test_threshold_sweep_ties_and_images_without_labels():
    # a score equal to t is background (the constant background channel comes first in the argmax)
    confs = threshold_sweep_confusion(SCORES, LABELS, GT, [0.5], C)
    assert confs[0, 1, 0] == 1 and confs[0, 1, 1] == 3
    # no foreground label: background everywhere, whatever the scores
    confs = threshold_sweep_confusion(SCORES, np.zeros(C - 1), GT, [0.0, 0.5], C)
    assert (confs[:, :, 0].sum(1) == 7).all() and confs[:, :, 1:].sum() == 0
    # among equal mIoUs the lowest threshold is the best
    same = np.stack([np.eye(C, dtype=np.int64)] * 2)
    assert sweep_scores(same, [0.3, 0.6])["best_threshold"] == 0.3
    assert default_thresholds()[0] == 0.05 and default_thresholds()[-1] == 0.95 and len(default_thresholds()) == 19


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("eval_cam_snapshots")
    return {m: save_model_snapshot(str(d / f"resnet18_{m}.pth"), "resnet18", m) for m in ("bsl", "ae")}


def _model_args(model: str, snapshot: str) -> list[str]:
    return ["--cfg", "configs/voc_resnet38.yaml", "--set", "NET.BACKBONE", "resnet18", "NET.MODEL", model,
            "--snapshot", snapshot]


def _eval_cam(model: str, snapshot: str, root: str, out: str, *extra: str):
    return run_script("tools/eval_cam.py", *_model_args(model, snapshot), "--root", root,
                      "--list", os.path.join(root, "val_voc.txt"), "--out", out, "--device", "cpu", *extra)


def test_eval_cam_cli_bsl_agrees_with_the_models_own_background(snapshots, synthetic_root, tmp_path):
    """The CAM baseline's masks carry the constant background score 0.1: the sweep at t = 0.1 scores what
    tools/eval_pseudo.py scores for its argmax."""
    out = tmp_path / "bsl"
    proc = _eval_cam("bsl", snapshots["bsl"], synthetic_root, str(out), "--thresholds", "0.3", "0.1", "0.6")
    assert proc.returncode == 0, describe(proc)
    result = json.loads((out / "eval_cam.json").read_text())
    assert result["num_images"] == 6 and result["thresholds"] == [0.1, 0.3, 0.6] and "dec" not in result
    cam = result["cam"]
    assert cam["best_miou"] == max(cam["miou"]) == cam["miou"][cam["best_index"]]
    assert cam["best_threshold"] == result["thresholds"][cam["best_index"]]
    assert f"best threshold of the raw masks: {cam['best_threshold']:.2f}" in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("threshold |") and len(proc.stdout.splitlines()) == 2 + 3 + 1
    pseudo = run_script("tools/eval_pseudo.py", *_model_args("bsl", snapshots["bsl"]), "--root", synthetic_root,
                        "--list", os.path.join(synthetic_root, "val_voc.txt"), "--out", str(tmp_path / "pseudo"),
                        "--no-png", "--device", "cpu")
    assert pseudo.returncode == 0, describe(pseudo)
    expected = json.loads((tmp_path / "pseudo" / "pseudo.json").read_text())["cam"]["miou_present"]
    assert cam["miou"][0] == pytest.approx(expected, abs=1e-9)


def test_eval_cam_cli_ae_sweeps_raw_and_pamr_masks(snapshots, synthetic_root, tmp_path):
    proc = _eval_cam("ae", snapshots["ae"], synthetic_root, str(tmp_path), "--png")
    assert proc.returncode == 0, describe(proc)
    result = json.loads((tmp_path / "eval_cam.json").read_text())
    assert result["thresholds"] == default_thresholds()
    assert "best threshold of the PAMR-refined masks" in proc.stdout
    items = read_file_list(os.path.join(synthetic_root, "val_voc.txt"), synthetic_root, need_masks=True)
    for kind in ("cam", "dec"):
        assert len(result[kind]["miou"]) == 19 and 0.0 <= result[kind]["best_miou"] <= 1.0
        # the PNGs are the masks at the best threshold: scored again, they give the best mIoU
        conf = np.zeros((C, C), dtype=np.int64)
        for img_path, mask_path in items:
            png = Image.open(tmp_path / kind / (os.path.splitext(os.path.basename(img_path))[0] + ".png"))
            assert png.mode == "P"
            conf += confusion_matrix(np.asarray(Image.open(mask_path)), np.asarray(png), C)
        assert scores_from_confusion(conf)["miou_present"] == pytest.approx(result[kind]["best_miou"], abs=1e-12)


def test_eval_pseudo_reports_every_kind_and_agrees_with_eval_seg(snapshots, synthetic_root, tmp_path):
    """tools/eval_pseudo.py on the single-stage model: a figure for each of raw masks, PAMR-refined masks and pseudo
    labels, in the JSON and printed; eval_seg.py on the pseudo-label PNGs it writes gives its with-misses figure
    (an unlabelled pixel is a miss of its GT class in both)."""
    out = tmp_path / "pseudo"
    proc = run_script("tools/eval_pseudo.py", *_model_args("ae", snapshots["ae"]), "--root", synthetic_root,
                      "--list", os.path.join(synthetic_root, "val_voc.txt"), "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, describe(proc)
    result = json.loads((out / "pseudo.json").read_text())
    printed = proc.stdout.splitlines()
    for kind in ("cam", "dec", "pseudo"):
        miou = result[kind]["miou_present"]
        assert 0.0 <= miou <= 1.0 and len(result[kind]["iou"]) == C
        assert any(line.startswith(f"{kind:>7}: mIoU {100 * miou:.2f} (classes present)") for line in printed)
    assert 0.0 <= result["pseudo_coverage"] < 1.0  # an untrained model labels few pixels, or none
    with_misses = result["pseudo"]["miou_present_with_misses"]
    ev = run_script("eval_seg.py", "--data", synthetic_root, "--filelist", os.path.join(synthetic_root, "val_voc.txt"),
                    "--masks", str(out / "pseudo"), "--log-scores", str(tmp_path / "scores.log"))
    assert ev.returncode == 0, describe(ev)
    assert json.loads((out / "pseudo" / "eval.json").read_text())["miou_present"] == pytest.approx(with_misses)


def test_eval_cam_rejects_thresholds_outside_the_mask_range(snapshots, synthetic_root, tmp_path):
    proc = _eval_cam("bsl", snapshots["bsl"], synthetic_root, str(tmp_path / "out"), "--thresholds", "0.2", "1.5")
    lines = stderr_lines(proc)
    assert proc.returncode == EXIT_USER_ERROR and len(lines) == 1, describe(proc)
    assert lines[0].startswith("error: --thresholds 1.5 is outside [0, 1]")
    assert files_under(str(tmp_path)) == {}
