"""FLOP counting and the peak rate of bench/common.py: single layers whose forward and backward FLOPs are derived by
hand (padding taps, dilation, stride, groups, transposed, frozen layers), a step that stays below the measured peak,
and bench/train_step.py reporting fractions from counted FLOPs. The original's whole training step
(bench/baselines/stage_spec.py): its first step's losses and gradients equal ours, its gate draws as SPEC 5.6."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from bench.common import count_flops, fraction_of_peak, peak_rate, time_fn
from tests.helpers import describe, run_script


def fwd_bwd(layer: nn.Module, x: torch.Tensor):
    return lambda: layer(x).sum().backward()


def conv(*args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(*args, bias=False, **kwargs)


def test_conv_without_padding_forward_and_both_gradients():
    # 3 -> 4 channels, 3x3 on 6x6: a 4x4 output, every tap inside; MACs = B * Cout * Cin * 9 * 16 = 3456 per pass
    layer, x = conv(3, 4, 3), torch.randn(2, 3, 6, 6)
    assert count_flops(lambda: layer(x)) == 2 * 3456
    assert count_flops(fwd_bwd(layer, x)) == 2 * 3456 * 2  # first layer: the weight's gradient only
    assert count_flops(fwd_bwd(layer, x.requires_grad_(True))) == 2 * 3456 * 3  # also the input's gradient


def test_frozen_layer_gets_no_weight_gradient():
    # conv1 frozen, input without gradient: conv1 runs forward only; conv2 needs its weight's gradient only
    net = nn.Sequential(conv(2, 3, 1), nn.ReLU(), conv(3, 5, 1))
    net[0].weight.requires_grad_(False)
    x = torch.randn(1, 2, 4, 4)
    macs1, macs2 = 16 * 2 * 3, 16 * 3 * 5
    assert count_flops(fwd_bwd(net, x)) == 2 * (macs1 + macs2 + macs2)
    # with conv1 trainable, conv2 also passes the gradient to its input, and conv1 gets its weight's gradient
    net[0].weight.requires_grad_(True)
    assert count_flops(fwd_bwd(net, x)) == 2 * (2 * macs1 + 3 * macs2)


@pytest.mark.parametrize("kwargs, size, taps_per_axis", [
    (dict(padding=1), 4, 4 * 3 - 2),  # the two border outputs lose one tap each to the padding
    (dict(padding=5, dilation=5), 4, 4),  # dilation 5 on 4 pixels: only the centre tap reads the input
    (dict(padding=2, dilation=2), 5, 5 + 3 + 3),  # centre 5, each side tap reaches 3 of the 5 outputs
    (dict(stride=2, padding=1), 5, 2 + 3 + 2),  # outputs 0, 1, 2 read inputs -1..1, 1..3, 3..5
])
def test_padding_taps_are_not_counted(kwargs, size, taps_per_axis):
    layer, x = conv(2, 3, 3, **kwargs), torch.randn(1, 2, size, size, requires_grad=True)
    macs = 2 * 3 * taps_per_axis ** 2
    assert count_flops(lambda: layer(x)) == 2 * macs
    assert count_flops(fwd_bwd(layer, x)) == 2 * macs * 3


def test_grouped_and_transposed_convolutions():
    # depthwise 3x3 on 5x5 (3x3 output): each of the 4 channels sees its own 1-channel filter
    layer, x = conv(4, 4, 3, groups=4), torch.randn(1, 4, 5, 5, requires_grad=True)
    assert count_flops(fwd_bwd(layer, x)) == 2 * (4 * 1 * 9 * 9) * 3
    # transposed 2 -> 3, 3x3: every input pixel spreads over 9 outputs; padding 1 crops the 6x6 output to 4x4,
    # which leaves 10 of the 12 (input, tap) pairs per axis
    torch.manual_seed(0)
    up, x = nn.ConvTranspose2d(2, 3, 3, bias=False), torch.randn(1, 2, 4, 4, requires_grad=True)
    assert count_flops(fwd_bwd(up, x)) == 2 * (16 * 9 * 2 * 3) * 3
    crop = nn.ConvTranspose2d(2, 3, 3, padding=1, bias=False)
    assert count_flops(fwd_bwd(crop, x)) == 2 * (10 * 10 * 2 * 3) * 3


def test_linear_layer():
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 5), torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 8 * 5  # the bias addition is not counted
    assert count_flops(fwd_bwd(layer, x)) == 2 * 4 * 8 * 5 * 3


def test_fraction_of_peak():
    assert fraction_of_peak(3e9, 0.5, 12e9) == pytest.approx(0.5)


def test_training_step_of_one_conv_stays_below_the_peak():
    # a step of a single 3x3 convolution (forward, backward, SGD), tens of milliseconds like the peak's longest
    # workloads, against the peak measured next to it
    layer = conv(128, 128, 3, padding=1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(2, 128, 64, 64)

    def train_step() -> None:
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()

    flops = count_flops(train_step)
    assert flops == 2 * (2 * 128 * 128 * (64 * 3 - 2) ** 2) * 2  # forward and the weight's gradient
    # in turns, as bench/train_step.py does, so that other processes on the shared machine slow both alike; the
    # fastest step against the best peak
    peaks, steps = [], []
    for _ in range(3):
        peaks.append(peak_rate(min_time_s=0.1))
        steps.append(time_fn(train_step, warmup=0, repeats=3)["min_s"])
    assert peaks[0]["dtype"] == "float32" and len(peaks[0]["rates"]) == 6
    assert 0 < fraction_of_peak(flops, min(steps), max(p["flops_per_s"] for p in peaks)) < 1


def test_train_step_bench_reports_counted_fractions(tmp_path):
    out = tmp_path / "train_step.json"
    proc = run_script("bench/train_step.py", "--backbones", "resnet18", "--batch", "1", "--size", "32",
                      "--steps", "1", "--out", str(out))
    assert proc.returncode == 0, describe(proc)
    result = json.loads(out.read_text())
    row = result["rows"][0]
    peak = result["peak"]["fp32"]
    assert row["ours"]["flops"] > 0 and peak["threads"] == result["threads"] == 1
    assert row["peak_gflops"] == pytest.approx(peak["flops_per_s"] / 1e9, abs=0.01)
    assert row["fraction_of_peak"] == pytest.approx(
        row["ours"]["flops"] / min(row["ours"]["step_runs_s"]) / peak["flops_per_s"], abs=1e-4)  # 4 decimals
    assert 0 < row["fraction_of_peak"] < 1
    assert "of peak" in proc.stdout and "peak float32:" in proc.stdout
    # the original's whole step took its turns too, and its first step matched ours
    assert row["orig"]["step_s"] > 0 and row["speedup_vs_orig"] > 0
    assert row["orig_equivalence"]["match"] and result["check"]["original_step_matches"]
    # the ratio per round of the steps in turns, whose spread is the run's noise on it
    paired = row["speedup_vs_orig_paired"]
    assert paired["rounds"] == 1 and paired["min"] == paired["median"] == paired["max"] == pytest.approx(
        row["orig"]["turn_runs_s"][0] / row["ours"]["turn_runs_s"][0], abs=1e-3)
    assert result["targets"]["fp32_vs_orig_never_slower_within_noise"] == (paired["max"] >= 1.0)
    assert "per round in turns" in proc.stdout


def test_original_step_matches_ours_on_a_tiny_model():
    from bench.baselines.stage_spec import SingleStageSpec, first_step_difference, open_gate_labels
    from bench.train_step import build
    from datasets.voc import denorm
    from losses import get_criterion

    model, _ = build("resnet18", "ours", torch.device("cpu"), False)
    model.double()  # float64, as the bench's check: the two sum in different orders
    with torch.no_grad():  # foreground logits near the constant background logit: background and classes both
        model.last_conv[-1].bias.fill_(-1.0)  # reach their pseudo-GT thresholds at this initialisation
    spec = SingleStageSpec.from_model(model).double()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # labels = the classes of the pseudo GT, so that the mask loss's gate is open and its gradients are compared too
    labels = open_gate_labels(model, image, denorm(image))
    assert labels.sum() > 0
    diff = first_step_difference(model, spec, image, denorm(image), labels, get_criterion("SoftMargin"))
    assert diff["loss_mask_ours"] > 0  # the gate is open for at least one image
    assert diff["loss_ours"] == pytest.approx(diff["loss_spec"], rel=1e-12)
    assert diff["loss_mask_ours"] == pytest.approx(diff["loss_mask_spec"], rel=1e-12)
    assert diff["grad_rel_diff"] < 1e-9
    assert model.training and spec.training and not spec.aspp.bn1.training  # SPEC 5.2: ASPP BNs stay in eval


def test_original_stochastic_gate_draws_with_dropout():
    from bench.baselines.stage_spec import StochasticGateSpec

    psi = 0.3
    x1, x2 = torch.full((4, 8, 16, 16), 2.0), torch.full((4, 8, 16, 16), -1.0)
    out = StochasticGateSpec(psi).train()(x1, x2)
    kept = (2.0 + psi) / (1 - psi)  # r = 1: (x1 - psi x2) / (1 - psi); r = 0: x2
    assert torch.all((out - kept).abs() < 1e-5) == torch.all(out != -1.0)
    assert ((out - kept).abs() < 1e-5).float().mean().item() == pytest.approx(1 - psi, abs=0.03)
    assert torch.allclose(StochasticGateSpec(psi).eval()(x1, x2), torch.full_like(x1, (1 - psi) * 2.0 - psi))


def test_inference_loop_bench_gives_the_originals_masks(tmp_path):
    """bench/infer_loop.py end to end on one image: infer_val.py and the original's loop transcribed write the same
    masks, plain and CRF (the check of the bench, not its times)."""
    out = tmp_path / "infer_loop.json"
    proc = run_script("bench/infer_loop.py", "--images", "1", "--rounds", "1", "--workers", "1", "--out", str(out))
    assert proc.returncode == 0, describe(proc)
    r = json.loads(out.read_text())["figures"]["reduced"]
    assert r["masks_compared"] == 2 and r["same_masks"] and r["best_s"]["ours"] > 0 and r["best_s"]["baseline"] > 0


def test_data_bench_reports_both_samples_and_workers_needed(tmp_path):
    """bench/data.py on two images: figures for ours and the original's sample, and the workers a GPU step needs."""
    out = tmp_path / "data.json"
    proc = run_script("bench/data.py", "--images", "2", "--rounds", "1", "--out", str(out))
    assert proc.returncode == 0, describe(proc)
    result = json.loads(out.read_text())
    for crop in ("321", "448"):
        rates = result["figures"][crop]["images_per_s_per_worker"]
        assert rates["ours"] > 0 and rates["baseline"] > 0
    assert all(n["workers"] >= 1 for n in result["gpu_workers_needed"].values())


def test_original_training_sample_matches_ours_in_shape_and_labels(synthetic_root):
    """The original's sample (bench/baselines/transforms_spec.py) and ours: same tensor shapes, same labels."""
    from bench.baselines.transforms_spec import TrainSampleSpec
    from datasets.pascal_voc import VOCSegmentation
    from utils.config import get_cfg_defaults

    cfg = get_cfg_defaults()
    cfg.DATASET.ROOT, cfg.DATASET.CROP_SIZE = synthetic_root, 40
    ours = VOCSegmentation(cfg, "train")
    spec = TrainSampleSpec(ours.items, 40)
    for i in range(len(ours)):
        a, b = ours[i], spec[i]
        assert a[0].shape == b[0].shape == (3, 40, 40) and torch.equal(a[1], b[1])
