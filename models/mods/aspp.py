"""ASPP (SPEC 5.3): rates 1, 12, 24, 36 and image pooling; 256 output channels.

The rates are those of output stride 8 for every backbone, so on the stride-16 ResNets' small maps (21x21 at crop
321, 28x28 at 448) the outer taps of the rate-24 and rate-36 kernels fall entirely into the zero padding: they
multiply zeros at every output position. ``atrous_conv2d`` leaves such taps out, which gives the same sums (and
zero gradients for those taps, as before) with a fraction of the work: a 1x1 convolution instead of a 3x3 one.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ASPP_RATES = (1, 12, 24, 36)
ASPP_CHANNELS = 256
ASPP_DROPOUT = 0.5


def reading_taps(size: int, dilation: int) -> slice:
    """The taps of a 3-tap kernel with padding = dilation that read the input at some output position, along an
    axis of ``size`` pixels: all three while the dilation stays inside the map, else the centre only (the outer
    taps of output position o read o -/+ dilation, outside 0..size-1 for every o once dilation >= size)."""
    return slice(0, 3) if dilation < size else slice(1, 2)


def atrous_conv2d(x: torch.Tensor, weight: torch.Tensor, dilation: int,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)`` for a 3x3 ``weight``, computed with the
    kernel rows and columns that read the input only (``reading_taps``). x [B,Cin,h,w] -> [B,Cout,h,w]. (The
    branches have no bias; a batch norm folded into the convolution for inference, models/fold.py, gives one.)"""
    rows, cols = reading_taps(x.shape[-2], dilation), reading_taps(x.shape[-1], dilation)
    padding = (dilation if rows.start == 0 else 0, dilation if cols.start == 0 else 0)
    return F.conv2d(x, weight[:, :, rows, cols], bias, padding=padding, dilation=dilation)


class _ASPPModule(nn.Module):
    """One branch: conv (no bias) -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        pad = 0 if kernel == 1 else dilation
        self.dilation = dilation
        self.atrous_conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.atrous_conv.kernel_size == (1, 1):
            return self.relu(self.bn(self.atrous_conv(x)))
        return self.relu(self.bn(atrous_conv2d(x, self.atrous_conv.weight, self.dilation, self.atrous_conv.bias)))


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
