"""The fast path (TRAIN.FAST, TEST.FAST; utils/fastpath.py): what it resolves to on each kind of device, and that
its bf16 arithmetic stays close to float32 on the synthetic data: 20 training steps follow the float32 losses, and
inference gives the same masks at almost every pixel. bf16 runs on any CPU (slowly where it has no native bf16), so
the numerics are checked here with the resolution of a CPU that has it."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

import utils.fastpath as fastpath
from utils.config import get_cfg_defaults
from utils.dist import DistContext
from utils.fastpath import FastSettings, apply_train_fast_path, fast_settings, inference_fast_path

CPU = torch.device("cpu")
STEPS = 20
# training losses of the fast path against float32's, step by step: bf16 keeps 8 bits of mantissa, and the mask loss
# thresholds the refined masks into pseudo labels, so some pixels change class from the first step on (4% on the
# first loss here, at most 8% of a small loss later; the runs do not drift further apart over the 20 steps)
LOSS_RTOL = 0.05
LOSS_ATOL = 0.01
MIN_AGREEMENT = 0.995  # inference: pixels whose label is the same as float32's
TRAINED_STEPS = 200  # float32 steps that train the model of the inference check
TINY_NET = {"BACKBONE": "resnet18", "MODEL": "ae", "FROM_SCRATCH": True, "LIGHT_WIDTH": 8, "HEAD_WIDTH": 16}


@pytest.mark.parametrize("device, native_bf16, training, expected", [
    ("cpu", False, True, FastSettings("", False, False)),  # AVX2: float32, contiguous
    ("cpu", False, False, FastSettings("", True, False)),  # AVX2 inference: channels_last pays
    ("cpu", True, True, FastSettings("bf16", True, False)),
    ("cpu", True, False, FastSettings("bf16", True, False)),
])
def test_cpu_settings(device, native_bf16, training, expected):
    assert fast_settings(torch.device(device), training, native_bf16=native_bf16) == expected


@pytest.mark.parametrize("bf16, amp", [(True, "bf16"), (False, "fp16")])
def test_gpu_settings(monkeypatch, bf16, amp):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert fast_settings(torch.device("cuda"), training=True) == FastSettings(amp, True, False)


def test_train_key_writes_the_resolved_settings(monkeypatch):
    cfg = get_cfg_defaults()
    cfg.TRAIN.AMP, cfg.TRAIN.COMPILE = "fp16", True
    assert apply_train_fast_path(cfg, CPU) is None  # off: the keys stay as given
    assert (cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST, cfg.TRAIN.COMPILE) == ("fp16", False, True)
    cfg.TRAIN.FAST = True
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: False)
    assert apply_train_fast_path(cfg, CPU) == FastSettings("", False, False)
    assert (cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST, cfg.TRAIN.COMPILE) == ("", False, False)
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    apply_train_fast_path(cfg, CPU)
    assert (cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST, cfg.TRAIN.COMPILE) == ("bf16", True, False)


def _train(cfg, batches: list) -> tuple[list[float], torch.nn.Module]:
    """train.py's training step (mask loss on, as after PRETRAIN) on each batch, from one seed: the losses and the
    model."""
    from losses import get_criterion
    from models import build_model
    from utils.training import build_optimizer, train_iteration

    torch.manual_seed(0)
    model = build_model(cfg.NET).train()
    fmt = torch.channels_last if cfg.TRAIN.CHANNELS_LAST else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = build_optimizer(cfg.NET, model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY))
    scaler = torch.amp.GradScaler("cpu", enabled=cfg.TRAIN.AMP == "fp16")
    ctx = DistContext(device=CPU)
    torch.manual_seed(1)  # the dropout and gate masks: the same draws in both precisions
    losses = []
    for it, (image, labels) in enumerate(batches):
        means, _ = train_iteration(model, get_criterion(cfg.NET.LOSS), optimizer, scaler,
                                   image.contiguous(memory_format=fmt), labels, cfg.TRAIN.PRETRAIN, it, cfg, ctx)
        losses.append(means["loss"])
    return losses, model


def _tiny_cfg(synthetic_root: str):
    cfg = get_cfg_defaults()
    cfg.NET.update(TINY_NET)
    cfg.NET.LR = 0.01
    cfg.DATASET.ROOT, cfg.DATASET.CROP_SIZE = synthetic_root, 48
    return cfg


def _batches(cfg, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of 2 augmented images of the synthetic training list."""
    from datasets.pascal_voc import VOCSegmentation

    data = VOCSegmentation(cfg, "train")
    torch.manual_seed(seed)
    order = torch.randint(len(data), (steps, 2)).tolist()
    return [tuple(torch.stack(t) for t in zip(*[data[i][:2] for i in pair])) for pair in order]


def test_twenty_training_steps_follow_the_float32_losses(synthetic_root, monkeypatch):
    cfg = _tiny_cfg(synthetic_root)
    batches = _batches(cfg, STEPS, seed=2)
    ref, _ = _train(cfg, batches)
    fast = copy.deepcopy(cfg)
    fast.TRAIN.FAST = True
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    assert apply_train_fast_path(fast, CPU) == FastSettings("bf16", True, False)
    out, _ = _train(fast, batches)
    assert all(np.isfinite(out))
    assert out != ref  # bf16 did run
    np.testing.assert_allclose(out, ref, rtol=LOSS_RTOL, atol=LOSS_ATOL)


def test_inference_masks_agree_with_float32(synthetic_root, monkeypatch):
    """On the tiny model trained for TRAINED_STEPS float32 steps on the synthetic data (trained BN statistics),
    with the GT image labels (TEST.USE_GT_LABELS, as the VGG16 and ResNet configs infer): the predicted labels of
    so short a training keep several wrong classes whose masks are nearly tied, and any rounding flips such ties
    (98-99% agreement without the GT labels, with the same classes kept by both)."""
    import infer_val
    from datasets.pascal_voc_ms import build_inference_dataset, get_inference_loader, read_inference_items

    cfg = _tiny_cfg(synthetic_root)
    _, model = _train(cfg, _batches(cfg, TRAINED_STEPS, seed=3))
    model.eval()
    cfg.TEST.SCALES, cfg.TEST.PAD_SIZE, cfg.TEST.BATCH_SIZE = [1, 0.5], [96, 96], 4
    cfg.TEST.USE_GT_LABELS = cfg.TEST.FAST = True
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    fast = inference_fast_path(model, cfg.TEST, CPU)
    assert isinstance(fast, fastpath.Autocast) and fast.dtype == torch.bfloat16
    items = read_inference_items(f"{synthetic_root}/val_voc.txt", synthetic_root)
    agree, total, classes = 0, 0, set()
    for batch in get_inference_loader(build_inference_dataset(items, cfg.TEST), 0):
        ref = infer_val.predict(model, batch, cfg.TEST, CPU).argmax(0)
        out = infer_val.predict(fast, batch, cfg.TEST, CPU).argmax(0)
        agree += int((ref == out).sum())
        total += ref.numel()
        classes |= set(ref.unique().tolist())
    assert len(classes) > 1  # the masks are not trivially one class
    assert agree / total >= MIN_AGREEMENT, agree / total


def test_train_cli_records_the_resolved_fast_path(synthetic_root, tmp_path):
    """train.py --set TRAIN.FAST True: the run's config.yaml holds what the fast path resolved to on this machine,
    whatever TRAIN.AMP / CHANNELS_LAST / COMPILE said."""
    import yaml
    from train_helpers import run_dir, run_train, train_args

    r = run_train(train_args(synthetic_root, str(tmp_path), "fast", epochs=0, iters=1, extra=["--device", "cpu"],
                             sets=["TRAIN.FAST", "True", "TRAIN.AMP", "fp16", "TRAIN.COMPILE", "True",
                                   "TRAIN.VAL_TRAIN_VOC", "False"]))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(run_dir(str(tmp_path), "fast", "logs"), "config.yaml")) as f:
        train = yaml.safe_load(f)["TRAIN"]
    expected = fast_settings(CPU, training=True)
    assert (train["AMP"], train["CHANNELS_LAST"], train["COMPILE"]) == (expected.amp, expected.channels_last, False)
