"""Paired training transforms: shapes, value ranges, image/mask alignment under crop and flip, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from datasets.transforms import (PairCompose, RandomHorizontalFlipPair, RandomResizedCropPair, ResizePair,
                                 build_transform, to_tensor_pair, train_transform, val_transform)
from datasets.voc import MEAN, PALETTE, STD, denorm
from utils.config import get_cfg_defaults


def _blocks(h: int = 60, w: int = 80, cell: int = 10) -> tuple[Image.Image, Image.Image]:
    """A grid of flat blocks: the mask is a function of the image (block class c has colour PALETTE[c])."""
    rng = np.random.default_rng(0)
    classes = rng.integers(1, 21, (h // cell, w // cell)).astype(np.uint8)
    mask = np.kron(classes, np.ones((cell, cell), np.uint8))
    return Image.fromarray(PALETTE[mask], "RGB"), Image.fromarray(mask, "L")


def _check_aligned(x: torch.Tensor, y: torch.Tensor) -> None:
    """Away from block edges (where bicubic blends colours) every image pixel has its mask class's colour."""
    rgb = (denorm(x).permute(1, 2, 0).numpy() * 255).round()  # [S, S, 3]
    m = y.numpy()
    pad = np.pad(m, 2, mode="edge")
    interior = np.ones_like(m, bool)
    for dy in range(5):
        for dx in range(5):
            interior &= pad[dy:dy + m.shape[0], dx:dx + m.shape[1]] == m
    assert interior.sum() > 0.3 * m.size
    err = np.abs(rgb[interior] - PALETTE[m[interior]].astype(np.float64)).max()
    assert err <= 2, err


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_keep_mask_aligned(seed):
    torch.manual_seed(seed)
    image, mask = _blocks()
    t = PairCompose([RandomResizedCropPair(48, (0.3, 1.0)), RandomHorizontalFlipPair()])
    x, y = t(image, mask)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert y.shape == (48, 48) and y.dtype == torch.int64
    _check_aligned(x, y)


def test_flip_applies_to_both():
    image, mask = _blocks()
    x0, y0 = PairCompose([RandomHorizontalFlipPair(p=0.0)])(image, mask)
    x1, y1 = PairCompose([RandomHorizontalFlipPair(p=1.0)])(image, mask)
    assert torch.equal(x1, x0.flip(-1)) and torch.equal(y1, y0.flip(-1))
    assert not torch.equal(y1, y0)


def test_full_area_crop_is_a_resize():
    """scale (1, 1) on a square image: every sampled box is rejected and the fallback is the whole image."""
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.integers(0, 21, (50, 50), dtype=np.uint8), "L")
    torch.manual_seed(0)
    x, y = PairCompose([RandomResizedCropPair(32, (1.0, 1.0))])(image, mask)
    xr, yr = PairCompose([ResizePair(32)])(image, mask)
    assert torch.equal(x, xr) and torch.equal(y, yr)
    # the image is resampled bicubic (PIL), the mask nearest: mask values stay class indices
    assert torch.equal(xr, to_tensor_pair(image.resize((32, 32), Image.BICUBIC), None)[0])
    assert torch.equal(yr, torch.from_numpy(np.array(mask.resize((32, 32), Image.NEAREST))).long())


def test_training_transform_ranges_jitter_and_determinism():
    image, mask = _blocks()
    t = train_transform(40, (0.9, 1.0))
    torch.manual_seed(3)
    x, y = t(image, mask)
    torch.manual_seed(3)
    x2, y2 = t(image, mask)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    rgb = denorm(x)
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    assert set(y.unique().tolist()) <= set(np.unique(np.asarray(mask)).tolist())
    # the colour jitter changes the image but not the mask: the block colours are no longer the palette's
    torch.manual_seed(4)
    xs = [t(image, mask)[0] for _ in range(3)]
    assert not torch.equal(xs[0], xs[1])
    with pytest.raises(AssertionError):
        _check_aligned(x, y)


def test_normalisation_and_mask_optional():
    mean_rgb = tuple(int(round(m * 255)) for m in MEAN)
    image = Image.new("RGB", (20, 10), mean_rgb)
    x, y = val_transform(16)(image)
    assert y is None and x.shape == (3, 16, 16)
    assert x.abs().max() < 0.5 / 255 / min(STD)
    white, _ = to_tensor_pair(Image.new("RGB", (4, 4), (255, 255, 255)), None)
    assert torch.allclose(white[:, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]))


def test_build_transform_from_config():
    cfg = get_cfg_defaults()
    cfg.DATASET.CROP_SIZE = 24
    image, mask = _blocks()
    torch.manual_seed(0)
    xa, _ = build_transform(cfg.DATASET, augment=True)(image, mask)
    xv, yv = build_transform(cfg.DATASET, augment=False)(image, mask)
    assert xa.shape == xv.shape == (3, 24, 24)
    assert torch.equal(yv, torch.from_numpy(np.array(F.resize(mask, [24, 24], F.InterpolationMode.NEAREST))).long())
