"""The single-stage model "ae" (SPEC 5.2-5.12) and the CAM baseline "bsl" (SPEC 5.13).

Both compose a backbone instead of inheriting from it. Their state_dict nevertheless carries the backbone's
tensors at the top level (``conv1a.weight``, not ``backbone.conv1a.weight``; SPEC Appendix A): two state-dict hooks
of ``_BackboneHead`` rename the keys, so the original's snapshots load strictly and the files saved here load there.

``forward(image, image_raw=None, labels=None)`` returns one dict in every mode: {"cls", "masks"} in test mode
(neither ``image_raw`` nor ``labels`` given) and the training outputs otherwise (see each model). The loss of the
masks is computed inside ``forward`` (SPEC 5.9), so that nn.DataParallel scatters it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from losses.functional import (add_background_logit, balanced_mask_loss, class_scores, foreground_coverage,
                               pseudo_gt, rescale_and_clean)
from models.backbones import Backbone
from models.mods.aspp import ASPP
from models.mods.gci import GCI
from models.mods.pamr import PAMR, PAPER_DILATIONS, PAPER_ITERS
from models.mods.sg import StochasticGate
from utils.errors import UserError

HEAD_WIDTH = 256  # ASPP and decoder channels (NET.HEAD_WIDTH)
SKIP_CHANNELS = 48  # fc8_skip output channels at HEAD_WIDTH (scaled with NET.HEAD_WIDTH)
DECODER_DROPOUT = (0.5, 0.1)  # after the first and the second conv of last_conv
BSL_DROPOUT = 0.5  # Dropout2d before the baseline's pooling
BSL_MASK_EPS = 1e-5  # CAMs are divided by (eps + their maximum)
BACKBONE = "backbone"
PARAM_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def _bn_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _param_layers(modules: list[nn.Module]) -> list[nn.Module]:
    return [m for root in modules for m in root.modules() if isinstance(m, PARAM_LAYERS)]


def _init_new_layers(modules: list[nn.Module]) -> None:
    """Kaiming-normal convs (fan-in, gain sqrt 2), BN gamma 1 and beta 0; conv biases keep PyTorch's default."""
    for layer in _param_layers(modules):
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight)
        elif layer.affine:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def _check_mode(image_raw: torch.Tensor | None, labels: torch.Tensor | None) -> bool:
    """True in test mode; the training outputs need both the raw image and the labels."""
    if (image_raw is None) != (labels is None):
        raise ValueError("forward needs both image_raw and labels (training outputs) or neither (test mode)")
    return labels is None


class _BackboneHead(nn.Module):
    """What both models share: the backbone (its keys at the top level of the state dict), the freezing
    rules (frozen layers never train; frozen BNs always normalise with their running statistics) and the four
    parameter groups."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self._frozen: list[nn.Module] = []  # weights and biases never trained
        self._bn_frozen: list[nn.Module] = []  # always in eval mode
        self._from_scratch: list[nn.Module] = []  # new layers: the high learning rates
        if backbone.pretrained:
            # SPEC 4, 5.2: the named early layers and every backbone BN (statistics and affine) stay at ImageNet values
            self._frozen += _param_layers(backbone.frozen_layers()) + _bn_layers(backbone)
            self._bn_frozen += _bn_layers(backbone)
        self.register_state_dict_post_hook(_backbone_keys_to_top)
        self.register_load_state_dict_pre_hook(_backbone_keys_from_top)

    def _apply_freezing(self) -> None:
        for m in self._frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
        for m in self._bn_frozen:
            m.eval()

    def train(self, mode: bool = True) -> "_BackboneHead":
        """The mode switch, then the freezing re-applied (SPEC 4.1)."""
        super().train(mode)
        self._apply_freezing()
        return self

    def parameter_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        """Four optimiser groups (SPEC 4.1): pretrained weights, pretrained biases, new weights, new biases, with the
        backbone's learning-rate multipliers; biases get no weight decay. Frozen layers are left out; BN gammas of
        new layers count as weights (so they get weight decay, SPEC 4.1)."""
        groups: list[list[nn.Parameter]] = [[], [], [], []]
        frozen = {id(m) for m in self._frozen}
        new = {id(m) for m in self._from_scratch}
        for m in self.modules():
            if id(m) in frozen or not isinstance(m, PARAM_LAYERS):
                continue
            offset = 2 if id(m) in new else 0
            if m.weight is not None:
                groups[offset].append(m.weight)
            if m.bias is not None:
                groups[offset + 1].append(m.bias)
        mult = self.backbone.lr_mult
        return [{"params": g, "lr": mult[i] * base_lr, "weight_decay": weight_decay if i % 2 == 0 else 0.0}
                for i, g in enumerate(groups)]


def _backbone_keys_to_top(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: ``<prefix>backbone.X`` -> ``<prefix>X`` in place, keeping the order (our keys are the
    last ones in the dict when the hook runs)."""
    head = prefix + BACKBONE + "."
    ours = [k for k in state_dict if k.startswith(prefix)]
    items = [(prefix + k[len(head):] if k.startswith(head) else k, state_dict.pop(k)) for k in ours]
    state_dict.update(items)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # module versions are keyed by module path: rename those too
        for k in [k for k in metadata if k.startswith(head)]:
            metadata[prefix + k[len(head):]] = metadata.pop(k)
        metadata.pop(head[:-1], None)


def _backbone_keys_from_top(module: _BackboneHead, state_dict: dict, prefix: str, local_metadata: dict,
                            strict: bool, missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """load_state_dict pre-hook: top-level keys of backbone layers get the ``backbone.`` prefix back."""
    top = {name for name, _ in module.backbone.named_children()}
    top |= {name for name, _ in module.backbone.named_parameters(recurse=False)}
    top |= {name for name, _ in module.backbone.named_buffers(recurse=False)}
    for k in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0] in top]:
        state_dict[prefix + BACKBONE + "." + k[len(prefix):]] = state_dict.pop(k)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # module versions (e.g. of BN) under the paths the modules have here
        for k in [k for k in metadata if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0] in top]:
            metadata[prefix + BACKBONE + "." + k[len(prefix):]] = metadata[k]


class SingleStageNet(_BackboneHead):
    """The single-stage model "ae": backbone -> ASPP -> decoder with GCI and the Stochastic Gate -> 20 foreground
    logits at stride 4 plus a constant background logit.

    Test mode returns {"cls" [B,20] class logits, "masks" [B,21,H,W] softmax probabilities at the input size}.
    Otherwise (training, and validation in eval mode) it returns {"cls", "cls_fg" [B] mean foreground mask size,
    "cam" [B,21,H,W] masks, "dec" [B,21,H,W] PAMR-refined masks (both cleaned with the labels), "logits"
    [B,21,h,w], "pseudo" [B,21,H,W] 0/1 pseudo ground truth, "loss_mask" [B] class-balanced CE}.
    """

    def __init__(self, backbone: Backbone, num_classes: int = 21, focal_p: float = 3, focal_lambda: float = 0.01,
                 pamr_iter: int = PAPER_ITERS, pamr_kernel: tuple[int, ...] = PAPER_DILATIONS,
                 sg_psi: float = 0.3, head_width: int = HEAD_WIDTH):
        super().__init__(backbone)
        if head_width < 1:
            raise UserError(f"NET.HEAD_WIDTH is {head_width}; it must be a positive number of channels")
        self.focal_p, self.focal_lambda = focal_p, focal_lambda
        c3, c6 = backbone.channels["conv3"], backbone.channels["conv6"]
        width, skip = head_width, max(1, SKIP_CHANNELS * head_width // HEAD_WIDTH)
        self.aspp = ASPP(c6, width)
        # SPEC 5.2: the ASPP BNs stay in eval mode with their initial statistics (a learnable affine map)
        self._bn_frozen += _bn_layers(self.aspp)
        self._aff = PAMR(num_iter=pamr_iter, dilations=tuple(pamr_kernel))  # the config's T and D (SPEC 5.8)
        self.shallow_mask = GCI(c3, width, width)
        self.sg = StochasticGate(sg_psi)
        self.fc8_skip = nn.Sequential(nn.Conv2d(c3, skip, 1, bias=False), nn.BatchNorm2d(skip), nn.ReLU(inplace=True))
        self.fc8_x = nn.Sequential(nn.Conv2d(width + skip, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True))
        self.last_conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Dropout(DECODER_DROPOUT[0]),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Dropout(DECODER_DROPOUT[1]),
            nn.Conv2d(width, num_classes - 1, 1))
        decoder = [self.shallow_mask, self.fc8_skip, self.fc8_x, self.last_conv]
        _init_new_layers(decoder)
        self._from_scratch += _param_layers([self.aspp] + decoder)
        self._apply_freezing()

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image [B,3,H,W] normalised; image_raw [B,3,H,W] RGB in [0,1]; labels [B,20] 0/1."""
        test_mode = _check_mode(image_raw, labels)
        size = image.shape[-2:]
        feats = self.backbone(image)
        conv3 = feats["conv3"]  # [B,C3,h,w]
        a = self.aspp(feats["conv6"])  # [B,256,h8,w8]
        s = self.fc8_skip(conv3)  # [B,48,h,w]
        a = F.interpolate(a, size=s.shape[-2:], mode="bilinear", align_corners=True)  # [B,256,h,w]
        x1 = self.fc8_x(torch.cat((a, s), dim=1))  # deep features [B,256,h,w]
        x2 = self.shallow_mask(conv3, x1)  # shallow features with global cues [B,256,h,w]
        fg = self.last_conv(self.sg(x1, x2))  # [B,20,h,w]
        # the paper's maths in float32 also under autocast; float64 stays float64 (bench/train_step.py's check)
        dtype = torch.promote_types(fg.dtype, torch.float32)
        with torch.autocast(device_type=image.device.type, enabled=False):
            x = add_background_logit(fg.to(dtype))  # logits [B,21,h,w]
            masks = torch.softmax(x, dim=1)  # [B,21,h,w]
            cls = class_scores(x, masks, self.focal_p, self.focal_lambda)  # [B,20]
            if test_mode:
                return {"cls": cls, "masks": F.interpolate(masks, size=size, mode="bilinear", align_corners=True)}
            labels = labels.to(dtype)
            small = F.interpolate(image_raw.to(dtype), size=x.shape[-2:], mode="bilinear", align_corners=True)
            refined = self._aff(small, masks.detach())  # [B,21,h,w]
            cam = rescale_and_clean(masks, labels, size)  # [B,21,H,W]
            dec = rescale_and_clean(refined, labels, size)  # [B,21,H,W]
            pseudo = pseudo_gt(dec).detach()  # [B,21,H,W]
            return {"cls": cls, "cls_fg": foreground_coverage(masks.detach(), labels), "cam": cam, "dec": dec,
                    "logits": x, "pseudo": pseudo, "loss_mask": balanced_mask_loss(x, pseudo, labels)}


class CAMNet(_BackboneHead):
    """The CAM baseline "bsl": a 1x1 classifier ``fc8`` over the deepest features; global average pooling gives
    the class scores, the ReLU class maps normalised by their maximum give the masks, with a constant background
    score. Test mode returns {"cls", "masks" [B,21,H,W]}; otherwise {"cls", "cls_fg", "cam" (cleaned masks), "masks"
    (the same uncleaned masks, for the validation's final prediction)}.
    ``forward(image)`` alone gives the inference outputs."""

    def __init__(self, backbone: Backbone, num_classes: int = 21, bg_score: float = 0.1):
        super().__init__(backbone)
        self.bg_score = bg_score
        self.fc8 = nn.Conv2d(backbone.channels["conv6"], num_classes - 1, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        # the same fc8 in both branches (SPEC 5.13): three state-dict keys for one tensor. forward never calls
        # mask_branch (it applies fc8 and the ReLU itself); the module stays for the key mask_branch.0.weight of
        # the original's snapshots (SPEC Appendix A), which strict loading needs
        self.cls_branch = nn.Sequential(nn.Dropout2d(BSL_DROPOUT), nn.AdaptiveAvgPool2d(1), self.fc8)
        self.mask_branch = nn.Sequential(self.fc8, nn.ReLU())
        self._from_scratch.append(self.fc8)
        self._apply_freezing()

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image [B,3,H,W] normalised; labels [B,20] 0/1 (``image_raw`` is not used: CAMs need no refinement)."""
        size = image.shape[-2:]
        conv6 = self.backbone(image)["conv6"]  # [B,F,h8,w8]
        cls = self.cls_branch(conv6).flatten(1)  # [B,20]
        dtype = torch.promote_types(cls.dtype, torch.float32)  # float32 also under autocast; float64 stays
        with torch.autocast(device_type=image.device.type, enabled=False):
            cls = cls.to(dtype)
            cams = F.interpolate(self.fc8(conv6).to(dtype), size=size, mode="bilinear", align_corners=True).relu()
            cams = cams / (BSL_MASK_EPS + cams.flatten(2).amax(2)[:, :, None, None])  # [B,20,H,W] in [0,1)
            masks = torch.cat((torch.full_like(cams[:, :1], self.bg_score), cams), dim=1)  # [B,21,H,W]
            if labels is None:
                return {"cls": cls, "masks": masks}
            labels = labels.to(dtype)
            return {"cls": cls, "cls_fg": foreground_coverage(masks, labels),
                    "cam": rescale_and_clean(masks, labels, size), "masks": masks}
