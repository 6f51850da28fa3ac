"""Paired image/mask transforms of the training dataset (SPEC 3.5) and the deterministic validation transform.

Image and mask stay PIL images through the geometric steps, so one set of crop parameters and one flip decision
apply to both, the image is resampled with PIL bicubic and the mask with PIL nearest (SPEC 3.5's torchvision 0.2
pipeline). All randomness comes from torch's generator, which the training script and the
DataLoader workers seed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from datasets.voc import MEAN, STD
from utils.errors import UserError

# the augmentation constants of SPEC 3.5
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's default aspect-ratio range
FLIP_PROB = 0.5
JITTER = dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)

Pair = tuple[Image.Image, Optional[Image.Image]]


class RandomResizedCropPair:
    """RandomResizedCrop(size, scale) with one parameter set for image and mask: bicubic / nearest."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO):
        self.size, self.scale, self.ratio = (size, size), scale, ratio

    def __call__(self, image: Image.Image, mask: Image.Image | None) -> Pair:
        top, left, h, w = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        image = F.resized_crop(image, top, left, h, w, list(self.size), InterpolationMode.BICUBIC)
        if mask is not None:
            mask = F.resized_crop(mask, top, left, h, w, list(self.size), InterpolationMode.NEAREST)
        return image, mask


class RandomHorizontalFlipPair:
    """Flip image and mask together with probability ``p``."""

    def __init__(self, p: float = FLIP_PROB):
        self.p = p

    def __call__(self, image: Image.Image, mask: Image.Image | None) -> Pair:
        if torch.rand(1).item() < self.p:
            image = F.hflip(image)
            mask = F.hflip(mask) if mask is not None else None
        return image, mask


class ColorJitterImage:
    """ColorJitter on the image only (applied always, SPEC 3.5); the mask passes through."""

    def __init__(self, **jitter: float):
        self.jitter = T.ColorJitter(**(jitter or JITTER))

    def __call__(self, image: Image.Image, mask: Image.Image | None) -> Pair:
        return self.jitter(image), mask


class ResizePair:
    """Deterministic resize of both to ``size x size``: bicubic image, nearest mask."""

    def __init__(self, size: int):
        self.size = [size, size]

    def __call__(self, image: Image.Image, mask: Image.Image | None) -> Pair:
        image = F.resize(image, self.size, InterpolationMode.BICUBIC)
        if mask is not None:
            mask = F.resize(mask, self.size, InterpolationMode.NEAREST)
        return image, mask


def to_tensor_pair(image: Image.Image, mask: Image.Image | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image -> [3, H, W] float32 normalised with the ImageNet mean/std; mask -> [H, W] int64 class indices."""
    x = F.normalize(F.to_tensor(image), MEAN, STD)  # [3, H, W]
    y = F.pil_to_tensor(mask).squeeze(0).long() if mask is not None else None  # [H, W]
    return x, y


class PairCompose:
    """Chain of paired transforms ending with the tensor conversion."""

    def __init__(self, steps: list[Callable[[Image.Image, Image.Image | None], Pair]]):
        self.steps = steps

    def __call__(self, image: Image.Image, mask: Image.Image | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        for step in self.steps:
            image, mask = step(image, mask)
        return to_tensor_pair(image, mask)


def train_transform(crop_size: int, scale: tuple[float, float]) -> PairCompose:
    """SPEC 3.5: random resized crop, horizontal flip, colour jitter, to tensor + normalise."""
    return PairCompose([RandomResizedCropPair(crop_size, scale), RandomHorizontalFlipPair(), ColorJitterImage()])


def val_transform(crop_size: int) -> PairCompose:
    """Deterministic: bicubic resize to ``crop_size`` square, no flip, no jitter."""
    return PairCompose([ResizePair(crop_size)])


def dataset_cfg_problems(dataset_cfg) -> list[str]:
    """Values of CROP_SIZE, SCALE_FROM, SCALE_TO that make no crop, one line each (PIL and torch would only fail on
    the first image, without naming the key)."""
    problems = []
    if dataset_cfg.CROP_SIZE < 1:
        problems.append(f"config key DATASET.CROP_SIZE is {dataset_cfg.CROP_SIZE}; give the side of the square "
                        "training crop in pixels (the original's 321 or 448)")
    if not 0 < dataset_cfg.SCALE_FROM <= dataset_cfg.SCALE_TO:
        problems.append(f"config keys DATASET.SCALE_FROM {dataset_cfg.SCALE_FROM} and DATASET.SCALE_TO "
                        f"{dataset_cfg.SCALE_TO} are not a range of crop areas; use 0 < SCALE_FROM <= SCALE_TO "
                        "(the original's 0.9 and 1.0)")
    return problems


def build_transform(dataset_cfg, augment: bool) -> PairCompose:
    """The transform for ``cfg.DATASET`` (CROP_SIZE, SCALE_FROM, SCALE_TO); UserError naming a bad key."""
    problems = dataset_cfg_problems(dataset_cfg)
    if problems:
        raise UserError("\n".join(problems))
    if augment:
        return train_transform(dataset_cfg.CROP_SIZE, (dataset_cfg.SCALE_FROM, dataset_cfg.SCALE_TO))
    return val_transform(dataset_cfg.CROP_SIZE)
