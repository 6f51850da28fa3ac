"""PAMR transcribed directly from SPEC 5.8, as the original formulates it: three fixed 3x3 kernels applied per
channel with conv2d at every dilation on a replicate-padded input, which writes 48 copies of the mask
[B,C,48,H,W] in every iteration, and an assertion on the kernels at every call. Slow on purpose: it is the
reference that tests compare models/mods/pamr.py with, and the baseline of bench/pamr.py."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.mods.pamr import NEIGHBOURS, STD_POSITIONS, local_kernel


class LocalAffinity(nn.Module):
    """``kernel`` [n,1,3,3] applied to every channel at every dilation: [B,K,H,W] -> [B,K,n*len(D),H,W]."""

    def __init__(self, dilations: tuple[int, ...], kernel: torch.Tensor):
        super().__init__()
        self.dilations = dilations
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, h, w = x.shape
        x = x.reshape(b * k, 1, h, w)
        outs = []
        for d in self.dilations:
            xp = F.pad(x, [d] * 4, mode="replicate")
            outs.append(F.conv2d(xp, self.kernel, dilation=d))
        return torch.cat(outs, 1).view(b, k, -1, h, w)


class PAMRSpec(nn.Module):
    """``(image [B,K,H,W], mask [B,C,h,w]) -> [B,C,H,W]`` exactly as SPEC 5.8 writes it, with the original
    module's defaults (one iteration at dilation 1)."""

    def __init__(self, num_iter: int = 1, dilations: tuple[int, ...] = (1,)):
        super().__init__()
        self.num_iter = num_iter
        self.aff_x = LocalAffinity(dilations, local_kernel(NEIGHBOURS, difference=True))
        self.aff_m = LocalAffinity(dilations, local_kernel(NEIGHBOURS))
        self.aff_std = LocalAffinity(dilations, local_kernel(STD_POSITIONS))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for module, kernel in ((self.aff_x, local_kernel(NEIGHBOURS, difference=True)),
                               (self.aff_m, local_kernel(NEIGHBOURS)), (self.aff_std, local_kernel(STD_POSITIONS))):
            assert torch.equal(module.kernel, kernel.to(module.kernel)), "PAMR kernels changed"
        mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=True)
        x_std = self.aff_std(x).std(2, keepdim=True)  # [B,K,1,H,W], unbiased over the 54 values
        x = -self.aff_x(x).abs() / (1e-8 + 0.1 * x_std)  # [B,K,48,H,W]
        x = x.mean(1, keepdim=True)  # [B,1,48,H,W]
        x = F.softmax(x, 2)
        for _ in range(self.num_iter):
            m = self.aff_m(mask)  # [B,C,48,H,W]: the 48 copies
            mask = (m * x).sum(2)
        return mask
