"""Configuration: the keys and defaults of SPEC 2.2, YAML merge and ``--set`` overrides.

The config is a value: ``get_cfg_defaults()`` returns a fresh copy of the defaults, the merge
functions update it, the entry points freeze it after the merge (utils/run_setup.py), and the result
is passed to the code that needs it. The merge rules are those of SPEC 2.1: every key must already
exist; string values go through ``ast.literal_eval`` (so ``"1e-5"`` becomes a float and ``bsl``
stays a string); a value must have the default's type, except that lists and tuples convert into
each other, strings accept anything (``str(v)``) and numpy arrays take the default's dtype. A
violation is a ``UserError`` naming the key.
"""
from __future__ import annotations

import ast
import copy
import math
from typing import Any, Iterable

import numpy as np
import yaml

from utils.errors import UserError


class AttrDict(dict):
    """A dict whose items are also attributes (``cfg.NET.LR == cfg["NET"]["LR"]``).

    ``freeze()`` makes it and its groups read-only (assigning or deleting a key raises TypeError): once merged, a
    run's config is a value, and code that tries to change it fails at once instead of changing it for every part
    that reads it later. ``copy.deepcopy`` gives a mutable copy.
    """

    _frozen = False  # freeze() sets it on the instance

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def _check_mutable(self, key: Any) -> None:
        if self._frozen:
            raise TypeError(f"the config is frozen after the merge; {key!r} cannot be changed (derive a copy with "
                            "copy.deepcopy instead)")

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_mutable(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self._check_mutable(key)
        super().__delitem__(key)

    def freeze(self) -> "AttrDict":
        """Make this config and every group in it read-only; returns it."""
        for v in self.values():
            if isinstance(v, AttrDict):
                v.freeze()
        object.__setattr__(self, "_frozen", True)
        return self

    def __deepcopy__(self, memo: dict) -> "AttrDict":
        return AttrDict({k: copy.deepcopy(v, memo) for k, v in self.items()})


def _to_attr(d: dict) -> AttrDict:
    return AttrDict({k: _to_attr(v) if isinstance(v, dict) else v for k, v in d.items()})


_DEFAULTS = {
    "NUM_GPUS": 1,
    "TRAIN": {
        "BATCH_SIZE": 20,
        "NUM_EPOCHS": 15,
        "NUM_WORKERS": 4,
        "MASK_LOSS": 0.0,
        "PRETRAIN": 5,
        # --- additions (each default keeps the behaviour of SPEC 7) ---
        # validate on un-augmented val images (False: random crops/flips/jitter, SPEC 7.5)
        "DETERMINISTIC_VAL": False,
        # mixed precision: "" (off), "bf16" or "fp16" (with a grad scaler)
        "AMP": "",
        # what to do with an image that turns out unreadable during a run: "stop" or "skip"
        "ON_CORRUPT": "stop",
        # validate every N epochs (SPEC 7.2: 2)
        "VAL_EVERY": 2,
        # run the train_voc monitoring pass in validation epochs (SPEC 7.2: True)
        "VAL_TRAIN_VOC": True,
        # stop each epoch after this many iterations (0 = whole epoch)
        "MAX_ITERS": 0,
        # channels_last memory format for the network (speed on GPU and modern CPUs)
        "CHANNELS_LAST": False,
        # torch.compile the model (start-up cost; off by default)
        "COMPILE": False,
        # the fast path: sets AMP, CHANNELS_LAST and COMPILE to what pays on the device (utils/fastpath.py): bf16
        # autocast and channels_last on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX); float32, contiguous,
        # on other CPUs, where bf16 convolutions have no fast kernel; torch.compile nowhere (on a CPU it compiles
        # for minutes and the steps are no faster). Not the original's numbers: bf16 rounds
        "FAST": False,
        # train the segmentation head on the GT masks instead of pseudo labels: a fully supervised reference
        # for the same network (the demo's upper bound; not the paper's method)
        "FULLY_SUPERVISED": False,
        # what picks the snapshots: "loss" (1 - mean validation loss, SPEC 7.5) or "miou" (mIoU of the
        # validation's single-scale final prediction over the classes present)
        "SNAPSHOT_SCORE": "loss",
        # also write every iteration's losses to TensorBoard (train writer, tags train_iter/<loss>)
        "LOG_ITER_LOSSES": False,
    },
    "TEST": {
        "METHOD": "multiscale",
        "DATA_ROOT": "/data/your_directory",
        "SCALES": [1, 0.5, 1.5, 2.0],
        "FLIP": True,
        "PAD_SIZE": [1024, 1024],
        "CROP_SIZE": [448, 448],
        "CROP_GRID_SIZE": [2, 2],
        "BATCH_SIZE": 8,
        "BG_POW": 3,
        "NUM_CLASSES": 21,
        "USE_GT_LABELS": False,
        "FP_CUT_SCORE": 0.1,
        # --- additions ---
        # the fast path of inference (utils/fastpath.py): bf16 autocast on GPUs and on CPUs with native bf16; no
        # change on other CPUs. Masks then differ from float32's at a few pixels near class boundaries
        "FAST": False,
    },
    "DATASET": {
        "CROP_SIZE": 321,
        "SCALE_FROM": 0.9,
        "SCALE_TO": 1.0,
        "PATH": "data/images",
        # --- additions ---
        # root of the training file lists and the paths in them (SPEC 3.1: ./data)
        "ROOT": "./data",
        # names of the training / monitoring / validation lists under ROOT
        "TRAIN_LIST": "train_augvoc.txt",
        "TRAIN_VOC_LIST": "train_voc.txt",
        "VAL_LIST": "val_voc.txt",
        # with TRAIN.FULLY_SUPERVISED: a folder of class-index PNGs <image id>.png (e.g. pseudo labels written by
        # infer_val.py) that replace the GT masks of the training list as targets; 255 is ignored. "" = GT masks
        "MASK_DIR": "",
    },
    "NET": {
        "MODEL": "vgg16",
        "BACKBONE": "resnet50",
        "PRE_WEIGHTS_PATH": "",
        "OPT": "SGD",
        "LR": 0.001,
        "BETA1": 0.5,
        "MOMENTUM": 0.9,
        "WEIGHT_DECAY": 1e-5,
        "LOSS": "SoftMargin",
        "MASK_LOSS_BCE": 1.0,
        "BG_SCORE": 0.1,
        "FOCAL_P": 3,
        "FOCAL_LAMBDA": 0.01,
        "PAMR_KERNEL": [1, 2, 4, 8, 12, 24],
        "PAMR_ITER": 10,
        "SG_PSI": 0.3,
        # --- additions ---
        # train the backbone from random initialisation (no ImageNet file needed)
        "FROM_SCRATCH": False,
        # channels of the single-stage head (ASPP, decoder, GCI): 256 as in SPEC 5.3-5.5; the skip branch gets 48/256
        # of them. Smaller heads are for CPU work with the light backbone (the synthetic demo)
        "HEAD_WIDTH": 256,
        # channels of the first stage of the light resnet18 (64 as torchvision's; the stages have 1, 2, 4, 8 times)
        "LIGHT_WIDTH": 64,
        # the EfficientNet-Lite backbones' last stage of blocks (conv6 is its output; later stages and the head
        # convolution left out); -1: the whole network, conv6 the head convolution's 1280 channels
        "LAST_STAGE": -1,
    },
    "MASKS": {
        "CRF": {
            "ALPHA_LOW": 4,
            "ALPHA_HIGH": 32,
            # --- additions: dense CRF parameters (defaults: the fixed values of SPEC 8.6) ---
            "ITER": 10,
            "POS_XY_STD": 3,
            "POS_W": 3,
            "BI_XY_STD": 80,
            "BI_RGB_STD": 13,
            "BI_W": 10,
        },
    },
    "CUDA": False,
    "DEBUG": False,
    "PYTORCH_VERSION_LESS_THAN_040": False,
}


def get_cfg_defaults() -> AttrDict:
    """A fresh copy of every default."""
    return _to_attr(copy.deepcopy(_DEFAULTS))


def _decode(value: Any) -> Any:
    """Strings go through literal_eval and stay strings if that fails (SPEC 2.1)."""
    if isinstance(value, dict):
        return _to_attr(value)
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _type_name(v: Any) -> str:
    return "list" if isinstance(v, (list, tuple)) else type(v).__name__


def _coerce(value: Any, default: Any, key: str) -> Any:
    if type(value) is type(default):
        return value
    if isinstance(default, np.ndarray):
        return np.array(value, dtype=default.dtype)
    if isinstance(default, str):
        return str(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, list) and isinstance(value, tuple):
        return list(value)
    raise UserError(
        f"config key {key}: expected {_type_name(default)} (like {default!r}), got "
        f"{_type_name(value)} {value!r}; write it in the default's type"
    )


def _merge(src: dict, dst: AttrDict, prefix: str) -> None:
    for k, v in src.items():
        key = f"{prefix}{k}"
        if not isinstance(k, str) or k not in dst:
            raise UserError(f"unknown config key {key}; check the spelling against utils/config.py")
        v = _decode(v)
        if isinstance(dst[k], dict):
            if not isinstance(v, dict):
                raise UserError(f"config key {key} is a group; give it a mapping of its keys, not {v!r}")
            _merge(v, dst[k], key + ".")
        else:
            if isinstance(v, dict):
                raise UserError(f"config key {key} is a single value, not a group")
            dst[k] = _coerce(copy.deepcopy(v), dst[k], key)


def merge_from_file(cfg: AttrDict, path: str) -> AttrDict:
    """Merge the YAML file ``path`` into ``cfg`` (in place) and return it."""
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=yaml.FullLoader)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found; pass an existing YAML file with --cfg (see configs/)") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory; pass a YAML file with --cfg") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise UserError(f"config file {path} is not valid YAML{at}: {problem}; fix the file") from None
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys (like 'NET: {{MODEL: ae}}'), not {_type_name(data)}")
    _merge(data, cfg, "")
    return cfg


def merge_from_list(cfg: AttrDict, pairs: Iterable[str]) -> AttrDict:
    """Merge ``KEY VALUE [KEY VALUE ...]`` overrides (``--set``) into ``cfg`` and return it."""
    pairs = list(pairs)
    if len(pairs) % 2:
        raise UserError(f"--set takes KEY VALUE pairs, got an odd number of tokens: {' '.join(pairs)}")
    for key, raw in zip(pairs[0::2], pairs[1::2]):
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"unknown config key {key}; check the spelling against utils/config.py")
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], dict):
            raise UserError(f"config key {key} is a group; set its keys one by one (e.g. {key}.<KEY> VALUE)")
        node[parts[-1]] = _coerce(_decode(raw), node[parts[-1]], key)
    return cfg


def load_cfg(cfg_file: str | None, set_cfgs: Iterable[str] = ()) -> AttrDict:
    """Defaults, then the YAML file, then the ``--set`` overrides."""
    cfg = get_cfg_defaults()
    if cfg_file:
        merge_from_file(cfg, cfg_file)
    merge_from_list(cfg, set_cfgs)
    return cfg


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def cfg_to_yaml(cfg: AttrDict) -> str:
    """The resolved config as YAML that ``merge_from_file`` reads back to the same values."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None)


# --- ranges of the numeric keys -------------------------------------------------------------------------------
# key -> (low, high, whether high itself is allowed, what the value is); low is always allowed, every value must be
# finite. A list key's rule holds for each element. Keys checked where they are used with their own messages
# (TRAIN.BATCH_SIZE, TRAIN.VAL_EVERY, TRAIN.MAX_ITERS, DATASET.*, TEST.BATCH_SIZE, MASKS.CRF.ITER and the CRF
# kernel widths) are not repeated here.
INF = float("inf")
TRAIN_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "NET.LR": (0, INF, False, "a learning rate >= 0 (the configs use 0.001 or 0.0005)"),
    "NET.WEIGHT_DECAY": (0, INF, False, "a weight decay >= 0 (the configs use 1e-5 to 5e-4)"),
    "NET.MOMENTUM": (0, 1, False, "an SGD momentum in [0, 1) (the original's 0.9)"),
    "NET.BETA1": (0, 1, False, "an Adam beta1 in [0, 1) (the configs use 0.5 or 0.9)"),
    "NET.MASK_LOSS_BCE": (0, INF, False, "a loss weight >= 0 (the original's 1.0)"),
    "NET.BG_SCORE": (0, 1, True, "a background score in [0, 1] (the original's 0.1)"),
    "NET.FOCAL_P": (0, INF, False, "a focal exponent >= 0 (the original's 3)"),
    "NET.FOCAL_LAMBDA": (0, INF, False, "a focal weight >= 0 (the original's 0.01)"),
    "NET.SG_PSI": (0, 1, True, "a gate mixing ratio in [0, 1] (the original's 0.3)"),
    "NET.PAMR_ITER": (0, INF, False, "a number of PAMR iterations >= 0 (the original's 10)"),
    "NET.PAMR_KERNEL": (1, INF, False, "PAMR dilations of at least 1 (the original's [1, 2, 4, 8, 12, 24])"),
    "NET.HEAD_WIDTH": (1, INF, False, "a channel count >= 1 (the original's 256)"),
    "NET.LIGHT_WIDTH": (1, INF, False, "a channel count >= 1 (torchvision's 64)"),
    "NET.LAST_STAGE": (-1, INF, False, "a stage index, or -1 for the whole network"),
    "TRAIN.NUM_EPOCHS": (0, INF, False, "a last epoch >= 0"),
    "TRAIN.PRETRAIN": (0, INF, False, "an epoch >= 0 from which the mask loss joins (the original's 5)"),
    "TRAIN.MASK_LOSS": (0, INF, False, "a loss weight >= 0"),
}
INFER_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "NET.PAMR_ITER": TRAIN_RANGES["NET.PAMR_ITER"],
    "NET.PAMR_KERNEL": TRAIN_RANGES["NET.PAMR_KERNEL"],
    "NET.HEAD_WIDTH": TRAIN_RANGES["NET.HEAD_WIDTH"],
    "NET.LIGHT_WIDTH": TRAIN_RANGES["NET.LIGHT_WIDTH"],
    "NET.LAST_STAGE": TRAIN_RANGES["NET.LAST_STAGE"],
    "TEST.SCALES": (1e-6, INF, False, "image scales > 0 (the original's [1, 0.5, 1.5, 2.0])"),
    "TEST.PAD_SIZE": (1, INF, False, "a canvas [height, width] of at least 1 pixel (the original's [1024, 1024])"),
    "TEST.CROP_SIZE": (1, INF, False, "a crop [height, width] of at least 1 pixel (the original's [448, 448])"),
    "TEST.CROP_GRID_SIZE": (1, INF, False, "a grid [rows, columns] of at least 1 (the original's [2, 2])"),
    "TEST.BG_POW": (0, INF, False, "a background exponent >= 0 (the original's 3)"),
    "TEST.FP_CUT_SCORE": (0, 1, True, "a class score threshold in [0, 1] (the original's 0.1)"),
    "MASKS.CRF.POS_W": (0, INF, False, "a kernel weight >= 0 (the original's 3)"),
    "MASKS.CRF.BI_W": (0, INF, False, "a kernel weight >= 0 (the original's 10)"),
}


def _lookup(cfg: AttrDict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _in_range(value: float, low: float, high: float, high_ok: bool) -> bool:
    return math.isfinite(value) and low <= value and (value < high or (high_ok and value == high))


def range_problems(cfg: AttrDict, ranges: dict[str, tuple[float, float, bool, str]]) -> list[str]:
    """Keys of ``ranges`` whose value (or an element of it) is outside its range or not finite; one line each."""
    problems = []
    for key, (low, high, high_ok, what) in ranges.items():
        value = _lookup(cfg, key)
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        bad = [v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)
               or not _in_range(float(v), low, high, high_ok)]
        if bad:
            shown = value.tolist() if isinstance(value, np.ndarray) else value
            finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            problems.append(f"config key {key} is {shown!r}{'' if finite else ', not a finite number'}; "
                            f"give {what}")
    return problems
