"""The single-stage model "ae" (SPEC 5.2-5.12) and the CAM baseline "bsl" (SPEC 5.13).

Both compose a backbone. Their state_dict nevertheless carries the backbone's parameters at the top level, as the
original's (whose models subclass the backbone): the renaming lives in the two hooks of ``_TopLevelBackbone``, so
the original's snapshots load strictly and ours load in the original.

``forward(image, image_raw=None, labels=None)`` returns one dict in both modes: {"cls", "masks"} in test mode (no
``image_raw`` and no ``labels``), and the training outputs otherwise (see each model).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from losses.functional import (add_background_logit, balanced_mask_loss, class_scores, pseudo_gt,
                               rescale_and_clean)
from models.backbones import Backbone
from models.mods.aspp import ASPP, ASPP_CHANNELS
from models.mods.gci import GCI
from models.mods.pamr import PAMR
from models.mods.sg import StochasticGate

SKIP_CHANNELS = 48  # fc8_skip output
DECODER_CHANNELS = 256
BSL_MASK_EPS = 1e-5
BACKBONE_PREFIX = "backbone."


def _bn_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _param_layers(modules: list[nn.Module]) -> list[nn.Module]:
    return [m for root in modules for m in root.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]


class _TopLevelBackbone(nn.Module):
    """Base of both models: holds ``self.backbone`` but saves and loads its tensors without the prefix, and keeps
    the original's freezing rules (frozen layers never train; frozen BNs always use their running statistics)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self._frozen: list[nn.Module] = []
        self._bn_frozen: list[nn.Module] = []
        self._from_scratch: list[nn.Module] = []
        self._register_state_dict_hook(self._strip_backbone_prefix)
        self._register_load_state_dict_pre_hook(self._add_backbone_prefix)

    # --- checkpoint compatibility: backbone keys at the top level ---
    @staticmethod
    def _strip_backbone_prefix(module, state_dict, prefix, local_metadata):
        head = prefix + BACKBONE_PREFIX
        renamed = type(state_dict)()
        for k, v in state_dict.items():
            renamed[prefix + k[len(head):] if k.startswith(head) else k] = v
        if hasattr(state_dict, "_metadata"):
            renamed._metadata = state_dict._metadata
        return renamed

    def _add_backbone_prefix(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                             error_msgs):
        top = set(dict(self.backbone.named_children()))
        for k in list(state_dict):
            if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0] in top:
                state_dict[prefix + BACKBONE_PREFIX + k[len(prefix):]] = state_dict.pop(k)

    # --- freezing (SPEC 4.1, 5.2) ---
    def _freeze_backbone(self) -> None:
        """The pretrained backbones: named layers frozen, and every backbone BN frozen (statistics and affine)."""
        if not self.backbone.pretrained:
            return
        self._frozen += _param_layers(self.backbone.frozen_layers()) + _bn_layers(self.backbone)
        self._bn_frozen += _bn_layers(self.backbone)
        for m in self._frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
        for m in self._bn_frozen:
            m.eval()
        return self

    def parameter_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        """Four groups (pretrained weights, pretrained biases, new weights, new biases) with the backbone's
        learning-rate multipliers; biases get no weight decay (SPEC 4.1)."""
        groups: list[list[nn.Parameter]] = [[], [], [], []]
        frozen = {id(m) for m in self._frozen}
        new = {id(m) for m in self._from_scratch}
        for m in self.modules():
            if id(m) in frozen or not isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                continue
            offset = 2 if id(m) in new else 0
            if m.weight is not None:
                groups[offset].append(m.weight)
            if m.bias is not None:
                groups[offset + 1].append(m.bias)
        mult = self.backbone.lr_mult
        return [{"params": g, "lr": mult[i] * base_lr, "weight_decay": weight_decay if i % 2 == 0 else 0.0}
                for i, g in enumerate(groups)]


class SingleStageNet(_TopLevelBackbone):
    """The single-stage model "ae"."""

    def __init__(self, backbone: Backbone, num_classes: int = 21, focal_p: float = 3, focal_lambda: float = 0.01,
                 pamr_iter: int = 10, pamr_kernel: tuple[int, ...] = (1, 2, 4, 8, 12, 24), sg_psi: float = 0.3):
        super().__init__(backbone)
        self.focal_p, self.focal_lambda = focal_p, focal_lambda
        self._freeze_backbone()
        c3, c6 = backbone.channels["conv3"], backbone.channels["conv6"]
        self.aspp = ASPP(c6)
        # the ASPP BNs stay in eval mode with their initial statistics: a learnable affine map (SPEC 5.2)
        self._bn_frozen += _bn_layers(self.aspp)
        self._aff = PAMR(pamr_iter, tuple(pamr_kernel))
        self.shallow_mask = GCI(c3, DECODER_CHANNELS, DECODER_CHANNELS)
        self.sg = StochasticGate(sg_psi)
        self.fc8_skip = nn.Sequential(nn.Conv2d(c3, SKIP_CHANNELS, 1, bias=False), nn.BatchNorm2d(SKIP_CHANNELS),
                                      nn.ReLU(inplace=True))
        self.fc8_x = nn.Sequential(
            nn.Conv2d(ASPP_CHANNELS + SKIP_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_CHANNELS), nn.ReLU(inplace=True))
        self.last_conv = nn.Sequential(
            nn.Conv2d(DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False), nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Conv2d(DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False), nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Conv2d(DECODER_CHANNELS, num_classes - 1, 1))
        for m in (self.shallow_mask, self.fc8_skip, self.fc8_x, self.last_conv):
            for layer in m.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight)
                elif isinstance(layer, nn.BatchNorm2d) and layer.affine:
                    nn.init.ones_(layer.weight)
                    nn.init.zeros_(layer.bias)
        self._from_scratch += _param_layers([self.aspp, self.shallow_mask, self.fc8_skip, self.fc8_x, self.last_conv])

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image [B,3,H,W] normalised; image_raw [B,3,H,W] RGB in [0,1]; labels [B,20]."""
        size = image.shape[-2:]
        feats = self.backbone(image)
        conv3 = feats["conv3"]  # [B,256,h,w]
        a = self.aspp(feats["conv6"])  # [B,256,h8,w8]
        s = self.fc8_skip(conv3)  # [B,48,h,w]
        a = F.interpolate(a, size=s.shape[-2:], mode="bilinear", align_corners=True)
        x1 = self.fc8_x(torch.cat((a, s), dim=1))  # deep [B,256,h,w]
        x2 = self.shallow_mask(conv3, x1)  # shallow with global cues [B,256,h,w]
        x = add_background_logit(self.last_conv(self.sg(x1, x2)))  # logits [B,21,h,w]
        masks = torch.softmax(x.float(), dim=1)  # [B,21,h,w]
        cls = class_scores(x.float(), masks, self.focal_p, self.focal_lambda)  # [B,20]
        if image_raw is None and labels is None:
            return {"cls": cls, "masks": F.interpolate(masks, size=size, mode="bilinear", align_corners=True)}

        mbar = masks[:, 1:].mean((2, 3)).detach()  # [B,20]
        cls_fg = (mbar * labels).sum(1) / labels.sum(1).clamp_min(1)
        small = F.interpolate(image_raw.float(), size=x.shape[-2:], mode="bilinear", align_corners=True)
        refined = self._aff(small, masks.detach())  # [B,21,h,w]
        cam = rescale_and_clean(masks, labels, size)
        dec = rescale_and_clean(refined, labels, size)
        pseudo = pseudo_gt(dec).detach()
        return {"cls": cls, "cls_fg": cls_fg, "cam": cam, "dec": dec, "logits": x, "pseudo": pseudo,
                "loss_mask": balanced_mask_loss(x, pseudo, labels)}


class CAMNet(_TopLevelBackbone):
    """The CAM baseline "bsl": a 1x1 classifier over the deepest features, global average pooling for the class
    scores, max-normalised ReLU maps with a constant background score for the masks."""

    def __init__(self, backbone: Backbone, num_classes: int = 21, bg_score: float = 0.1):
        super().__init__(backbone)
        self.bg_score = bg_score
        self._freeze_backbone()
        self.fc8 = nn.Conv2d(backbone.channels["conv6"], num_classes - 1, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        # the same fc8 registered in both branches, as the original (three state-dict keys, one tensor)
        self.cls_branch = nn.Sequential(nn.Dropout2d(0.5), nn.AdaptiveAvgPool2d(1), self.fc8)
        self.mask_branch = nn.Sequential(self.fc8, nn.ReLU())
        self._from_scratch.append(self.fc8)

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        size = image.shape[-2:]
        conv6 = self.backbone(image)["conv6"]
        cls = self.cls_branch(conv6).flatten(1).float()  # [B,20]
        cams = F.interpolate(self.fc8(conv6).float(), size=size, mode="bilinear", align_corners=True).relu()
        cams = cams / (BSL_MASK_EPS + cams.flatten(2).amax(2)[:, :, None, None])
        masks = torch.cat((torch.full_like(cams[:, :1], self.bg_score), cams), dim=1)  # [B,21,H,W]
        if image_raw is None and labels is None:
            return {"cls": cls, "masks": masks}
        mbar = masks[:, 1:].mean((2, 3)).detach()
        cls_fg = (mbar * labels).sum(1) / labels.sum(1).clamp_min(1)
        keep = torch.cat((torch.ones_like(labels[:, :1]), labels), dim=1)[:, :, None, None]
        return {"cls": cls, "cls_fg": cls_fg, "cam": masks * keep}
