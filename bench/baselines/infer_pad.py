"""Baseline for bench/infer.py and the inference tests: the SPEC 3.6 / 8.2 / 8.3 formulation, transcribed directly.

Sequential on purpose: the main process decodes the image, builds every variant (PIL bicubic resize, flip, pad to
TEST.PAD_SIZE, normalise the padded canvas and multiply it by (1 - pad mask)), runs the batch of all variants
through the network, and merges as the original's writer: crop each variant's padding, resize bilinearly
(align_corners=False) to the image size, flip odd variants back, concatenate, multiply the foreground channels by
the class presence, mean over the batch, background to the power BG_POW. No code is shared with
datasets/pascal_voc_ms.py or utils/inference_tools.py, so the comparison checks them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _variant(img: Image.Image, scale: float, flip: bool, pad_hw) -> tuple[torch.Tensor, list[int]]:
    """One padded, normalised variant [3, PH, PW] and its pads [pad_top, pad_left, h, w]."""
    w, h = round(img.size[0] * scale), round(img.size[1] * scale)
    im = img.resize((w, h), Image.BICUBIC)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    ph, pw = pad_hw
    top, left = (ph - h) // 2, (pw - w) // 2
    padded = np.zeros((ph, pw, 3), dtype=np.uint8)
    padded[top:top + h, left:left + w] = np.asarray(im)
    pad_mask = np.ones((ph, pw, 1), dtype=np.float32)
    pad_mask[top:top + h, left:left + w] = 0
    x = ((padded.astype(np.float64) / 255.0 - MEAN) / STD).astype(np.float32)  # the numpy normaliser
    x = x * (1 - pad_mask)
    return torch.from_numpy(x.transpose(2, 0, 1).copy()), [top, left, h, w]


@torch.inference_mode()
def infer_image(model: torch.nn.Module, image: np.ndarray, test_cfg,
                gt_labels: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] -> merged probabilities P [C, H, W] (CPU), exactly as SPEC 8 describes; the network and the
    merge run on the model's device."""
    img = Image.fromarray(image)
    variants, pads = [], []
    for scale in test_cfg.SCALES:
        for flip in ((False, True) if test_cfg.FLIP else (False,)):
            x, p = _variant(img, scale, flip, test_cfg.PAD_SIZE)
            variants.append(x)
            pads.append(p)
    device = next(model.parameters()).device
    out = model(torch.stack(variants).to(device))
    cls, probs = out["cls"], out["masks"]  # [N, 20], [N, C, PH, PW]
    if test_cfg.USE_GT_LABELS:
        labels = gt_labels.to(device)
    else:
        labels = (torch.sigmoid(cls).max(0)[0] > test_cfg.FP_CUT_SCORE).float()
    height, width = image.shape[:2]
    masks = []
    for i, (top, left, h, w) in enumerate(pads):
        m = probs[i:i + 1, :, top:top + h, left:left + w]
        m = F.interpolate(m, (height, width), mode="bilinear", align_corners=False)
        if test_cfg.FLIP and i % 2 == 1:
            m = torch.flip(m, (3,))
        masks.append(m)
    masks = torch.cat(masks, 0)
    masks[:, 1:] *= labels[None, :, None, None]
    merged = masks.mean(0)
    merged[0] = merged[0] ** test_cfg.BG_POW
    return merged.cpu()
