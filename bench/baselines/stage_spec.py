"""The single-stage model "ae" and its training loss transcribed directly from SPEC 5.2-5.12, as the original
formulates them: the ASPP and GCI modules, the Stochastic Gate drawn with ``F.dropout`` on a cached all-ones tensor,
the nGWP and focal terms over flattened masks, the PAMR of bench/baselines/pamr_spec.py (48 mask copies per
iteration), the pseudo ground truth and the class-balanced loss, in the dtype of its parameters (float32 as the
original; float64 for the equivalence check of bench/train_step.py). The backbone is the project's
module (a deep copy). ``SingleStageSpec.from_model`` loads every parameter and buffer of a project model, so the
two run the same step; ``first_step_difference`` compares their losses and gradients. The baseline of
bench/train_step.py (training) and of bench/baselines/infer_loop.py (test mode), and the reference of
tests/test_bench.py.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.baselines.pamr_spec import PAMRSpec

HEAD = ("aspp", "shallow_mask", "fc8_skip", "fc8_x", "last_conv")


class _ASPPModuleSpec(nn.Module):
    def __init__(self, inplanes: int, planes: int, kernel_size: int, padding: int, dilation: int):
        super().__init__()
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, stride=1, padding=padding, dilation=dilation,
                                     bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPPSpec(nn.Module):
    """SPEC 5.3: branches at rates 1, 12, 24, 36 and image pooling, 1x1 fusion, Dropout(0.5)."""

    def __init__(self, inplanes: int, planes: int = 256):
        super().__init__()
        dilations = [1, 12, 24, 36]
        self.aspp1 = _ASPPModuleSpec(inplanes, planes, 1, padding=0, dilation=dilations[0])
        self.aspp2 = _ASPPModuleSpec(inplanes, planes, 3, padding=dilations[1], dilation=dilations[1])
        self.aspp3 = _ASPPModuleSpec(inplanes, planes, 3, padding=dilations[2], dilation=dilations[2])
        self.aspp4 = _ASPPModuleSpec(inplanes, planes, 3, padding=dilations[3], dilation=dilations[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)),
                                             nn.Conv2d(inplanes, planes, 1, stride=1, bias=False),
                                             nn.BatchNorm2d(planes), nn.ReLU(inplace=True))
        self.conv1 = nn.Conv2d(5 * planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = self.global_avg_pool(x)
        x5 = F.interpolate(x5, size=x4.size()[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x1, x2, x3, x4, x5), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class GCISpec(nn.Module):
    """SPEC 5.5: scale and shift from the spatial maximum of the deep features applied to the shallow ones."""

    def __init__(self, c_shallow: int, c_deep: int, c_out: int = 256):
        super().__init__()
        self.c_out = c_out
        self.fc_deep = nn.Sequential(nn.Conv2d(c_deep, 2 * c_out, 1, bias=False), nn.BatchNorm2d(2 * c_out),
                                     nn.ReLU(True))
        self.fc_skip = nn.Sequential(nn.Conv2d(c_shallow, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=False))
        self.fc_cls = nn.Sequential(nn.Conv2d(c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = self.fc_deep(y)
        attn_channel, _ = y.view(y.size(0), y.size(1), -1).max(-1)
        gamma = attn_channel[:, :self.c_out].view(y.size(0), self.c_out, 1, 1)
        beta = attn_channel[:, self.c_out:].view(y.size(0), self.c_out, 1, 1)
        x = F.relu(self.fc_skip(x) * (gamma + 1) + beta)
        return self.fc_cls(x)


class StochasticGateSpec(nn.Module):
    """SPEC 5.6: the Bernoulli mask is ``(1 - psi) * F.dropout(ones, psi)``; the all-ones tensor of the first call is
    cached (a new one where the shape changes, so that a last smaller batch runs)."""

    def __init__(self, psi: float):
        super().__init__()
        self.psi = psi
        self.ones = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        assert x1.size() == x2.size(), "SG: features of unequal size"
        if not self.training:
            return (1 - self.psi) * x1 + self.psi * x2
        if self.ones is None or self.ones.shape != x1.shape:
            self.ones = torch.ones_like(x1)
        mask = (1 - self.psi) * F.dropout(self.ones, self.psi)
        return mask * (x1 - self.psi * x2) / max(1e-8, 1 - self.psi) + (1 - mask) * x2


def focal_loss(x: torch.Tensor, p: float, c: float) -> torch.Tensor:
    return torch.pow(1 - x, p) * torch.log(c + x)


def pseudo_gtmask(mask: torch.Tensor, cutoff_top: float = 0.6, cutoff_bkg: float = 0.7,
                  cutoff_low: float = 0.2) -> torch.Tensor:
    """SPEC 5.10 on cleaned refined masks [B,C,H,W]."""
    bs, c, h, w = mask.size()
    mask = mask.view(bs, c, -1)
    mask_max, _ = mask.max(-1, keepdim=True)
    mask_max[:, :1] *= cutoff_bkg
    mask_max[:, 1:] *= cutoff_top
    lowest = torch.tensor([cutoff_low], device=mask.device, dtype=mask.dtype)
    mask_max = mask_max.max(lowest)
    pseudo_gt = (mask > mask_max).type_as(mask)
    ambiguous = (pseudo_gt.sum(1, keepdim=True) > 1).type_as(mask)
    pseudo_gt = (1 - ambiguous) * pseudo_gt
    return pseudo_gt.view(bs, c, h, w)


def balanced_mask_loss_ce(mask: torch.Tensor, pseudo_gt: torch.Tensor, gt_labels: torch.Tensor,
                          ignore_index: int = 255) -> torch.Tensor:
    """SPEC 5.11: logits [B,C,h,w], pseudo GT [B,C,H,W], labels [B,C-1] -> [B]."""
    mask = F.interpolate(mask, size=pseudo_gt.size()[-2:], mode="bilinear", align_corners=True)
    bs, c, h, w = pseudo_gt.size()
    num_labels = (pseudo_gt.view(bs, c, -1).sum(-1) > 0).type_as(gt_labels).sum(-1)
    num_labels_gt = gt_labels.sum(-1) + 1
    batch_weight = (num_labels == num_labels_gt).type_as(mask)
    pseudo_gt_argmax = pseudo_gt.argmax(1)
    ignore = pseudo_gt.sum(1) < 1
    pseudo_gt_argmax[ignore] = ignore_index
    loss = F.cross_entropy(mask, pseudo_gt_argmax, ignore_index=ignore_index, reduction="none")
    num_pixels_per_class = pseudo_gt.view(bs, c, -1).sum(-1)
    num_pixels_total = num_pixels_per_class.sum(-1, keepdim=True)
    class_weight = (num_pixels_total - num_pixels_per_class) / (1 + num_pixels_total)
    class_weight = (pseudo_gt * class_weight[:, :, None, None]).sum(1)
    loss = (class_weight * loss).view(bs, -1).mean(-1)
    return batch_weight * loss


class SingleStageSpec(nn.Module):
    """``(image, image_raw, labels) -> {"cls", "cls_fg", "cam", "dec", "logits", "pseudo", "loss_mask"}`` (the
    training outputs of SPEC 5.9, as the keys of the project's model); ``(image) -> {"cls", "masks"}`` in test
    mode."""

    def __init__(self, backbone: nn.Module, c3: int, c6: int, num_classes: int = 21, focal_p: float = 3,
                 focal_lambda: float = 0.01, pamr_iter: int = 10, pamr_kernel: tuple[int, ...] = (1, 2, 4, 8, 12, 24),
                 sg_psi: float = 0.3):
        super().__init__()
        self.backbone = backbone
        self.focal_p, self.focal_lambda = focal_p, focal_lambda
        self.aspp = ASPPSpec(c6, 256)
        self._aff = PAMRSpec(pamr_iter, tuple(pamr_kernel))
        self.shallow_mask = GCISpec(c3, 256, 256)
        self.sg = StochasticGateSpec(sg_psi)
        self.fc8_skip = nn.Sequential(nn.Conv2d(c3, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(True))
        self.fc8_x = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True))
        self.last_conv = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                       nn.ReLU(True), nn.Dropout(0.5),
                                       nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                       nn.ReLU(True), nn.Dropout(0.1),
                                       nn.Conv2d(256, num_classes - 1, 1, stride=1))
        self.bn_frozen: list[str] = []  # BNs kept in eval mode (SPEC 5.2: the ASPP's, and the pretrained backbone's)

    @classmethod
    def from_model(cls, model: nn.Module) -> "SingleStageSpec":
        """The same network as the project's SingleStageNet ``model`` (default head width): its parameters and
        buffers, its frozen parameters and its frozen BNs."""
        bb = model.backbone
        pamr = model._aff
        spec = cls(copy.deepcopy(bb), bb.channels["conv3"], bb.channels["conv6"], focal_p=model.focal_p,
                   focal_lambda=model.focal_lambda, pamr_iter=pamr.num_iter, pamr_kernel=tuple(pamr.dilations),
                   sg_psi=model.sg.psi)
        state = spec.state_dict()  # persistent tensors only (a backbone's constant input scaling is not one)
        ours = {name: t for name, t in list(model.named_parameters()) + list(model.named_buffers())
                if name.split(".")[0] in ("backbone",) + HEAD and name in state}
        state = {k: v for k, v in state.items() if k.startswith("_aff.")}
        spec.load_state_dict({**state, **ours}, strict=True)
        grad = dict(model.named_parameters())
        for name, p in spec.named_parameters():
            p.requires_grad_(grad[name].requires_grad)
        names = {id(m): name for name, m in model.named_modules()}
        spec.bn_frozen = [names[id(m)] for m in model._bn_frozen]
        return spec.to(next(model.parameters()).device).train(model.training)

    def train(self, mode: bool = True) -> "SingleStageSpec":
        super().train(mode)
        modules = dict(self.named_modules())
        for name in self.bn_frozen:
            modules[name].eval()
        return self

    def forward(self, y: torch.Tensor, y_raw: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Test mode (SPEC 5.9: neither ``y_raw`` nor ``labels``) returns {"cls", "masks"}, the masks upsampled to
        the input size; otherwise the training outputs."""
        test_size = y.size()[-2:]
        feats = self.backbone(y)
        x2_x, x = feats["conv3"], feats["conv6"]
        x = self.aspp(x)
        x2 = self.fc8_skip(x2_x)
        x_up = F.interpolate(x, size=x2.size()[-2:], mode="bilinear", align_corners=True)
        x = self.fc8_x(torch.cat([x_up, x2], 1))
        x2 = self.shallow_mask(x2_x, x)
        x = self.sg(x, x2)
        x = self.last_conv(x)
        bg = torch.ones_like(x[:, :1])
        x = torch.cat([bg, x], 1)
        bs, c, h, w = x.size()
        masks = F.softmax(x, dim=1)
        features = x.view(bs, c, -1)
        masks_ = masks.view(bs, c, -1)
        cls_1 = (features * masks_).sum(-1) / (1.0 + masks_.sum(-1))  # nGWP
        mask_norm = masks_.mean(-1)
        cls_2 = focal_loss(mask_norm, p=self.focal_p, c=self.focal_lambda)
        cls = cls_1[:, 1:] + cls_2[:, 1:]
        if y_raw is None and labels is None:
            return {"cls": cls, "masks": F.interpolate(masks, size=test_size, mode="bilinear", align_corners=True)}
        mask_logits = x
        cls_fg = (mask_norm[:, 1:] * labels).sum(-1) / labels.sum(-1)
        y_raw_small = F.interpolate(y_raw, size=(h, w), mode="bilinear", align_corners=True)
        masks_dec = self._aff(y_raw_small, masks.detach())
        labels_bg = torch.cat([torch.ones_like(labels[:, :1]), labels], 1)[:, :, None, None]
        masks = F.interpolate(masks, size=test_size, mode="bilinear", align_corners=True) * labels_bg
        masks_dec = F.interpolate(masks_dec, size=test_size, mode="bilinear", align_corners=True) * labels_bg
        pseudo_gt = pseudo_gtmask(masks_dec).detach()
        loss_mask = balanced_mask_loss_ce(mask_logits, pseudo_gt, labels)
        return {"cls": cls, "cls_fg": cls_fg, "cam": masks, "dec": masks_dec, "logits": mask_logits,
                "pseudo": pseudo_gt, "loss_mask": loss_mask}


def deterministic(net: nn.Module) -> None:
    """Dropout and the gate at their test-time form; everything else (BNs on batch statistics) as in training."""
    for m in net.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d, StochasticGateSpec)) or type(m).__name__ == "StochasticGate":
            m.eval()


def open_gate_labels(model: nn.Module, image: torch.Tensor, image_raw: torch.Tensor) -> torch.Tensor:
    """Image labels [B,C-1] under which the mask loss's gate (SPEC 5.11) opens for ``model`` on this batch, so that
    ``first_step_difference`` compares the mask loss's gradients too: the classes of the pseudo GT that a copy of
    the model run as ``first_step_difference`` runs it gives with every class allowed. Needs the background in
    that pseudo GT (a model whose foreground logits are near the background's constant 1)."""
    probe = copy.deepcopy(model).train()
    deterministic(probe)
    with torch.no_grad():
        pseudo = probe(image, image_raw, torch.ones(image.shape[0], probe.last_conv[-1].out_channels,
                                                    device=image.device))["pseudo"]
    return (pseudo[:, 1:].sum((2, 3)) > 0).to(image.dtype)


GRAD_FLOOR = 1e-3  # of the model's largest gradient: below it, a gradient is compared against that


def first_step_difference(model: nn.Module, spec: SingleStageSpec, image: torch.Tensor, image_raw: torch.Tensor,
                          labels: torch.Tensor, criterion) -> dict[str, float]:
    """Loss and gradients of one step of ``model`` and of ``spec`` (as ``from_model`` made it) on the same batch,
    with dropout and the Stochastic Gate deterministic (the two draw their random masks with different generator
    calls). Returns both losses (and their mask terms), the largest relative loss difference and the largest
    gradient difference of any parameter relative to that parameter's largest gradient (at least GRAD_FLOOR of the
    model's largest). Leaves both in training mode without gradients."""
    losses, mask_losses, grads = [], [], []
    for net in (model, spec):
        net.train()
        deterministic(net)
        net.zero_grad(set_to_none=True)
        out = net(image, image_raw, labels)
        loss = criterion(out["cls"], labels).mean() + out["loss_mask"].mean()
        loss.backward()
        losses.append(loss.item())
        mask_losses.append(out["loss_mask"].detach().mean().item())
        grads.append({n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None})
        net.zero_grad(set_to_none=True)
        net.train()
    if grads[0].keys() != grads[1].keys():
        raise AssertionError("different parameters get gradients: "
                             f"{sorted(grads[0].keys() ^ grads[1].keys())[:5]}")
    # relative to the parameter's largest gradient, but at least GRAD_FLOOR of the model's: a gradient that is zero
    # in exact arithmetic (the bias of a BN followed by a BN in training mode) is float noise in both
    top = max(float(g.abs().max()) for g in grads[1].values())
    grad_diff = max(float((grads[0][n] - grads[1][n]).abs().max()) / max(float(grads[1][n].abs().max()),
                                                                          GRAD_FLOOR * top, 1e-12)
                    for n in grads[1])
    return {"loss_ours": losses[0], "loss_spec": losses[1], "loss_mask_ours": mask_losses[0],
            "loss_mask_spec": mask_losses[1],
            "loss_rel_diff": abs(losses[0] - losses[1]) / max(1.0, abs(losses[1])), "grad_rel_diff": grad_diff}
