"""PAMR as the original formulates it (SPEC 5.8): fixed 3x3 kernels applied per channel with conv2d at every
dilation, which gathers 48 copies of the mask in every iteration. Kept as the reference for tests and benchmarks."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.mods.pamr import NEIGHBOURS, STD_POSITIONS, _kernel


class LocalAffinity(nn.Module):
    def __init__(self, dilations, kernel):
        super().__init__()
        self.dilations = dilations
        self.register_buffer("kernel", kernel)

    def forward(self, x):  # [B,K,H,W] -> [B,K,P,H,W]
        b, k, h, w = x.shape
        x = x.reshape(b * k, 1, h, w)
        outs = []
        for d in self.dilations:
            xp = F.pad(x, [d] * 4, mode="replicate")
            outs.append(F.conv2d(xp, self.kernel, dilation=d))
        return torch.cat(outs, 1).view(b, k, -1, h, w)


class PAMRSpec(nn.Module):
    def __init__(self, num_iter=10, dilations=(1, 2, 4, 8, 12, 24)):
        super().__init__()
        self.num_iter = num_iter
        self.aff_x = LocalAffinity(dilations, _kernel(NEIGHBOURS, difference=True))
        self.aff_m = LocalAffinity(dilations, _kernel(NEIGHBOURS))
        self.aff_std = LocalAffinity(dilations, _kernel(STD_POSITIONS))

    def forward(self, x, mask):
        # the original checks its kernels at every call
        assert torch.equal(self.aff_m.kernel, _kernel(NEIGHBOURS).to(self.aff_m.kernel))
        mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=True)
        b, k, h, w = x.shape
        x_std = self.aff_std(x).std(2, keepdim=True)  # [B,K,1,H,W]
        x = -self.aff_x(x).abs() / (1e-8 + 0.1 * x_std)
        x = x.mean(1, keepdim=True)
        x = F.softmax(x, 2)  # [B,1,48,H,W]
        for _ in range(self.num_iter):
            m = self.aff_m(mask)  # [B,C,48,H,W]
            mask = (m * x).sum(2)
        return mask
