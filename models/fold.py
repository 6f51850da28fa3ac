"""Batch norms folded into the convolutions that feed them, for inference with a trained model.

In eval mode a BatchNorm2d is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``; after a
convolution it can be folded into the convolution's weights and bias (torch's ``fuse_conv_bn_eval``), which gives
the same function with one pass over the activations less. The values change by float rounding only (about 1e-6 of
the masks), like the channels_last memory format: the argmax masks of inference stay the same at all but
float-rounding ties (bench/infer_loop.py compares them with the original's loop).

Only pairs whose data flow is certain are folded: a Conv2d directly followed by a BatchNorm2d inside an
nn.Sequential, and the named pairs of the modules listed in ``_named_pairs`` (torchvision's ResNet blocks and stem,
the ASPP), whose forward applies the batch norm to the convolution's output and to nothing else. Both must be the
plain classes (a subclass may do more, e.g. timm's BatchNormAct2d adds the activation). The pre-activation blocks of
ResNet38 (batch norm before the convolution) and the batch norms of the EfficientNets are left as they are.
"""
from __future__ import annotations

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from models.backbones.resnets import _TorchvisionResNet
from models.mods.aspp import ASPP, _ASPPModule


def _named_pairs(module: nn.Module) -> tuple[tuple[str, str], ...]:
    """(convolution, batch norm) attribute names that ``module``'s forward applies in sequence."""
    if isinstance(module, Bottleneck):
        return ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")
    if isinstance(module, BasicBlock):
        return ("conv1", "bn1"), ("conv2", "bn2")
    if isinstance(module, (_TorchvisionResNet, ASPP)):  # the stem; the ASPP's fusing convolution
        return (("conv1", "bn1"),)
    if isinstance(module, _ASPPModule):
        return (("atrous_conv", "bn"),)
    return ()


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """Every (parent module, convolution name, batch norm name) of ``model`` that ``fold_batchnorms`` folds."""
    pairs = []
    for parent in model.modules():
        children = parent._modules
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs += [(parent, a, b) for a, b in zip(names, names[1:]) if _foldable(children[a], children[b])]
        pairs += [(parent, a, b) for a, b in _named_pairs(parent) if _foldable(children.get(a), children.get(b))]
    return pairs


def fold_batchnorms(model: nn.Module) -> int:
    """Fold the batch norms of an eval-mode ``model`` into their convolutions, in place: each convolution gets
    the folded weights and a bias, each batch norm becomes an nn.Identity. Returns the number folded. The model is
    then for inference only (its batch norms are gone from the graph; its state dict has other keys)."""
    if model.training:
        raise ValueError("fold_batchnorms needs a model in eval mode: the batch norms fold with their running "
                         "statistics")
    pairs = conv_bn_pairs(model)
    for parent, conv, bn in pairs:
        parent._modules[conv] = fuse_conv_bn_eval(parent._modules[conv], parent._modules[bn])
        parent._modules[bn] = nn.Identity()
    return len(pairs)
