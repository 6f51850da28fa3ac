"""ASPP (SPEC 5.3): rates 1, 12, 24, 36 and image pooling; 256 output channels."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ASPP_RATES = (1, 12, 24, 36)
ASPP_CHANNELS = 256
ASPP_DROPOUT = 0.5


class _ASPPModule(nn.Module):
    """One branch: conv (no bias) -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        pad = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """[B,F,h,w] -> [B,256,h,w]: four atrous branches and image pooling, concatenated and fused by a 1x1 conv.
    The rates are those of output stride 8 for every backbone, also the stride-16 ResNets (as the original)."""

    def __init__(self, c_in: int, c_out: int = ASPP_CHANNELS):
        super().__init__()
        self.aspp1 = _ASPPModule(c_in, c_out, 1, ASPP_RATES[0])
        self.aspp2 = _ASPPModule(c_in, c_out, 3, ASPP_RATES[1])
        self.aspp3 = _ASPPModule(c_in, c_out, 3, ASPP_RATES[2])
        self.aspp4 = _ASPPModule(c_in, c_out, 3, ASPP_RATES[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False),
                                             nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.conv1 = nn.Conv2d(5 * c_out, c_out, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(ASPP_DROPOUT)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x5 = self.global_avg_pool(x)  # [B,256,1,1]
        x5 = F.interpolate(x5, size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat((self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), x5), dim=1)  # [B,1280,h,w]
        return self.dropout(self.relu(self.bn1(self.conv1(x))))
