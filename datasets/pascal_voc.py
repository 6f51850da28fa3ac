"""Pascal VOC / SBD training data: file lists, the training dataset (SPEC 3.2, 3.3, 3.5) and its batching.

Beyond SPEC 3.5, each for robustness: the data root and list names come from the config
(DATASET.ROOT, DATASET.*_LIST) instead of a hard-coded ``./data``; list sizes are not asserted (only that a split
is not empty); a missing or unreadable file is a ``UserError`` naming it, and with TRAIN.ON_CORRUPT "skip" an
image that turns out corrupt during a run is dropped from its batch with a warning instead of stopping the run;
the validation splits can be read without augmentation (TRAIN.DETERMINISTIC_VAL).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

# read_file_list is part of this module's interface (the other entry points import it from here)
from datasets.filelists import (IMAGE_ERRORS, check_mask_values, image_id, load_image, load_mask, mask_labels,
                                read_file_list)
from datasets.transforms import build_transform
from datasets.voc import NUM_CLASSES
from utils.errors import UserError

SPLIT_LISTS = {"train": "TRAIN_LIST", "train_voc": "TRAIN_VOC_LIST", "val": "VAL_LIST"}


class VOCSegmentation(Dataset):
    """The training dataset: (image [3,S,S] float32 normalised, labels [C-1] float32 ([20] for VOC), image id).

    ``split`` is "train" (train_augvoc), "train_voc" or "val"; the list is ``cfg.DATASET.<split list>`` under
    ``cfg.DATASET.ROOT``. ``augment`` selects the random training transform (SPEC 3.5 uses it for every split)
    or the deterministic resize. ``with_mask`` appends the transformed mask [S,S] int64 (255 = ignore), for a fully
    supervised run and for scoring the validation's masks; the weakly supervised model never learns from it.
    ``mask_dir`` names a folder of class-index PNGs ``<image id>.png`` (e.g. pseudo labels) that replace the list's
    masks as that mask; the image labels still come from the list's masks. ``num_classes`` (with background) is
    the dataset's (datasets/info.py): mask values must lie in 0..num_classes-1 or be 255; labels have one less.
    """

    def __init__(self, cfg, split: str, augment: bool = True, with_mask: bool = False, mask_dir: str = "",
                 num_classes: int = NUM_CLASSES):
        if split not in SPLIT_LISTS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SPLIT_LISTS)}")
        self.split, self.with_mask, self.mask_dir = split, with_mask, mask_dir
        self.num_classes = num_classes
        self.root = cfg.DATASET.ROOT
        self.list_path = os.path.join(self.root, cfg.DATASET[SPLIT_LISTS[split]])
        self.items = read_file_list(self.list_path, self.root, need_masks=True)
        self.transform = build_transform(cfg.DATASET, augment)
        self.on_corrupt = cfg.TRAIN.ON_CORRUPT

    def __len__(self) -> int:
        return len(self.items)

    def _bad(self, path: str, reason: str) -> None:
        msg = (f"cannot use {path} ({reason}); replace the file or remove it from {self.list_path}, "
               f"or set TRAIN.ON_CORRUPT skip to leave it out")
        if self.on_corrupt != "skip":
            raise UserError(msg)
        warnings.warn(f"skipping {path}: {reason}", stacklevel=2)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...] | None:
        image_path, mask_path = self.items[index]
        try:
            image = load_image(image_path)
        except IMAGE_ERRORS as e:
            self._bad(image_path, f"unreadable image: {e}")
            return None
        try:
            mask = load_mask(mask_path)
            labels = mask_labels(np.asarray(mask), self.num_classes)
        except IMAGE_ERRORS as e:
            self._bad(mask_path, f"bad mask: {e}")
            return None
        if self.mask_dir:
            mask_path = os.path.join(self.mask_dir, image_id(image_path) + ".png")
            try:
                mask = load_mask(mask_path)
                check_mask_values(np.asarray(mask), self.num_classes)
            except IMAGE_ERRORS as e:
                self._bad(mask_path, f"bad mask: {e}")
                return None
        if image.size != mask.size:
            self._bad(image_path, f"image is {image.size[0]}x{image.size[1]} but its mask {mask_path} is "
                                  f"{mask.size[0]}x{mask.size[1]}")
            return None
        x, y = self.transform(image, mask)
        out = (x, torch.from_numpy(labels), image_id(image_path))
        return out + (y,) if self.with_mask else out


def collate_skip_none(batch: Sequence[Any]) -> Any:
    """default_collate without the samples a dataset dropped (None); None when the whole batch was dropped."""
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None
