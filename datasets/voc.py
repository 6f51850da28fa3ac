"""Pascal VOC constants shared by every stage: class names, palette, normalisation, image labels."""
from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "potted-plant", "sheep", "sofa",
    "train", "tv/monitor", "ambiguous",
)
NUM_CLASSES = 21  # background + 20 foreground classes
NUM_FG = NUM_CLASSES - 1
IGNORE_INDEX = 255  # "ambiguous" / object borders in VOC masks; ignore index of the losses

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def voc_palette() -> np.ndarray:
    """The standard VOC bit-interleaved colour map: [256, 3] uint8, index i -> colour i."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE = voc_palette()
PALETTE_FLAT = PALETTE.reshape(-1).tolist()  # for PIL Image.putpalette


def mask_values(mask: np.ndarray) -> np.ndarray:
    """The distinct values of a class-index mask, sorted, as ``np.unique``. PNG masks decode to uint8, whose values
    a 256-bin histogram finds in one pass; np.unique sorts the pixels (12 ms for a VOC-sized mask, twice per
    training sample for its labels and its check: a quarter of the sample's cost)."""
    if mask.dtype == np.uint8:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).astype(np.uint8)
    return np.unique(mask)


def labels_from_mask(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Image-level labels [C-1] float32 ([20] for VOC) from a class-index mask (SPEC 3.3): 255 and 0 are dropped."""
    values = mask_values(mask)
    values = values[(values != IGNORE_INDEX) & (values != 0)]
    labels = np.zeros(num_classes - 1, dtype=np.float32)
    labels[values.astype(np.int64) - 1] = 1.0
    return labels


def normalize_np(img: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> HWC float32 normalised, computed in float64 (SPEC 3.4)."""
    x = img.astype(np.float64) / 255.0
    x = (x - np.asarray(MEAN)) / np.asarray(STD)
    return x.astype(np.float32)


def denorm(x: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """Normalised [3,H,W] or [B,3,H,W] -> RGB in [0,1] (a new tensor; the input is left as it is)."""
    import torch

    shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(shape)
    return x * std + mean
