"""Global Cue Injection (SPEC 5.5): shallow features modulated by channel-wise scale and shift taken from a spatial
maximum over the deep features (AdaIN-like)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class GCI(nn.Module):
    def __init__(self, c_shallow: int = 256, c_deep: int = 256, c_out: int = 256):
        super().__init__()
        self.c_out = c_out
        self.fc_deep = nn.Sequential(nn.Conv2d(c_deep, 2 * c_out, 1, bias=False), nn.BatchNorm2d(2 * c_out),
                                     nn.ReLU(inplace=True))
        self.fc_skip = nn.Sequential(nn.Conv2d(c_shallow, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=False))
        self.fc_cls = nn.Sequential(nn.Conv2d(c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                                    nn.ReLU(inplace=True))

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        """shallow [B,Cs,h,w], deep [B,256,h,w] -> [B,256,h,w]."""
        g = self.fc_deep(deep).amax(dim=(2, 3))  # [B,512]
        gamma, beta = g[:, : self.c_out, None, None], g[:, self.c_out:, None, None]
        v = F.relu(self.fc_skip(shallow) * (gamma + 1) + beta)
        return self.fc_cls(v)
