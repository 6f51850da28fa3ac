"""Loading the original's weight files: ImageNet initialisation files and trained snapshots (model_enc_*.pth)."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from utils.errors import UserError

# where each init file comes from (the original's README names them; they go to models/weights/)
INIT_SOURCES = {
    "resnet38": ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth",
                 "the link in the README of the original project (visinf/1-stage-wseg), 402 MB"),
    "vgg16": ("vgg16_20M.pth", "the link in the README of the original project (visinf/1-stage-wseg), 79 MB"),
    "resnet50": ("resnet50-19c8e357.pth",
                 "https://download.pytorch.org/models/resnet50-19c8e357.pth (torchvision's resnet50-0676ba61.pth "
                 "works too)"),
    "resnet101": ("resnet101-5d3b4d8f.pth",
                  "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth (torchvision's resnet101-63fe2227.pth "
                  "works too)"),
}
SHOW_KEYS = 3


def _torch_load(path: str, what: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a .pth file") from None
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(f"{what} {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        "the file is corrupt or not a PyTorch state dict: download or copy it again") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} does not hold a state dict of tensors")
    return obj


def load_init_weights(backbone: nn.Module, path: str, name: str) -> None:
    """Load an ImageNet file into the backbone; every backbone tensor must be found (extra keys are ignored)."""
    fname, source = INIT_SOURCES.get(name, (None, None))
    if not path or not os.path.exists(path):
        hint = f" (expected {fname}, from {source}, placed in models/weights/)" if fname else ""
        raise UserError(f"init weights {path or '(NET.PRE_WEIGHTS_PATH is empty)'} not found{hint}; "
                        "or train from scratch with --set NET.FROM_SCRATCH True")
    state = _torch_load(path, "init weights")
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"init weights {path} do not fit backbone {name}: {len(missing)} tensors missing, e.g. "
                        f"{', '.join(missing[:SHOW_KEYS])}; is it the {fname} file?")
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise UserError(f"init weights {path}: shape of {k} is {tuple(state[k].shape)}, backbone {name} expects "
                        f"{tuple(own[k].shape)}; is it the {fname} file?")
    result = backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    unexpected = len([k for k in state if k not in own])
    print(f"Loading weights from: {path} ({len(own) - len(result.missing_keys)} tensors loaded, "
          f"{len(result.missing_keys)} missing, {unexpected} unused)")


def _guess_backbone(keys: set[str]) -> str:
    if "conv1a.weight" in keys:
        return "resnet38"
    if "conv1_1.weight" in keys:
        return "vgg16"
    if "layer3.22.conv1.weight" in keys:
        return "resnet101"
    if "layer1.0.conv3.weight" in keys:
        return "resnet50"
    if "layer1.0.conv2.weight" in keys:
        return "resnet18"
    return "an unknown backbone"


def _guess_model(keys: set[str]) -> str:
    return "bsl" if "fc8.weight" in keys else "ae" if "last_conv.8.weight" in keys else "unknown"


def load_snapshot(model: nn.Module, path: str) -> None:
    """Load a model_enc_*.pth (ours or the original's) strictly; a mismatch names the keys and the likely backbone."""
    if not os.path.exists(path):
        raise UserError(f"snapshot {path} not found; check --snapshot-dir/--dataset/--exp/--run/--resume")
    state = _torch_load(path, "snapshot")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        keys = set(state)
        found = f"the file looks like backbone {_guess_backbone(keys)}, model {_guess_model(keys)}"
        if shape:
            k = shape[0]
            detail = f"shape of {k} is {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
        else:
            detail = (f"missing {', '.join(missing[:SHOW_KEYS]) or 'none'}; "
                      f"unexpected {', '.join(unexpected[:SHOW_KEYS]) or 'none'}")
        raise UserError(f"snapshot {path} does not match the configured model ({detail}); {found}: "
                        "set NET.BACKBONE / NET.MODEL accordingly")
    model.load_state_dict(state, strict=True)
