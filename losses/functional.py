"""The paper's maths as pure functions (SPEC 5.7, 5.10, 5.11): normalised Global Weighted Pooling, the focal mask
penalty, pseudo ground truth from refined masks and the class-balanced self-supervised segmentation loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

NGWP_EPS = 1.0  # the 1 in the nGWP denominator
BG_LOGIT = 1.0  # the constant background logit
PSEUDO_BG_CUTOFF = 0.7  # background pixels: above 0.7 x its maximum
PSEUDO_FG_CUTOFF = 0.6  # foreground classes: above 0.6 x their maximum
PSEUDO_FLOOR = 0.2  # no threshold below this
IGNORE_INDEX = 255


def add_background_logit(fg_logits: torch.Tensor) -> torch.Tensor:
    """[B,C-1,h,w] foreground logits -> [B,C,h,w] with a constant logit BG_LOGIT prepended for the background."""
    bg = torch.full_like(fg_logits[:, :1], BG_LOGIT)
    return torch.cat((bg, fg_logits), dim=1)


def ngwp(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Normalised Global Weighted Pooling: s_c = sum_i x_ci m_ci / (1 + sum_i m_ci). [B,C,h,w] x2 -> [B,C]."""
    return (logits * masks).sum((2, 3)) / (NGWP_EPS + masks.sum((2, 3)))


def focal_penalty(masks: torch.Tensor, p: float, lam: float) -> torch.Tensor:
    """Mask-size focal penalty f_c = (1 - mbar_c)^p log(lam + mbar_c), mbar_c the mean mask. [B,C,h,w] -> [B,C]."""
    mbar = masks.mean((2, 3))
    return (1 - mbar).pow(p) * torch.log(lam + mbar)


def class_scores(logits: torch.Tensor, masks: torch.Tensor, p: float, lam: float) -> torch.Tensor:
    """Image-level class logits y_c = nGWP + focal penalty, foreground only: [B,C,h,w] -> [B,C-1]."""
    return (ngwp(logits, masks) + focal_penalty(masks, p, lam))[:, 1:]


def rescale_and_clean(masks: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [B,C,h,w] masks to ``size`` (bilinear, AC=True) and zero foreground classes absent from the image
    labels [B,C-1]; the background is kept. -> [B,C,H,W]."""
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
    keep = torch.cat((torch.ones_like(labels[:, :1]), labels), dim=1)  # [B,C]
    return masks * keep[:, :, None, None].to(masks.dtype)


def pseudo_gt(masks: torch.Tensor) -> torch.Tensor:
    """Pseudo ground truth from cleaned refined masks [B,C,H,W] -> float 0/1 [B,C,H,W].

    Channel c is set where M_c > max(0.2, kappa_c max_i M_c) (kappa 0.7 for the background, 0.6 otherwise);
    pixels claimed by several channels are ambiguous and cleared (ignored by the loss), as are pixels claimed by none.
    """
    kappa = torch.full((masks.shape[1],), PSEUDO_FG_CUTOFF, dtype=masks.dtype, device=masks.device)
    kappa[0] = PSEUDO_BG_CUTOFF
    peak = masks.flatten(2).amax(2)  # [B,C]
    tau = torch.clamp_min(kappa * peak, PSEUDO_FLOOR)[:, :, None, None]
    sel = (masks > tau).to(masks.dtype)
    unique = (sel.sum(1, keepdim=True) == 1).to(masks.dtype)
    return sel * unique


def balanced_mask_loss(logits: torch.Tensor, pseudo: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy with the per-image gate (SPEC 5.11): logits [B,C,h,w], pseudo GT [B,C,H,W] 0/1,
    image labels [B,C-1] -> loss per image [B].

    Pixel weight w_c = (n - n_c) / (1 + n) of its pseudo class (n_c pixels of class c, n labelled pixels); the mean
    runs over all H*W pixels, ignored ones included. An image counts only if every GT class and the background
    occur in its pseudo GT.
    """
    b, c, h, w = pseudo.shape
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)
    target = pseudo.argmax(1)
    target[pseudo.sum(1) < 1] = IGNORE_INDEX
    n_c = pseudo.sum((2, 3))  # [B,C]
    n = n_c.sum(1, keepdim=True)
    weight_c = (n - n_c) / (1 + n)  # [B,C]
    weight = (pseudo * weight_c[:, :, None, None]).sum(1)  # [B,H,W]
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")  # [B,H,W]
    gate = ((labels.sum(1) + 1) == (n_c > 0).sum(1)).to(ce.dtype)  # [B]
    return gate * (weight * ce).mean((1, 2))
