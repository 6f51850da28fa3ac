"""TRAIN.FULLY_SUPERVISED: the same network trained on the GT masks (the demo's upper bound), or on the masks of
DATASET.MASK_DIR (a second stage on exported pseudo labels)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _train(root: str, tmp: Path, *sets: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "--dataset", "pascal_voc", "--cfg", "configs/demo_sup.yaml", "--exp", "sup",
           "--run", "r", "--workers", "0", "--snapshot-dir", str(tmp / "snap"), "--logdir", str(tmp / "logs"),
           "--set", "DATASET.ROOT", root, "TEST.DATA_ROOT", root, "TRAIN.BATCH_SIZE", "4", "TRAIN.NUM_EPOCHS", "0",
           "DATASET.CROP_SIZE", "48", "TRAIN.MAX_ITERS", "2", *sets]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gt_run(synthetic_root, tmp_path_factory) -> subprocess.CompletedProcess:
    """Trained on the GT masks, PRETRAIN 5."""
    proc = _train(synthetic_root, tmp_path_factory.mktemp("gt"), "TRAIN.PRETRAIN", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_fully_supervised_adds_the_gt_mask_loss_from_the_first_epoch(gt_run):
    proc = gt_run
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


def _mask_dir(root: str, out: Path, value: int | None) -> Path:
    """A DATASET.MASK_DIR for the training list: every mask filled with ``value``, or the GT masks (None)."""
    out.mkdir()
    for line in (Path(root) / "train_augvoc.txt").read_text().split("\n"):
        if line.strip():
            image, mask = line.split()
            gt = Image.open(Path(root) / mask.strip("/"))
            lab = np.asarray(gt) if value is None else np.full((gt.height, gt.width), value, np.uint8)
            Image.fromarray(lab, "L").save(out / (Path(image).stem + ".png"))
    return out


def _loss_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The per-iteration loss lines without their speed."""
    return [ln.split("|  | Im/Sec")[0] for ln in proc.stdout.splitlines() if ln.startswith("Loss [")]


def test_mask_dir_replaces_the_gt_masks_and_255_is_ignored(synthetic_root, tmp_path, gt_run):
    """DATASET.MASK_DIR trains on its masks: all-255 masks give no mask loss (not NaN), the GT masks' copies the same
    losses as the GT masks themselves."""
    ignored = _train(synthetic_root, tmp_path / "a", "TRAIN.PRETRAIN", "5", "DATASET.MASK_DIR",
                     str(_mask_dir(synthetic_root, tmp_path / "ignored", 255)))
    assert ignored.returncode == 0, ignored.stderr[-2000:]
    assert [ln.split(" | ")[2] for ln in _loss_lines(ignored)] == ["loss_mask: 0.0000"]
    copy = _train(synthetic_root, tmp_path / "c", "TRAIN.PRETRAIN", "5", "DATASET.MASK_DIR",
                  str(_mask_dir(synthetic_root, tmp_path / "gt", None)))
    assert copy.returncode == 0, copy.stderr[-2000:]
    assert _loss_lines(copy) == _loss_lines(gt_run) and len(_loss_lines(gt_run)) == 1


def test_mask_dir_problems_are_one_line_each(synthetic_root, tmp_path):
    masks = _mask_dir(synthetic_root, tmp_path / "masks", 0)
    missing = sorted(masks.iterdir())[0]
    missing.unlink()
    Image.new("RGB", (8, 8)).save(sorted(masks.iterdir())[0])
    proc = _train(synthetic_root, tmp_path, "DATASET.MASK_DIR", str(masks))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(ln.startswith("error: ") for ln in lines), proc.stderr
    assert f"{missing} not found" in lines[0] and "mode-RGB" in lines[1]
    assert not (tmp_path / "logs").exists()
    weak = _train(synthetic_root, tmp_path, "DATASET.MASK_DIR", str(masks), "TRAIN.FULLY_SUPERVISED", "False")
    assert weak.returncode == 2 and "DATASET.MASK_DIR" in weak.stderr and "TRAIN.FULLY_SUPERVISED True" in weak.stderr
