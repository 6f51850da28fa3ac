"""The config merge with the original's rules (SPEC 2.1-2.3): defaults, YAML, --set, types, errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from utils.config import cfg_to_yaml, get_cfg_defaults, load_cfg, merge_from_file, merge_from_list
from utils.errors import UserError
from utils.run_setup import get_arg_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _yaml(tmp_path, text: str, name: str = "c.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_are_the_originals_and_a_fresh_copy():
    cfg = get_cfg_defaults()
    assert cfg.TRAIN.BATCH_SIZE == 20 and cfg.TRAIN.NUM_EPOCHS == 15 and cfg.TRAIN.PRETRAIN == 5
    assert cfg.TEST.SCALES == [1, 0.5, 1.5, 2.0] and cfg.TEST.PAD_SIZE == [1024, 1024] and cfg.TEST.BG_POW == 3
    assert cfg.TEST.FP_CUT_SCORE == 0.1 and cfg.TEST.USE_GT_LABELS is False and cfg.TEST.METHOD == "multiscale"
    assert (cfg.DATASET.CROP_SIZE, cfg.DATASET.SCALE_FROM, cfg.DATASET.SCALE_TO) == (321, 0.9, 1.0)
    assert cfg.NET.MODEL == "vgg16" and cfg.NET.BACKBONE == "resnet50" and cfg.NET.WEIGHT_DECAY == 1e-5
    assert cfg.NET.PAMR_KERNEL == [1, 2, 4, 8, 12, 24] and cfg.NET.PAMR_ITER == 10 and cfg.NET.SG_PSI == 0.3
    assert (cfg.NET.FOCAL_P, cfg.NET.FOCAL_LAMBDA, cfg.NET.BG_SCORE) == (3, 0.01, 0.1)
    assert cfg.MASKS.CRF.ALPHA_LOW == 4 and cfg.MASKS.CRF.ALPHA_HIGH == 32
    # attribute and item access are the same; every call gives an independent copy
    assert cfg["NET"]["LR"] is cfg.NET.LR
    cfg.NET.PAMR_KERNEL.append(48)
    assert get_cfg_defaults().NET.PAMR_KERNEL == [1, 2, 4, 8, 12, 24]


def test_yaml_merge_literal_eval_and_subsets(tmp_path):
    path = _yaml(tmp_path, "NET:\n  MODEL: bsl\n  WEIGHT_DECAY: 1e-5\n  LR: '0.01'\n"
                           "TEST:\n  SCALES: [1, 0.75]\n  FLIP: False\n  NUM_CLASSES: 21\n")
    cfg = merge_from_file(get_cfg_defaults(), path)
    # YAML 1.1 reads 1e-5 (no dot) as a string; literal_eval makes it a float, as the original
    assert cfg.NET.WEIGHT_DECAY == 1e-5 and isinstance(cfg.NET.WEIGHT_DECAY, float)
    assert cfg.NET.LR == 0.01 and cfg.NET.MODEL == "bsl"
    assert cfg.TEST.SCALES == [1, 0.75] and cfg.TEST.FLIP is False
    # the keys the file does not set keep their defaults
    assert cfg.NET.BACKBONE == "resnet50" and cfg.TEST.PAD_SIZE == [1024, 1024]
    assert merge_from_file(get_cfg_defaults(), _yaml(tmp_path, "", "empty.yaml")) == get_cfg_defaults()


def test_set_overrides_after_yaml(tmp_path):
    path = _yaml(tmp_path, "NET:\n  LR: 0.5\n  MODEL: ae\n")
    args = get_arg_parser().parse_args(["--cfg", path, "--set", "NET.LR", "0.25", "TEST.SCALES", "(1, 2.0)",
                                        "TEST.FLIP", "False", "NET.BACKBONE", "resnet38", "NET.MODEL", "5"])
    cfg = load_cfg(args.cfg_file, args.set_cfgs)
    assert cfg.NET.LR == 0.25
    assert cfg.TEST.SCALES == [1, 2.0] and isinstance(cfg.TEST.SCALES, list)  # tuple -> the default's list
    assert cfg.TEST.FLIP is False and cfg.NET.BACKBONE == "resnet38"
    assert cfg.NET.MODEL == "5"  # a string default takes anything, as str(value)


def test_numpy_array_default_takes_its_dtype():
    cfg = get_cfg_defaults()
    cfg.TEST.EXTRA = np.zeros(2, np.float32)
    merge_from_list(cfg, ["TEST.EXTRA", "[1, 2]"])
    assert cfg.TEST.EXTRA.dtype == np.float32 and cfg.TEST.EXTRA.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("pairs, message", [
    (["NET.LR", "1"], "config key NET.LR: expected float (like 0.001), got int 1"),
    (["TEST.FLIP", "0"], "config key TEST.FLIP: expected bool (like True), got int 0"),
    (["TRAIN.BATCH_SIZE", "2.5"], "config key TRAIN.BATCH_SIZE: expected int (like 20), got float 2.5"),
    (["TEST.SCALES", "1.0"], "config key TEST.SCALES: expected list"),
    (["NET.FOO", "1"], "unknown config key NET.FOO; check the spelling"),
    (["NETT.LR", "0.1"], "unknown config key NETT.LR"),
    (["NET.LR.X", "0.1"], "unknown config key NET.LR.X"),
    (["NET", "1"], "config key NET is a group"),
    (["NET.LR", "0.1", "NET.MODEL"], "--set takes KEY VALUE pairs, got an odd number of tokens"),
])
def test_set_errors_name_the_key(pairs, message):
    with pytest.raises(UserError) as e:
        merge_from_list(get_cfg_defaults(), pairs)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ("NET:\n  FOO: 1\n", "unknown config key NET.FOO"),
    ("NETWORK:\n  LR: 0.1\n", "unknown config key NETWORK"),
    ("NET:\n  LR: 1\n", "config key NET.LR: expected float"),
    ("NET: 3\n", "config key NET is a group"),
    ("NET:\n  LR:\n    A: 1\n", "config key NET.LR is a single value"),
    ("- 1\n- 2\n", "must hold a mapping of keys"),
    ("NET:\n  LR: 0.1\n  MODEL: [ae\nTEST:\n  FLIP: True\n", "is not valid YAML at line 4"),
])
def test_yaml_errors_name_the_key_or_line(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(UserError) as e:
        merge_from_file(get_cfg_defaults(), path)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1
    if "YAML" in message:
        assert path in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match=r"config file .*nope.yaml not found; pass an existing YAML file with --cfg"):
        load_cfg(str(tmp_path / "nope.yaml"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_cfg(os.path.join(ROOT, "configs/voc_resnet38.yaml"), ["NET.LR", "0.002"])
    again = merge_from_file(get_cfg_defaults(), _yaml(tmp_path, cfg_to_yaml(cfg)))
    assert again == cfg


# SPEC 2.3, column by column (TEST.DATA_ROOT is this repository's ./data)
SPEC_2_3 = {
    "voc_resnet38": dict(CROP=321, EPOCHS=24, BACKBONE="resnet38", LR=0.001, PAD=[1024, 1024],
                         SCALES=[1, 0.5, 1.5, 2.0], FP=0.1, BG_POW=3, GT=False,
                         WEIGHTS="./models/weights/ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"),
    "voc_vgg16": dict(CROP=448, EPOCHS=32, BACKBONE="vgg16", LR=0.001, PAD=[768, 768], SCALES=[1, 0.75, 1.25, 1.5],
                      FP=0.3, BG_POW=1, GT=True, WEIGHTS="./models/weights/vgg16_20M.pth"),
    "voc_resnet50": dict(CROP=448, EPOCHS=20, BACKBONE="resnet50", LR=0.0005, PAD=[768, 768],
                         SCALES=[1, 0.75, 1.25, 1.5], FP=0.3, BG_POW=3, GT=True,
                         WEIGHTS="./models/weights/resnet50-19c8e357.pth"),
    "voc_resnet101": dict(CROP=448, EPOCHS=20, BACKBONE="resnet101", LR=0.001, PAD=[768, 768],
                          SCALES=[1, 0.75, 1.25, 1.5], FP=0.3, BG_POW=3, GT=True,
                          WEIGHTS="./models/weights/resnet101-5d3b4d8f.pth"),
}


@pytest.mark.parametrize("name", SPEC_2_3)
def test_shipped_configs(name):
    v = SPEC_2_3[name]
    cfg = load_cfg(os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert cfg.NUM_GPUS == 1
    assert (cfg.DATASET.CROP_SIZE, cfg.DATASET.SCALE_FROM, cfg.DATASET.SCALE_TO) == (v["CROP"], 0.9, 1.0)
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.NUM_EPOCHS, cfg.TRAIN.NUM_WORKERS, cfg.TRAIN.PRETRAIN) == \
        (16, v["EPOCHS"], 8, 5)
    assert (cfg.NET.BACKBONE, cfg.NET.MODEL, cfg.NET.PRE_WEIGHTS_PATH) == (v["BACKBONE"], "ae", v["WEIGHTS"])
    assert (cfg.NET.LR, cfg.NET.OPT, cfg.NET.LOSS, cfg.NET.WEIGHT_DECAY) == (v["LR"], "SGD", "SoftMargin", 0.0005)
    assert (cfg.NET.PAMR_ITER, cfg.NET.FOCAL_LAMBDA, cfg.NET.FOCAL_P, cfg.NET.SG_PSI) == (10, 0.01, 3, 0.3)
    assert (cfg.TEST.METHOD, cfg.TEST.DATA_ROOT, cfg.TEST.FLIP, cfg.TEST.BATCH_SIZE) == \
        ("multiscale", "./data", True, 8)
    assert (cfg.TEST.PAD_SIZE, cfg.TEST.SCALES, cfg.TEST.FP_CUT_SCORE) == (v["PAD"], v["SCALES"], v["FP"])
    assert (cfg.TEST.BG_POW, cfg.TEST.USE_GT_LABELS) == (v["BG_POW"], v["GT"])
    # the inference batch holds every scale and its flip
    assert cfg.TEST.BATCH_SIZE == len(cfg.TEST.SCALES) * 2
