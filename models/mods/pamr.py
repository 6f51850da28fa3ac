"""PAMR: Pixel-Adaptive Mask Refinement (SPEC 5.8).

The affinity of pixel i to its neighbour n (8 neighbours at each dilation d, 48 in all) is a softmax over n of
``-mean_k |I_k(i) - I_k(nb_n(i))| / (eps + 0.1 sigma_k(i))``, with ``sigma_k(i)`` the standard deviation of the 54
values the 3x3 kernels at the six dilations gather around i. The mask is then averaged T times with these weights.

The original gathers the neighbours with fixed 3x3 convolution kernels, which materialises 48 copies of the mask in
every iteration. PAMR is linear in the mask, so the same sums are taken here over shifted views of one
replicate-padded mask per dilation, accumulated in place. The kernels stay registered as buffers so that checkpoints
keep the original's keys (``_aff.aff_x.kernel``, ``_aff.aff_m.kernel``, ``_aff.aff_std.kernel``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# neighbour positions (a, b) of the 3x3 kernel, in the original's order; (1, 1) is the centre
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
STD_POSITIONS = tuple((a, b) for a in range(3) for b in range(3))
STD_TEMPERATURE = 0.1  # affinities are scaled by 0.1 * local std
EPS = 1e-8


def _kernel(positions, difference: bool = False) -> torch.Tensor:
    """[n,1,3,3]: +1 at each position; with ``difference``, +1 at the centre and -1 at the position."""
    k = torch.zeros(len(positions), 1, 3, 3)
    for i, (a, b) in enumerate(positions):
        k[i, 0, a, b] = -1.0 if difference else 1.0
        if difference:
            k[i, 0, 1, 1] = 1.0
    return k


class _LocalKernel(nn.Module):
    """Holds one fixed kernel as the buffer ``kernel`` (the original's module layout, for checkpoint keys)."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel)


def _shifted(xp: torch.Tensor, d: int, a: int, b: int, h: int, w: int) -> torch.Tensor:
    """View of the replicate-padded ``xp`` (pad d) at offset ((a-1)d, (b-1)d): [..., h, w]."""
    return xp[..., a * d: a * d + h, b * d: b * d + w]


def pamr_affinity(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """Affinities alpha [B, 8*len(D), H, W] (softmax over neighbours) from the image [B, 3, H, W]."""
    b, k, h, w = image.shape
    # local std over the 9 positions of every dilation (54 values, unbiased)
    s1 = image.new_zeros(b, k, h, w)
    s2 = image.new_zeros(b, k, h, w)
    padded = []
    for d in dilations:
        xp = F.pad(image, (d, d, d, d), mode="replicate")  # [B,3,H+2d,W+2d]
        padded.append(xp)
        for a, c in STD_POSITIONS:
            v = _shifted(xp, d, a, c, h, w)
            s1 += v
            s2 += v * v
    n = 9 * len(dilations)
    var = (s2 - s1 * s1 / n) / (n - 1)
    std = var.clamp_min(0).sqrt()  # [B,3,H,W]
    scale = 1.0 / (EPS + STD_TEMPERATURE * std)
    aff = []
    for d, xp in zip(dilations, padded):
        for a, c in NEIGHBOURS:
            diff = (image - _shifted(xp, d, a, c, h, w)).abs_()
            aff.append(-(diff * scale).mean(1))  # [B,H,W]
    return torch.softmax(torch.stack(aff, 1), dim=1)  # [B,48,H,W]


def pamr_propagate(mask: torch.Tensor, alpha: torch.Tensor, dilations: tuple[int, ...], iters: int) -> torch.Tensor:
    """T iterations of M_c(i) <- sum_n alpha_n(i) M_c(nb_n(i)); mask [B, C, H, W], alpha [B, 8*len(D), H, W]."""
    b, c, h, w = mask.shape
    alphas = alpha.unsqueeze(2)  # [B,48,1,H,W]
    for _ in range(iters):
        out = torch.zeros_like(mask)
        n = 0
        for d in dilations:
            mp = F.pad(mask, (d, d, d, d), mode="replicate")  # [B,C,H+2d,W+2d]
            for a, cc in NEIGHBOURS:
                out.addcmul_(alphas[:, n], _shifted(mp, d, a, cc, h, w))
                n += 1
        mask = out
    return mask


class PAMR(nn.Module):
    """mask [B, C, h, w], image [B, 3, H, W] -> refined mask [B, C, H, W] (mask resized to the image, AC=True)."""

    def __init__(self, num_iter: int = 10, dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)):
        super().__init__()
        self.num_iter = int(num_iter)
        self.dilations = tuple(int(d) for d in dilations)
        self.aff_x = _LocalKernel(_kernel(NEIGHBOURS, difference=True))
        self.aff_m = _LocalKernel(_kernel(NEIGHBOURS))
        self.aff_std = _LocalKernel(_kernel(STD_POSITIONS))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=image.device.type, enabled=False):
            image, mask = image.float(), mask.float()
            if mask.shape[-2:] != image.shape[-2:]:
                mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True)
            alpha = pamr_affinity(image, self.dilations)
            return pamr_propagate(mask, alpha, self.dilations, self.num_iter)
