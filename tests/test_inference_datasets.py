"""The inference datasets (SPEC 3.6): variant sizes, flips, padding, batch order, the crop grid, list forms."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.pascal_voc_ms import (CropLoader, MultiscaleLoader, build_inference_dataset, check_sizes,
                                    collate_variants, get_inference_loader, read_inference_items)
from datasets.voc import normalize_np
from utils.config import get_cfg_defaults
from utils.errors import UserError

W, H = 7, 5  # odd sizes: at scale 0.5, round(3.5) = 4 and round(2.5) = 2 (half to even)


def _image(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def data(tmp_path):
    """Two images with masks and a list in the original's format."""
    lines = []
    for i, (w, h) in enumerate([(W, H), (6, 4)]):
        Image.fromarray(_image(w, h, i)).save(tmp_path / f"im{i}.png")
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[0, 0], mask[1, 1] = 3, 255
        Image.fromarray(mask, mode="L").save(tmp_path / f"gt{i}.png")
        lines.append(f"im{i}.png /gt{i}.png/")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _test_cfg(scales=(1, 0.5), flip=True, pad=(8, 10)):
    t = get_cfg_defaults().TEST
    t.SCALES, t.FLIP, t.PAD_SIZE = list(scales), flip, list(pad)
    t.BATCH_SIZE = len(scales) * (2 if flip else 1)
    return t


def test_multiscale_variants_sizes_flips_and_padding(data):
    items = read_inference_items(str(data / "list.txt"), str(data))
    ds = MultiscaleLoader(items, _test_cfg())
    assert len(ds) == 4 * 2
    image = np.asarray(Image.open(data / "im0.png").convert("RGB"))
    expected = [(1, False), (1, True), (0.5, False), (0.5, True)]  # [s0, s0-flip, s1, s1-flip]
    for v, (scale, flipped) in enumerate(expected):
        path, img, x, pads, labels, mask = ds[v]
        assert path == str(data / "im0.png") and np.array_equal(img, image)
        w, h = (W, H) if scale == 1 else (4, 2)  # Python round: 3.5 -> 4, 2.5 -> 2
        top, left = (8 - h) // 2, (10 - w) // 2
        assert pads.tolist() == [top, left, h, w]
        assert x.shape == (3, 8, 10) and x.dtype == torch.float32
        ref = Image.fromarray(image).resize((w, h), Image.BICUBIC)
        if flipped:
            ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
        inner = x[:, top:top + h, left:left + w].numpy().transpose(1, 2, 0)
        assert np.array_equal(inner, normalize_np(np.asarray(ref)))
        outside = x.clone()
        outside[:, top:top + h, left:left + w] = 0
        assert torch.count_nonzero(outside) == 0  # the padding is exactly zero after normalisation
        assert labels.tolist() == [0, 0, 1] + [0] * 17  # class 3 -> index 2; 255 and 0 dropped
        assert mask.dtype == np.int64 and mask[1, 1] == 255


def test_multiscale_without_flip_and_tight_canvas(data):
    items = read_inference_items(str(data / "list.txt"), str(data))
    ds = MultiscaleLoader(items, _test_cfg(flip=False), tight=True)
    assert len(ds) == 2 * 2
    _, _, x, pads, _, _ = ds[1]  # image 0, scale 0.5, not flipped
    assert x.shape == (3, 2, 4) and pads.tolist() == [0, 0, 2, 4]


def test_one_loader_batch_is_one_image_in_order(data):
    items = read_inference_items(str(data / "list.txt"), str(data))
    batches = list(get_inference_loader(MultiscaleLoader(items, _test_cfg()), workers=0))
    assert [b["id"] for b in batches] == ["im0", "im1"]
    b = batches[1]
    assert b["image"].shape == (4, 6, 3) and len(b["variants"]) == 4 and b["pads"].shape == (4, 4)
    assert b["pads"][:, 2:].tolist() == [[4, 6], [4, 6], [2, 3], [2, 3]]


def test_batch_size_and_method_are_checked():
    t = _test_cfg()
    t.BATCH_SIZE = 8
    with pytest.raises(UserError, match="TEST.BATCH_SIZE is 8.*set TEST.BATCH_SIZE 4"):
        build_inference_dataset([("x.png", None)], t)
    t = _test_cfg()
    t.METHOD = "crop"  # the original's comment names this value, which it rejects
    with pytest.raises(UserError, match="TEST.METHOD is 'crop'"):
        build_inference_dataset([("x.png", None)], t)


def test_image_larger_than_the_canvas_is_named_up_front(data):
    items = read_inference_items(str(data / "list.txt"), str(data))
    with pytest.raises(UserError, match=r"im0.png is 7x5, 14x10 at scale 2.*TEST.PAD_SIZE") as e:
        check_sizes(items, _test_cfg(scales=(1, 2)))
    assert len(str(e.value).splitlines()) == 2  # both images reported at once
    check_sizes(items, _test_cfg(scales=(1, 2)), tight=True)  # no canvas limit with --tight-canvas


def test_crop_loader_grid_parity_and_coords(data):
    t = _test_cfg(pad=(8, 10))
    t.METHOD, t.CROP_SIZE, t.CROP_GRID_SIZE, t.BATCH_SIZE = "multicrop", [5, 6], [2, 2], 8
    items = read_inference_items(str(data / "list.txt"), str(data))
    ds = CropLoader(items, t)
    assert ds.batch_size == 8 and len(ds) == 16
    image = np.asarray(Image.open(data / "im0.png").convert("RGB"))
    canvas = np.zeros((8, 10, 3), dtype=np.float32)
    canvas[1:6, 1:8] = normalize_np(image)  # centred: top (8-5)//2 = 1, left (10-7)//2 = 1
    # strides ceil(8/2) = 4, ceil(10/2) = 5; the last row/column windows are shifted back to end at the border
    windows = [(0, 5, 0, 6), (0, 5, 4, 10), (3, 8, 0, 6), (3, 8, 4, 10)]
    for v in range(8):
        _, _, crop, coords, _, _ = ds[v]
        s_h, e_h, s_w, e_w = windows[v // 2]
        assert coords.tolist() == [s_h, e_h, s_w, e_w, 1, 1]
        ref = canvas[s_h:e_h, s_w:e_w]
        if v % 2 == 0:  # even variants are flipped (the opposite parity of the multi-scale loader)
            ref = ref[:, ::-1]
        assert np.array_equal(crop.numpy().transpose(1, 2, 0), ref)


def test_crop_loader_rejects_gaps():
    t = _test_cfg(pad=(8, 10))
    t.METHOD, t.CROP_SIZE, t.CROP_GRID_SIZE, t.BATCH_SIZE = "multicrop", [3, 3], [2, 2], 8
    with pytest.raises(UserError, match="leaves gaps"):
        CropLoader([("x.png", None)], t)


def test_list_without_masks_and_folder_of_images(tmp_path):
    for name in ("b.jpg", "a.png", "c.jpeg"):
        Image.fromarray(_image()).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "test.txt").write_text("/a.png\nb.jpg\n")
    items = read_inference_items(str(tmp_path / "test.txt"), str(tmp_path))
    assert items == [(str(tmp_path / "a.png"), None), (str(tmp_path / "b.jpg"), None)]
    folder = read_inference_items(str(tmp_path), "/unused")
    assert [os.path.basename(p) for p, _ in folder] == ["a.png", "b.jpg", "c.jpeg"]
    _, img, _, _, labels, mask = MultiscaleLoader(folder, _test_cfg())[0]
    assert labels is None and mask is None and img.shape == (H, W, 3)
    batch = collate_variants([MultiscaleLoader(folder, _test_cfg())[v] for v in range(4)])
    assert batch["labels"] is None and batch["mask"] is None and batch["id"] == "a"


def test_list_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--infer-list .*missing.txt not found"):
        read_inference_items(str(tmp_path / "missing.txt"), str(tmp_path))
    with pytest.raises(UserError, match="without \\*.jpg"):
        read_inference_items(str(tmp_path), str(tmp_path))
    Image.fromarray(_image()).save(tmp_path / "x.png")
    Image.fromarray(_image()).save(tmp_path / "x.jpg")
    with pytest.raises(UserError, match="same id 'x'"):
        read_inference_items(str(tmp_path), str(tmp_path))


def test_corrupt_image_stops_or_is_skipped(data):
    (data / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    items = read_inference_items(str(data / "list.txt"), str(data))
    with pytest.raises(UserError, match="im1.png .*TRAIN.ON_CORRUPT skip"):
        MultiscaleLoader(items, _test_cfg())[4]
    ds = MultiscaleLoader(items, _test_cfg(), on_corrupt="skip")
    with pytest.warns(UserWarning, match="skipping .*im1.png"):
        batches = list(get_inference_loader(ds, workers=0))
    assert batches[0]["id"] == "im0" and batches[1] is None
