"""TRAIN.FULLY_SUPERVISED: the same network trained on the GT masks (the demo's upper bound)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train(root: str, tmp: Path, *sets: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "--dataset", "pascal_voc", "--cfg", "configs/demo_sup.yaml", "--exp", "sup",
           "--run", "r", "--workers", "0", "--snapshot-dir", str(tmp / "snap"), "--logdir", str(tmp / "logs"),
           "--set", "DATASET.ROOT", root, "TEST.DATA_ROOT", root, "TRAIN.BATCH_SIZE", "4", "TRAIN.NUM_EPOCHS", "0",
           "DATASET.CROP_SIZE", "48", "TRAIN.MAX_ITERS", "2", *sets]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_fully_supervised_adds_the_gt_mask_loss_from_the_first_epoch(synthetic_root, tmp_path):
    proc = _train(synthetic_root, tmp_path, "TRAIN.PRETRAIN", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = re.search(r"Loss \[0000\]: loss_cls: ([\d.]+) \| loss_fg: [\d.]+ \| loss_mask: ([\d.]+) \| loss: ([\d.]+)",
                     proc.stdout)
    assert line, proc.stdout[-2000:]
    cls, mask, total = map(float, line.groups())
    # cross-entropy against GT masks from epoch 0, although PRETRAIN would hold the pseudo-label loss back
    assert mask > 0.5 and abs(total - (cls + mask)) < 2e-3


def test_fully_supervised_needs_the_segmentation_head(synthetic_root, tmp_path):
    proc = _train(synthetic_root, tmp_path, "NET.MODEL", "bsl")
    assert proc.returncode == 2
    assert "TRAIN.FULLY_SUPERVISED needs NET.MODEL ae" in proc.stderr and "Traceback" not in proc.stderr
