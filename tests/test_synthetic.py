"""The synthetic dataset: layout, palette, masks vs labels, determinism, and the properties weak supervision needs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.pascal_voc import read_file_list
from datasets.voc import IGNORE_INDEX, PALETTE_FLAT, labels_from_mask
from tools.make_synthetic import (DEFAULT_CLASSES, HEAD_HUES, draw_sample, get_difficulty, make_synthetic,
                                  object_border, render_image)
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTS = ("train_augvoc.txt", "train_voc.txt", "val_voc.txt", "test.txt")


def _lines(root: str, name: str) -> list[str]:
    with open(os.path.join(root, name)) as f:
        text = f.read()
    assert text.endswith("\n")
    return text.splitlines()


def test_layout_and_lists(synthetic_root):
    aug, voc, val, test = (_lines(synthetic_root, n) for n in LISTS)
    assert (len(aug), len(voc), len(val), len(test)) == (12, 3, 6, 3)
    assert aug[0] == ("sbd/benchmark_RELEASE/dataset/img/sbd_000000.jpg "
                      "sbd/benchmark_RELEASE/dataset/cls_png/sbd_000000.png")
    assert sum(line.startswith("sbd/") for line in aug) == 9
    assert set(voc) <= set(aug)  # train_voc is part of train_augvoc, as in the original
    assert not {line.split()[0] for line in val} & {line.split()[0] for line in aug}
    assert val[0] == ("voc/VOCdevkit/VOC2012/JPEGImages/val_000000.jpg "
                      "voc/VOCdevkit/VOC2012/SegmentationClass/val_000000.png")
    assert all(len(line.split()) == 1 and line.startswith("voc_test/VOCdevkit/VOC2012/JPEGImages/") for line in test)
    assert not os.path.exists(os.path.join(synthetic_root, "voc_test/VOCdevkit/VOC2012/SegmentationClass"))
    info = json.load(open(os.path.join(synthetic_root, "synthetic.json")))
    assert info["seed"] == 0 and info["classes"] == list(DEFAULT_CLASSES) and info["difficulty"] == "default"
    assert info["counts"] == {"train_augvoc": 12, "train_voc": 3, "val_voc": 6, "test": 3}
    assert info["knobs"]["head_frac"] == get_difficulty("default").head_frac


def test_masks_palette_borders_and_labels(synthetic_root):
    allowed = set(DEFAULT_CLASSES) | {0}
    for name in ("train_augvoc.txt", "val_voc.txt"):
        for img_path, mask_path in read_file_list(os.path.join(synthetic_root, name), synthetic_root, True):
            img, mask = Image.open(img_path), Image.open(mask_path)
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == mask.size
            assert img.size[0] == 64 and 48 <= img.size[1] <= 64
            m = np.asarray(mask)
            if "/cls_png/" in mask_path:  # SBD style: grey values, no border
                assert mask.mode == "L" and set(np.unique(m)) <= allowed
            else:  # VOC style: palette, 255 on a thin band along object edges
                assert mask.mode == "P" and mask.getpalette()[: len(PALETTE_FLAT)] == PALETTE_FLAT
                assert set(np.unique(m)) <= allowed | {IGNORE_INDEX} and (m == IGNORE_INDEX).any()
                assert (m == IGNORE_INDEX).mean() < 0.3
            assert labels_from_mask(m).sum() >= 1


def test_voc_mask_is_the_drawn_mask_with_the_border_band(synthetic_root):
    d = get_difficulty("default")
    _, lab = draw_sample("val", 1, 0, 64, DEFAULT_CLASSES, d)
    png = os.path.join(synthetic_root, "voc/VOCdevkit/VOC2012/SegmentationClass/val_000001.png")
    saved = np.asarray(Image.open(png))
    band = object_border(lab, d.border)
    assert band.any() and (saved[band] == IGNORE_INDEX).all() and (saved[~band] == lab[~band]).all()


def test_border_marks_both_sides_of_object_edges():
    lab = np.zeros((6, 8), np.uint8)
    lab[2:5, 3:6] = 7
    band = object_border(lab, 1)
    # one pixel on each side of the edge; the object's centre and far background stay
    assert band[1, 4] and band[2, 4] and band[2, 2] and not band[3, 4] and not band[0, 0]
    assert not object_border(np.zeros((4, 4), np.uint8), 1).any()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_train=3, n_val=1, n_test=1, size=40)
    a, b, c = (str(tmp_path / n) for n in "abc")
    make_synthetic(a, seed=5, **kw)
    make_synthetic(b, seed=5, workers=2, **kw)  # the files do not depend on the number of processes
    make_synthetic(c, seed=6, **kw)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert files == sorted(os.path.relpath(os.path.join(d, f), c) for d, _, fs in os.walk(c) for f in fs)
    images = [f for f in files if f.endswith(".jpg")]
    assert len(images) == 5
    for f in files:
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f
    assert all(open(os.path.join(a, f), "rb").read() != open(os.path.join(c, f), "rb").read() for f in images)


def test_heads_are_the_only_saturated_pixels_and_have_the_class_hue():
    """The discriminative part: a class-specific saturated head; bodies, distractors and background are muted."""
    d = get_difficulty("default", {"noise": 0.0, "blur": 0.0})
    head_pixels = 0
    for i in range(12):
        img, lab = render_image(np.random.default_rng([3, i]), 64, 56, DEFAULT_CLASSES, d)
        hsv = np.asarray(img.convert("HSV")).astype(np.float64) / 255
        sat = (hsv[..., 1] > 0.75) & (hsv[..., 2] > 0.75)
        assert not (sat & (lab == 0)).any()
        for k, c in enumerate(DEFAULT_CLASSES):
            hue = hsv[..., 0][sat & (lab == c)]
            dist = np.minimum(np.abs(hue - HEAD_HUES[k]), 1 - np.abs(hue - HEAD_HUES[k]))
            assert (dist < 0.05).all()
        head_pixels += sat.sum()
        # heads are a small part of the objects
        assert sat.sum() < 0.3 * (lab > 0).sum()
    assert head_pixels > 100


def _sky_pair_height(context_bias: float) -> float:
    """Mean relative height of the classes that prefer the sky band (the first pair)."""
    d = get_difficulty("default", {"context_bias": context_bias})
    ys = []
    for i in range(30):
        _, lab = render_image(np.random.default_rng([7, i]), 48, 40, DEFAULT_CLASSES, d)
        for c in DEFAULT_CLASSES[:2]:
            rows = np.nonzero(lab == c)[0]
            if len(rows):
                ys.append(rows.mean() / lab.shape[0])
    return float(np.mean(ys))


def test_context_bias_puts_a_class_pair_on_its_band():
    assert _sky_pair_height(1.0) < 0.35 < 0.42 < _sky_pair_height(0.0)


def test_difficulty_presets_and_knobs():
    assert get_difficulty("hard").head_frac < get_difficulty("default").head_frac < get_difficulty("easy").head_frac
    d = get_difficulty("easy", {"objects": [2, 3], "blur": 1})
    assert d.objects == (2, 3) and d.blur == 1.0 and d.noise == get_difficulty("easy").noise
    with pytest.raises(UserError, match="unknown difficulty knob 'heads'"):
        get_difficulty("default", {"heads": 1})
    with pytest.raises(UserError, match="unknown difficulty 'medium'"):
        get_difficulty("medium")
    with pytest.raises(UserError, match="objects takes a pair"):
        get_difficulty("default", {"objects": 3})


def test_cli_options_reach_the_generator(tmp_path):
    out = tmp_path / "syn"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/make_synthetic.py"), "--out", str(out),
                        "--num-train", "4", "--num-val", "2", "--num-test", "1", "--size", "40", "--seed", "3",
                        "--difficulty", "hard", "--classes", "person,dog", "--knob", "blur=0.0"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train_augvoc 4, train_voc 1, val_voc 2, test 1" in r.stdout
    info = json.load(open(out / "synthetic.json"))
    assert info["classes"] == [15, 12] and info["difficulty"] == "hard" and info["knobs"]["blur"] == 0.0
    assert info["seed"] == 3 and Image.open(out / "voc/VOCdevkit/VOC2012/JPEGImages/val_000000.jpg").size[0] == 40
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools/make_synthetic.py"), "--out", str(out),
                          "--classes", "unicorn"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --classes: unknown class 'unicorn'")
    assert "Traceback" not in bad.stderr
