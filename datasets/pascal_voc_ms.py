"""Inference datasets (SPEC 3.6): every variant of an image (scales and flips, or crops and flips) on one canvas.

One DataLoader batch of ``TEST.BATCH_SIZE`` holds exactly all variants of one image, in the order of SPEC 3.6:
``[s0, s0-flip, s1, s1-flip, ...]`` for the multi-scale loader, cells in row-major order with the *even* variants
flipped for the multi-crop loader. Decoding, resizing and padding run in the DataLoader workers, overlapped with
the network; the decoded image is kept for the next variant, so an image is decoded once, not once per variant.

Beyond SPEC 3.6, each for robustness or speed, none changing a number:
* the list may have one column (test.txt) or name a folder of images; then labels and GT mask are None;
* the unnormalised image travels as uint8 [H, W, 3] once per batch instead of a normalised copy per variant: the
  writers rebuild the de-normalised float image of SPEC 8.2 from it exactly (``image_01``);
* the batch size and the image's fit on the canvas are checked up front, as ``UserError``s naming the fix;
* a corrupt image is a ``UserError`` naming it (TRAIN.ON_CORRUPT "stop") or the image is skipped ("skip").
"""
from __future__ import annotations

import glob
import math
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datasets.filelists import IMAGE_ERRORS, image_id, load_image, load_mask, read_file_list
from datasets.voc import IGNORE_INDEX, labels_from_mask, normalize_np
from utils.errors import UserError
from utils.procs import die_with_parent

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # files taken from a folder given as --infer-list
METHODS = ("multiscale", "multicrop")
MAX_REPORTED = 20

Item = tuple[str, str | None]  # (image path, GT mask path or None)


def read_inference_items(infer_list: str, data_root: str) -> list[Item]:
    """The images to infer: a file list in the format of SPEC 3.2 (paths under ``data_root``; one column for lists
    without masks such as test.txt) or a folder, whose *.jpg/*.jpeg/*.png files are taken in sorted order."""
    if os.path.isdir(infer_list):
        paths = sorted(p for p in glob.glob(os.path.join(infer_list, "*"))
                       if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p))
        if not paths:
            raise UserError(f"--infer-list {infer_list} is a folder without *.jpg, *.jpeg or *.png images; "
                            "give a folder of images or a file list")
        items: list[Item] = [(p, None) for p in paths]
    elif not os.path.exists(infer_list):
        raise UserError(f"--infer-list {infer_list} not found; give a file list (e.g. data/val_voc.txt, paths "
                        "relative to TEST.DATA_ROOT) or a folder of images")
    else:
        items = read_file_list(infer_list, data_root, need_masks=False)
    # ids name the output files, so two inputs must not share one
    seen: dict[str, str] = {}
    for path, _ in items:
        other = seen.setdefault(image_id(path), path)
        if other != path:
            raise UserError(f"{other} and {path} in --infer-list {infer_list} have the same id "
                            f"{image_id(path)!r}, so their masks would overwrite each other; rename one")
    return items


def num_variants(test_cfg) -> int:
    """Images per batch the method produces: scales (or grid cells), twice with flips."""
    if test_cfg.METHOD == "multiscale":
        n = len(test_cfg.SCALES)
    elif test_cfg.METHOD == "multicrop":
        n = test_cfg.CROP_GRID_SIZE[0] * test_cfg.CROP_GRID_SIZE[1]
    else:
        raise UserError(f"config key TEST.METHOD is {test_cfg.METHOD!r}; use one of {', '.join(METHODS)}")
    return n * (2 if test_cfg.FLIP else 1)


def check_batch_size(test_cfg) -> int:
    """One batch must hold all variants of one image (SPEC 3.6); otherwise an error with the fix."""
    n = num_variants(test_cfg)
    if test_cfg.BATCH_SIZE != n:
        what = "TEST.SCALES" if test_cfg.METHOD == "multiscale" else "TEST.CROP_GRID_SIZE"
        raise UserError(f"config key TEST.BATCH_SIZE is {test_cfg.BATCH_SIZE}, but {what} with TEST.FLIP "
                        f"{test_cfg.FLIP} gives {n} variants per image; set TEST.BATCH_SIZE {n}")
    return n


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(w, h) of an image scaled by ``scale``: Python's round (half to even, SPEC 3.6)."""
    return round(width * scale), round(height * scale)


def centred_pads(h: int, w: int, pad_hw: Sequence[int]) -> tuple[int, int]:
    """(pad_top, pad_left) that centre an h x w image on a PH x PW canvas (the extra pixel goes bottom/right)."""
    return (pad_hw[0] - h) // 2, (pad_hw[1] - w) // 2


def check_sizes(items: Sequence[Item], test_cfg, tight: bool = False) -> None:
    """Read every image header once and fail up front, naming the files, if one is unreadable or does not fit
    the canvas at the largest scale, rather than in the middle of the run."""
    if tight and test_cfg.METHOD == "multiscale":
        scales: Sequence[float] = ()
    else:
        scales = test_cfg.SCALES if test_cfg.METHOD == "multiscale" else (1,)
    ph, pw = test_cfg.PAD_SIZE
    problems = []
    for path, _ in items:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except IMAGE_ERRORS as e:
            problems.append(f"{path} is not a readable image ({e}); replace it or remove it from --infer-list")
            continue
        for s in scales:
            w, h = scaled_size(width, height, s)
            if h > ph or w > pw:
                problems.append(f"{path} is {width}x{height}, {w}x{h} at scale {s}, larger than TEST.PAD_SIZE "
                                f"[{ph}, {pw}] (height, width); raise TEST.PAD_SIZE or lower TEST.SCALES")
                break
    if problems:
        more = [f"... and {len(problems) - MAX_REPORTED} more"] if len(problems) > MAX_REPORTED else []
        raise UserError("\n".join(problems[:MAX_REPORTED] + more))


def pad_normalised(img: np.ndarray, pad_hw: Sequence[int], pad_top: int, pad_left: int) -> np.ndarray:
    """uint8 [h, w, 3] -> float32 [PH, PW, 3]: normalised image on a canvas whose padding is exactly 0.

    SPEC 3.6 pads with 0, normalises the canvas and multiplies it by (1 - pad mask); writing the normalised
    image into a zero canvas gives the same values (x * 1 = x inside, 0 outside).
    """
    h, w = img.shape[:2]
    canvas = np.zeros((pad_hw[0], pad_hw[1], 3), dtype=np.float32)
    canvas[pad_top:pad_top + h, pad_left:pad_left + w] = normalize_np(img)
    return canvas


def to_chw(x: np.ndarray) -> torch.Tensor:
    """[H, W, 3] float32 -> contiguous [3, H, W] tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class _InferenceDataset(Dataset):
    """Common part: the image list, one item per variant (``len = variants x images``), the decoded-image cache."""

    def __init__(self, items: Sequence[Item], test_cfg, on_corrupt: str = "stop"):
        self.items = list(items)
        self.cfg = test_cfg
        self.batch_size = check_batch_size(test_cfg)
        self.on_corrupt = on_corrupt
        self._cached: tuple[int, Any] | None = None  # (image index, loaded image) of the last item, per worker

    def __len__(self) -> int:
        return self.batch_size * len(self.items)

    def _bad(self, path: str, reason: str) -> None:
        if self.on_corrupt != "skip":
            raise UserError(f"cannot use {path} ({reason}); replace the file or remove it from --infer-list, "
                            "or set TRAIN.ON_CORRUPT skip to leave it out")
        warnings.warn(f"skipping {path}: {reason}", stacklevel=3)

    def _read(self, path: str, mask_path: str | None):
        """(uint8 image [H, W, 3], labels [20] float32 or None, GT mask [H, W] int64 or None), None if skipped."""
        try:
            image = np.asarray(load_image(path))
        except IMAGE_ERRORS as e:
            self._bad(path, f"unreadable image: {e}")
            return None
        if mask_path is None:
            return image, None, None
        try:
            mask = np.asarray(load_mask(mask_path)).astype(np.int64)
        except IMAGE_ERRORS as e:
            self._bad(mask_path, f"unreadable mask: {e}")
            return None
        num_classes = self.cfg.NUM_CLASSES  # the dataset's class count (the entry point checks it)
        bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
        if len(bad):
            self._bad(mask_path, f"mask values {bad[:5].tolist()} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
            return None
        if mask.shape != image.shape[:2]:
            self._bad(path, f"image is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                            f"{mask.shape[1]}x{mask.shape[0]}")
            return None
        return image, labels_from_mask(mask, num_classes), mask

    def _load(self, index: int):
        """The image of dataset index ``index`` and its variant number; each image is decoded once."""
        image_index, variant = divmod(index, self.batch_size)
        if self._cached is None or self._cached[0] != image_index:
            self._cached = (image_index, self._read(*self.items[image_index]))
        return self.items[image_index][0], self._cached[1], variant


class MultiscaleLoader(_InferenceDataset):
    """Variant v of an image: scale ``SCALES[v // 2]`` (``SCALES[v]`` without flips), flipped iff FLIP and v odd,
    resized with PIL bicubic to Python-rounded sizes and centred on a ``PAD_SIZE`` canvas (padding 0 after
    normalisation).

    ``tight`` (the --tight-canvas speed option, off by default) puts each variant on a canvas of its own size
    instead: no padding. This changes the network's outputs (the receptive fields and the ASPP/GCI global pooling
    see less zero border), so it is off by default; the measured difference is in bench/infer.py's report.

    An item is ``(path, uint8 image [H, W, 3], variant [3, PH, PW] float32, pads [4] float32 = [pad_top,
    pad_left, h, w], labels [20] or None, GT mask [H, W] int64 or None)``, or None for a skipped image.
    """

    def __init__(self, items: Sequence[Item], test_cfg, tight: bool = False, on_corrupt: str = "stop"):
        super().__init__(items, test_cfg, on_corrupt)
        self.tight = tight
        self.flip = test_cfg.FLIP

    def __getitem__(self, index: int):
        path, loaded, v = self._load(index)
        if loaded is None:
            return None
        image, labels, mask = loaded
        scale = self.cfg.SCALES[v // 2 if self.flip else v]
        height, width = image.shape[:2]
        w, h = scaled_size(width, height, scale)
        pil = Image.fromarray(image)
        # PIL returns an unchanged copy when the size is equal (scale 1)
        pil = pil.resize((w, h), Image.BICUBIC)
        if self.flip and v % 2 == 1:
            pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
        if self.tight:
            pad_hw, pad_top, pad_left = (h, w), 0, 0
        else:
            pad_hw = self.cfg.PAD_SIZE
            if h > pad_hw[0] or w > pad_hw[1]:
                raise UserError(f"{path} is {w}x{h} at scale {scale}, larger than TEST.PAD_SIZE {list(pad_hw)}; "
                                "raise TEST.PAD_SIZE or lower TEST.SCALES")
            pad_top, pad_left = centred_pads(h, w, pad_hw)
        variant = to_chw(pad_normalised(np.asarray(pil), pad_hw, pad_top, pad_left))
        pads = torch.tensor([pad_top, pad_left, h, w], dtype=torch.float32)
        return path, image, variant, pads, _tensor(labels), mask


class CropLoader(_InferenceDataset):
    """Variant v of an image: cell ``v // 2`` (``v`` without flips) of a ``CROP_GRID_SIZE`` grid of ``CROP_SIZE``
    crops of the image centred on the ``PAD_SIZE`` canvas, flipped iff FLIP and v even (SPEC 3.6's parity,
    opposite to the multi-scale loader). Cell starts are multiples of ``ceil(PAD / GRID)``; a window reaching past
    the canvas is shifted back to end at its border.

    An item is ``(path, uint8 image, crop [3, cropH, cropW] float32, coords [6] int64 = [s_h, e_h, s_w, e_w,
    pad_top, pad_left], labels or None, GT mask or None)``, or None for a skipped image.
    """

    def __init__(self, items: Sequence[Item], test_cfg, on_corrupt: str = "stop"):
        super().__init__(items, test_cfg, on_corrupt)
        self.flip = test_cfg.FLIP
        (ph, pw), (ch, cw), (gh, gw) = test_cfg.PAD_SIZE, test_cfg.CROP_SIZE, test_cfg.CROP_GRID_SIZE
        if ch > ph or cw > pw:
            raise UserError(f"config key TEST.CROP_SIZE {[ch, cw]} is larger than TEST.PAD_SIZE {[ph, pw]}; "
                            "lower it or raise TEST.PAD_SIZE")
        self.stride = (math.ceil(ph / gh), math.ceil(pw / gw))
        if self.stride[0] > ch or self.stride[1] > cw:
            raise UserError(f"TEST.CROP_GRID_SIZE {[gh, gw]} of TEST.CROP_SIZE {[ch, cw]} crops leaves gaps in the "
                            f"TEST.PAD_SIZE {[ph, pw]} canvas (stride {list(self.stride)}); use more cells or "
                            "larger crops")
        self._canvas_for: int | None = None  # image index of the cached padded canvas
        self._canvas: np.ndarray | None = None

    def window(self, cell: int) -> tuple[int, int, int, int]:
        """(s_h, e_h, s_w, e_w) of grid cell ``cell`` (row-major) on the canvas."""
        (ph, pw), (ch, cw), (_, gw) = self.cfg.PAD_SIZE, self.cfg.CROP_SIZE, self.cfg.CROP_GRID_SIZE
        row, col = divmod(cell, gw)
        s_h, s_w = row * self.stride[0], col * self.stride[1]
        s_h, s_w = min(s_h, ph - ch), min(s_w, pw - cw)
        return s_h, s_h + ch, s_w, s_w + cw

    def __getitem__(self, index: int):
        path, loaded, v = self._load(index)
        if loaded is None:
            return None
        image, labels, mask = loaded
        h, w = image.shape[:2]
        pad_hw = self.cfg.PAD_SIZE
        if h > pad_hw[0] or w > pad_hw[1]:
            raise UserError(f"{path} is {w}x{h}, larger than TEST.PAD_SIZE {list(pad_hw)}; raise TEST.PAD_SIZE")
        pad_top, pad_left = centred_pads(h, w, pad_hw)
        # the canvas is the same for every cell; cut from the cached one
        if self._canvas_for != index // self.batch_size:
            self._canvas = pad_normalised(image, pad_hw, pad_top, pad_left)
            self._canvas_for = index // self.batch_size
        s_h, e_h, s_w, e_w = self.window(v // 2 if self.flip else v)
        crop = self._canvas[s_h:e_h, s_w:e_w]
        if self.flip and v % 2 == 0:
            crop = crop[:, ::-1]
        coords = torch.tensor([s_h, e_h, s_w, e_w, pad_top, pad_left], dtype=torch.int64)
        return path, image, to_chw(crop), coords, _tensor(labels), mask


def _tensor(labels: np.ndarray | None) -> torch.Tensor | None:
    return None if labels is None else torch.from_numpy(labels)


def collate_variants(batch: Sequence[Any]) -> dict[str, Any] | None:
    """All variants of one image -> one dict; None when the image was skipped.

    ``variants`` is a list of [3, h, w] tensors (one shape per batch on the padded canvas, one per scale with
    --tight-canvas); the image, labels and mask are taken once.
    """
    if any(b is None for b in batch):
        return None
    names = {b[0] for b in batch}
    if len(names) != 1:
        raise RuntimeError(f"an inference batch mixes images {sorted(names)}: the batch size must equal the "
                           "number of variants and the loader must not shuffle")
    path, image, _, _, labels, mask = batch[0]
    # the id is the file name without its extension; for VOC's names (digits and "_" before ".jpg") that is the id
    # of SPEC 8.5, which strips the characters of ".jpg" from the right
    return {"path": path, "id": image_id(path), "image": image, "variants": [b[2] for b in batch],
            "pads": torch.stack([b[3] for b in batch]), "labels": labels, "mask": mask}


def build_inference_dataset(items: Sequence[Item], test_cfg, tight: bool = False,
                            on_corrupt: str = "stop") -> _InferenceDataset:
    """The dataset TEST.METHOD names (SPEC 8.1)."""
    num_variants(test_cfg)  # rejects an unknown method
    if test_cfg.METHOD == "multiscale":
        return MultiscaleLoader(items, test_cfg, tight=tight, on_corrupt=on_corrupt)
    if tight:
        raise UserError("--tight-canvas applies to TEST.METHOD multiscale only")
    return CropLoader(items, test_cfg, on_corrupt=on_corrupt)


def get_inference_loader(dataset: _InferenceDataset, workers: int) -> DataLoader:
    """Batches of all variants of one image, in list order, prepared by ``workers`` processes ahead of the network."""
    return DataLoader(dataset, batch_size=dataset.batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_variants, pin_memory=torch.cuda.is_available(), drop_last=False,
                      worker_init_fn=die_with_parent if workers > 0 else None)
