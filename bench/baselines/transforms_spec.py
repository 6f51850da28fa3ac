"""Baseline of bench/data.py: the original's training sample (SPEC 3.3, 3.5) transcribed directly.

Per sample: open the image (RGB) and its mask with PIL; labels from ``np.unique`` of the mask (255 and 0 dropped);
torchvision's RandomResizedCrop parameters, the crop resized bicubic (image) and nearest (mask); a flip with
probability 0.5 from Python's ``random``; ColorJitter(0.3, 0.3, 0.3, 0.1) always; to tensor and normalise; the mask
to an int32 tensor and then to a one-hot float [21, S, S], which the original computes and drops. Returns (image
[3, S, S], labels [20], image file name). No code is shared with datasets/.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 21


class TrainSampleSpec(Dataset):
    def __init__(self, items: list[tuple[str, str]], crop_size: int, scale: tuple[float, float] = (0.9, 1.0)):
        self.items = items
        self.crop = T.RandomResizedCrop(crop_size, scale=scale)
        self.jitter = T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
        self.normalise = T.Normalize(MEAN, STD)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image_path, mask_path = self.items[index]
        image = Image.open(image_path).convert("RGB")
        mask = Image.open(mask_path)
        unique = np.unique(mask)
        if unique[-1] == 255:
            unique = unique[:-1]
        if unique[0] == 0:
            unique = unique[1:]
        labels = torch.zeros(NUM_CLASSES - 1)
        labels[(unique.astype(np.int64) - 1).tolist()] = 1  # a list: the original's fix of uint8 indexing (SPEC 13)
        i, j, h, w = self.crop.get_params(image, self.crop.scale, self.crop.ratio)
        image = F.resized_crop(image, i, j, h, w, self.crop.size, InterpolationMode.BICUBIC)
        mask = F.resized_crop(mask, i, j, h, w, self.crop.size, InterpolationMode.NEAREST)
        if random.random() < 0.5:
            image, mask = F.hflip(image), F.hflip(mask)
        image = self.jitter(image)
        image = self.normalise(F.to_tensor(image))
        mask = torch.from_numpy(np.array(mask, np.int32))
        one_hot = torch.eq(mask.unsqueeze(0).long(), torch.arange(NUM_CLASSES)[:, None, None]).float()  # noqa: F841
        return image, labels, os.path.basename(image_path)
