"""The paper's maths as pure functions (SPEC 5.4, 5.7, 5.9-5.12): the background logit, normalised Global Weighted
Pooling, the focal mask penalty, pseudo ground truth from refined masks, the class-balanced self-supervised
segmentation loss and the total loss with its PRETRAIN gate. C counts the background (21 for VOC); labels have the
C-1 foreground entries."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from datasets.voc import IGNORE_INDEX  # also the target of pixels without a pseudo label

BG_LOGIT = 1.0  # the constant background logit prepended to the foreground logits
NGWP_EPS = 1.0  # the 1 in the nGWP denominator: small masks cannot inflate their score
PSEUDO_BG_CUTOFF = 0.7  # background pixels: above 0.7 x the background's maximum
PSEUDO_FG_CUTOFF = 0.6  # foreground classes: above 0.6 x the class's maximum
PSEUDO_FLOOR = 0.2  # no threshold below this, so a weak class selects nothing rather than noise


def add_background_logit(fg_logits: torch.Tensor) -> torch.Tensor:
    """[B,C-1,h,w] foreground logits -> [B,C,h,w] with the constant logit BG_LOGIT as channel 0: the background
    wins wherever no class is confident, without a learnt background model."""
    bg = torch.full_like(fg_logits[:, :1], BG_LOGIT)  # [B,1,h,w]
    return torch.cat((bg, fg_logits), dim=1)


def ngwp(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Normalised Global Weighted Pooling s_c = sum_i x_ci m_ci / (1 + sum_i m_ci): each class scores the logits
    where its own mask is. logits, masks [B,C,h,w] -> [B,C]."""
    return (logits * masks).sum((2, 3)) / (NGWP_EPS + masks.sum((2, 3)))


def focal_penalty(masks: torch.Tensor, p: float, lam: float) -> torch.Tensor:
    """Mask-size focal penalty f_c = (1 - mbar_c)^p log(lam + mbar_c), mbar_c the mean of mask c: strongly negative
    for a class whose mask is empty, vanishing once the mask is large. [B,C,h,w] -> [B,C]."""
    mbar = masks.mean((2, 3))  # [B,C]
    return (1 - mbar).pow(p) * torch.log(lam + mbar)


def class_scores(logits: torch.Tensor, masks: torch.Tensor, p: float, lam: float) -> torch.Tensor:
    """Image-level class logits y_c = nGWP + focal penalty, foreground only: [B,C,h,w] x2 -> [B,C-1]."""
    return (ngwp(logits, masks) + focal_penalty(masks, p, lam))[:, 1:]


def foreground_coverage(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean mask size of the classes present, a logged statistic ("loss_fg"): masks [B,C,h,w], labels [B,C-1] ->
    [B]. An image without labels gives 0 rather than a division by zero."""
    mbar = masks[:, 1:].mean((2, 3))  # [B,C-1]
    return (mbar * labels).sum(1) / labels.sum(1).clamp_min(1)


def rescale_and_clean(masks: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize masks [B,C,h,w] to ``size`` (bilinear, align_corners=True) and zero the foreground classes absent
    from the image labels [B,C-1]; the background is kept. -> [B,C,H,W]."""
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
    keep = torch.cat((torch.ones_like(labels[:, :1]), labels), dim=1)  # [B,C]
    return masks * keep[:, :, None, None].to(masks.dtype)


def pseudo_gt(masks: torch.Tensor) -> torch.Tensor:
    """Pseudo ground truth from cleaned refined masks [B,C,H,W] -> float 0/1 [B,C,H,W].

    Channel c is set where M_c > max(PSEUDO_FLOOR, kappa_c max_i M_c) (strictly), with kappa = PSEUDO_BG_CUTOFF
    for the background and PSEUDO_FG_CUTOFF for the classes: thresholds relative to each class's peak adapt to
    classes of different confidence. Pixels claimed by several channels are ambiguous and cleared; cleared and
    unclaimed pixels are ignored by the loss.
    """
    kappa = torch.full((masks.shape[1],), PSEUDO_FG_CUTOFF, dtype=masks.dtype, device=masks.device)
    kappa[0] = PSEUDO_BG_CUTOFF
    peak = masks.flatten(2).amax(2)  # [B,C]
    tau = torch.clamp_min(peak * kappa, PSEUDO_FLOOR)[:, :, None, None]  # [B,C,1,1]
    sel = (masks > tau).to(masks.dtype)  # [B,C,H,W]
    unique = (sel.sum(1, keepdim=True) == 1).to(masks.dtype)  # [B,1,H,W]
    return sel * unique


def balanced_mask_loss(logits: torch.Tensor, pseudo: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy with the per-image gate (SPEC 5.11): logits [B,C,h,w], pseudo GT [B,C,H,W] 0/1,
    image labels [B,C-1] -> loss per image [B].

    The logits are upsampled to H x W (bilinear, align_corners=True). A pixel of pseudo class c weighs
    w_c = (n - n_c) / (1 + n) (n_c pixels of class c, n labelled pixels), so that small classes count as much as
    the background; the mean runs over all H*W pixels, ignored ones included. An image whose pseudo GT misses one
    of its GT classes or the background gets no loss: its pseudo labels are not trusted.
    """
    h, w = pseudo.shape[-2:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 logits in float32
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)  # [B,C,H,W]
    target = pseudo.argmax(1)  # [B,H,W]
    target[pseudo.sum(1) < 1] = IGNORE_INDEX
    n_c = pseudo.sum((2, 3))  # [B,C]
    n = n_c.sum(1, keepdim=True)  # [B,1]
    weight_c = (n - n_c) / (1 + n)  # [B,C]
    weight = (pseudo * weight_c[:, :, None, None]).sum(1)  # [B,H,W]
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")  # [B,H,W]
    gate = ((labels.sum(1) + 1) == (n_c > 0).sum(1)).to(ce.dtype)  # [B]
    return gate * (weight * ce).mean((1, 2))


def total_loss(loss_cls: torch.Tensor, loss_mask: torch.Tensor | None, epoch: int, pretrain: int,
               mask_weight: float) -> torch.Tensor:
    """The loss a training step minimises (SPEC 5.12): loss_cls + [epoch >= pretrain] * mask_weight * loss_mask.

    loss_cls, loss_mask: scalars (batch means). During the first ``pretrain`` epochs (TRAIN.PRETRAIN) only the
    classification term is optimised, since the masks, and so the pseudo labels, are still poor; the mask loss is
    computed and logged all the same. No mask loss (the CAM baseline): the classification loss alone.
    """
    if loss_mask is None or epoch < pretrain:
        return loss_cls
    return loss_cls + mask_weight * loss_mask
