"""Pseudo labels for a second stage and the second stage itself, as the README runs them on the synthetic data:
launch/export_pseudo.sh writes "clean" masks (GT image labels) of the training list with and without CRF and their
quality; train.py trains the same network on them (TRAIN.FULLY_SUPERVISED, DATASET.MASK_DIR); infer_val.py and
eval_seg.py score it on val."""
from __future__ import annotations

import glob
import json
import os
import subprocess

import numpy as np
import torch
from PIL import Image

from helpers import ROOT, describe, run_script
from models import build_model
from utils.config import load_cfg

# the light network, small enough for seconds per step on one CPU thread
TINY_CFG = """\
NET: {MODEL: ae, BACKBONE: resnet18, LIGHT_WIDTH: 16, HEAD_WIDTH: 32, FROM_SCRATCH: True}
DATASET: {CROP_SIZE: 48}
TRAIN: {BATCH_SIZE: 4, PRETRAIN: 1}
TEST: {SCALES: [1, 0.5], PAD_SIZE: [96, 96], BATCH_SIZE: 4}
"""


def _entries(root: str, name: str) -> list[tuple[str, str]]:
    """(image id, GT mask path) of a list."""
    lines = [ln.split() for ln in open(os.path.join(root, name)) if ln.strip()]
    return [(os.path.splitext(os.path.basename(img))[0], os.path.join(root, msk.strip("/"))) for img, msk in lines]


def test_export_pseudo_labels_then_train_and_evaluate_a_second_stage(synthetic_root, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_CFG)
    torch.manual_seed(0)
    snap_dir = tmp_path / "snapshots" / "pascal_voc" / "exp" / "ws"
    snap_dir.mkdir(parents=True)
    torch.save(build_model(load_cfg(str(cfg_path)).NET).state_dict(), snap_dir / "model_enc_e001.pth")

    # 1. the export, as a user runs it (from another directory)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUM_THREADS="1", CONFIG=str(cfg_path), DATA_ROOT=synthetic_root,
               FILELIST=os.path.join(synthetic_root, "train_augvoc.txt"), OUTPUT_DIR=str(tmp_path / "results"),
               EXP="exp", RUN_ID="ws", SNAPSHOT="e001", SAVE_ID="ws-pseudo",
               EXTRA_ARGS=f"--snapshot-dir {tmp_path / 'snapshots'} --set TEST.DATA_ROOT {synthetic_root}")
    proc = subprocess.run(["bash", os.path.join(ROOT, "launch", "export_pseudo.sh")], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    out = tmp_path / "results" / "pascal_voc" / "exp" / "ws-pseudo" / "train_augvoc"
    assert "--set TEST.DATA_ROOT" in (tmp_path / "results" / "pascal_voc" / "exp" / "ws-pseudo" /
                                      "train_augvoc.cmd").read_text().replace("TEST.USE_GT_LABELS True", "")
    assert f"DATASET.MASK_DIR {out}/crf" in proc.stdout
    entries = _entries(synthetic_root, "train_augvoc.txt")
    for image_id, gt_path in entries:
        gt = np.asarray(Image.open(gt_path))
        allowed = set(np.unique(gt).tolist()) - {255} | {0}
        for d in (out, out / "crf"):
            mask = Image.open(d / f"{image_id}.png")
            # class-index PNGs of the image's size, and "clean": only the image's GT classes (and background)
            assert mask.mode == "L" and mask.size == (gt.shape[1], gt.shape[0])
            assert set(np.unique(np.asarray(mask)).tolist()) <= allowed, (image_id, d)
    for d in (out, out / "crf"):
        report = json.loads((d / "eval.json").read_text())
        assert report["num_images"] == len(entries) and 0 <= report["miou_21"] <= 1
        assert "With background: \nmIoU: " in open(f"{d}.eval").read()

    # 2. the second stage: the same network trained on the CRF pseudo labels
    train = run_script("train.py", "--dataset", "pascal_voc", "--cfg", str(cfg_path), "--exp", "exp", "--run",
                       "stage2", "--snapshot-dir", str(tmp_path / "snapshots"), "--logdir", str(tmp_path / "logs"),
                       "--workers", "0", "--set", "DATASET.ROOT", synthetic_root, "TRAIN.FULLY_SUPERVISED", "True",
                       "DATASET.MASK_DIR", str(out / "crf"), "TRAIN.NUM_EPOCHS", "2", "TRAIN.MAX_ITERS", "2")
    assert train.returncode == 0, describe(train)
    snapshots = glob.glob(str(tmp_path / "snapshots" / "pascal_voc" / "exp" / "stage2" / "model_enc_e002X*.pth"))
    assert len(snapshots) == 1
    suffix = os.path.basename(snapshots[0])[len("model_enc_"):-len(".pth")]

    # 3. evaluated on val through the same entry points
    val_out = tmp_path / "results" / "stage2" / "val_voc"
    infer = run_script("infer_val.py", "--dataset", "pascal_voc", "--cfg", str(cfg_path), "--exp", "exp", "--run",
                       "stage2", "--resume", suffix, "--snapshot-dir", str(tmp_path / "snapshots"),
                       "--infer-list", os.path.join(synthetic_root, "val_voc.txt"), "--mask-output-dir", str(val_out),
                       "--workers", "0", "--no-crf", "--set", "TEST.DATA_ROOT", synthetic_root)
    assert infer.returncode == 0, describe(infer)
    evaluation = run_script("eval_seg.py", "--data", synthetic_root, "--filelist",
                            os.path.join(synthetic_root, "val_voc.txt"), "--masks", str(val_out), "--log-scores",
                            str(tmp_path / "scores.log"))
    assert evaluation.returncode == 0, describe(evaluation)
    report = json.loads((val_out / "eval.json").read_text())
    assert report["num_images"] == len(_entries(synthetic_root, "val_voc.txt"))
