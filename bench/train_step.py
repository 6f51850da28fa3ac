"""Benchmark of one training step (forward, losses, backward, SGD step) per backbone, against the direct formulation.

    python bench/train_step.py                      # CPU: every backbone at batch 2, crop 128; JSON in bench/results
    python bench/train_step.py --full               # adds resnet38 at the original's crop 321 (batch 2)
    python bench/train_step.py --backbones resnet38 --size 321 --batch 2 --channels-last
    python bench/train_step.py --device cuda        # GPU: also resnet38 batch 16 at 321 with AMP (bf16, fp16)
    python bench/train_step.py --backbones resnet38 vgg16 resnet50 resnet101 --size 321   # the original's crop

For each configuration the step of our model is timed next to the same model with the direct PAMR of SPEC 5.8
(bench/baselines/pamr_spec.py: one conv2d per dilation gathering 48 shifted copies of the mask per iteration), then
both take further steps in turns, and the ratio of the median step times is reported, with the ratios of the
rounds taken in turns (each round's steps share the load of its moment; their median and spread are the run's noise
on the ratio). Without AMP, the original's
whole step takes its turns too (bench/baselines/stage_spec.py: SPEC's model, Stochastic Gate, PAMR and loss as
the original formulates them, in float32, loaded with our model's parameters), with a check, in float64, that its
first step's losses and gradients equal ours (dropout and the gate made deterministic, as the two draw their random masks
differently), and so does the fast path (TRAIN.FAST: the settings utils/fastpath.py resolves for the device; on a
CPU without native bf16 that is float32 itself, which is not measured twice: its row is the float32 row). Also:
images/s, peak memory
per image (CPU: the rise of the peak resident set over the step; GPU: torch.cuda.max_memory_allocated), the step's
FLOPs and the fraction of the machine's peak rate they reach. The FLOPs are counted over the first step as it runs
(bench/common.py ``count_flops``: convolutions and matrix products of the forward and of the backward that autograd
actually runs, padding taps left out); the peak is the best rate of matrix products and 3x3 convolutions in the
step's precision and thread count (``peak_rate``), measured before the first configuration and after each one, so
that it shares the machine's load with the steps. "of peak" is the fastest timed step against the best peak
measured so far in the table, and against the best peak of the whole run in the JSON and the closing lines.
The models are those of a pretrained run, with its frozen layers and BNs (the original freezes them always: VGG16's
conv1 gets no gradients), and random weights: the step's cost does not depend on them, so no ImageNet file is
needed. The variants must give the same loss on the first step (float tolerance), which the bench checks.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from bench.baselines.pamr_spec import PAMRSpec  # noqa: E402
from bench.baselines.stage_spec import SingleStageSpec, first_step_difference, open_gate_labels  # noqa: E402
from bench.common import count_flops, fraction_of_peak, peak_rate  # noqa: E402
from datasets.voc import denorm  # noqa: E402
from losses import get_criterion  # noqa: E402
from models import build_model  # noqa: E402
from utils.config import get_cfg_defaults  # noqa: E402
from utils.fastpath import fast_settings  # noqa: E402
from utils.fileio import write_json  # noqa: E402

BACKBONES = ("resnet38", "vgg16", "resnet50", "resnet101", "resnet18", "efficientnet_lite0")
TARGET_RATIO = 1.5  # issue 7: >= 1.5x the direct formulation's step (and never slower)
FAST_TARGET = {"cpu": 1.5, "cuda": 2.0}  # issue 16: the fast path against the original's step, vgg16 and resnet38
FAST_TARGET_BACKBONES = ("vgg16", "resnet38")
GPU_MEMORY_LIMIT_GB = 24.0  # issue 7: resnet38, batch 16 at 321 with AMP fits one 24 GB card
AMP_DTYPES = {"": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_RTOL = 1e-3
EQUIV_FG_BIAS = -1.0  # bias of the foreground logits in the equivalence check
# what a step's time is: wall clock, or with --clock cpu the process's CPU time (all threads), which leaves out the
# time other processes hold the cores: on a shared CPU with one thread the steadier measure of the work
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = CLOCKS["wall"]
EQUIV_RTOL = 1e-9  # float64 equivalence check: losses, and gradients of each parameter against its largest
LOSS_RTOL_AMP = 5e-2  # bf16/fp16 round differently in the two PAMR formulations


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build(backbone: str, pamr: str, device: torch.device, channels_last: bool, seed: int = 0):
    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL = backbone, "ae"
    torch.manual_seed(seed)
    # a pretrained run's model (its frozen layers and BNs, as the original's always are) with random weights: the
    # step's cost does not depend on the weights, so no ImageNet file is read
    model = build_model(cfg.NET, init_weights=False)
    if pamr == "spec":
        model._aff = PAMRSpec(cfg.NET.PAMR_ITER, tuple(cfg.NET.PAMR_KERNEL))
    model.to(device).train()
    groups = model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY)
    if pamr == "orig":  # the original's whole formulation with the same parameters and optimiser groups
        ours, model = model, SingleStageSpec.from_model(model)
        name_of = {id(t): n for n, t in ours.named_parameters()}
        params = dict(model.named_parameters())
        groups = [{**g, "params": [params[name_of[id(t)]] for t in g["params"]]} for g in groups]
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(groups, lr=cfg.NET.LR, momentum=cfg.NET.MOMENTUM, weight_decay=cfg.NET.WEIGHT_DECAY)
    return model, opt


def step(net, opt, criterion, image, labels, amp) -> float:
    """One training step as train.py's (mask loss included, as after PRETRAIN); returns the loss."""
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None):
        out = net(image, denorm(image), labels)
    loss = criterion(out["cls"].float(), labels).mean() + out["loss_mask"].float().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def measure(backbone: str, pamr: str, batch: int, size: int, steps: int, device: torch.device, amp_name: str,
            channels_last: bool, compile_: bool, with_flops: bool) -> dict:
    amp = AMP_DTYPES[amp_name] if amp_name else None
    model, opt = build(backbone, pamr, device, channels_last)
    net = torch.compile(model) if compile_ else model
    criterion = get_criterion("SoftMargin")
    g = torch.Generator().manual_seed(1)
    image = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    labels = torch.zeros(batch, 20, device=device)
    labels[:, 2] = labels[:, 14] = 1
    # the same random stream for both variants: equal losses up to float rounding
    torch.manual_seed(2)
    losses: list[float] = []

    def first_step() -> None:
        losses.append(step(net, opt, criterion, image, labels, amp))

    flops = None
    if with_flops:  # the warm-up step (allocations, momentum buffers, compilation) also counts the FLOPs
        flops = count_flops(first_step)
    else:
        first_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_kb("VmRSS") * 1024
        have_peak = _reset_peak_rss()
    def timed_step() -> float:
        _sync(device)
        t = CLOCK()
        losses.append(step(net, opt, criterion, image, labels, amp))
        _sync(device)
        return CLOCK() - t

    times = [timed_step() for _ in range(steps)]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        peak_total = peak
    else:
        peak_total = _rss_kb("VmHWM") * 1024 if have_peak else None
        peak = peak_total - base if peak_total is not None else None
    t = statistics.median(times)
    return {"backbone": backbone, "pamr": pamr, "batch": batch, "size": size, "amp": amp_name or "fp32",
            "channels_last": channels_last, "compile": compile_, "step_s": round(t, 4), "step_runs_s":
            [round(x, 4) for x in times], "images_per_s": round(batch / t, 3),
            "peak_memory_per_image_mb": round(peak / batch / 2**20, 1) if peak is not None else None,
            "peak_memory_total_mb": round(peak_total / 2**20, 1) if peak_total is not None else None,
            "flops": flops, "losses": losses, "timed_step": timed_step}


def equivalence(backbone: str, batch: int, size: int, device: torch.device) -> dict:
    """The first step's losses and gradients of our model and of the original's formulation loaded with its
    parameters, with dropout and the Stochastic Gate deterministic (bench/baselines/stage_spec.py), in float64: the
    two compute the same sums in different orders (PAMR, the losses, ASPP kernels without their padding taps), and
    float32 rounding of activations, amplified in gradients that are sums of cancelling terms, would hide what the
    check is for."""
    model, _ = build(backbone, "ours", device, False)
    model.double()
    with torch.no_grad():  # foreground logits near the background's 1: the pseudo GT has background and classes
        model.last_conv[-1].bias.fill_(EQUIV_FG_BIAS)
    spec = SingleStageSpec.from_model(model).double()
    image = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    image = image.to(device)
    labels = open_gate_labels(model, image, denorm(image))  # so that the mask loss's gradients are compared too
    diff = first_step_difference(model, spec, image, denorm(image), labels, get_criterion("SoftMargin"))
    diff["match"] = diff["loss_rel_diff"] <= EQUIV_RTOL and diff["grad_rel_diff"] <= EQUIV_RTOL
    return diff


def alternate(variants: list[dict], rounds: int) -> None:
    """More timed steps of the variants in turns (ours, spec, orig, ours, ...), so that a change of the machine's
    load during the run hits all alike; the step time becomes the median over all timed steps of a variant."""
    for _ in range(rounds):
        for r in variants:
            r["step_runs_s"].append(round(r["timed_step"](), 4))
    for r in variants:
        r["turn_runs_s"] = r["step_runs_s"][-rounds:]  # the steps taken in turns (paired_ratio)
        r["step_s"] = round(statistics.median(r["step_runs_s"]), 4)
        r["images_per_s"] = round(r["batch"] / r["step_s"], 3)
        del r["timed_step"]


def paired_ratio(slow: dict, fast: dict) -> dict:
    """``slow``'s step time over ``fast``'s, per round of the steps taken in turns (a round's two steps share the
    machine's load of that moment): the median of those ratios and their spread, the run's noise on the ratio."""
    ratios = sorted(a / b for a, b in zip(slow["turn_runs_s"], fast["turn_runs_s"]))
    return {"median": round(statistics.median(ratios), 3), "min": round(ratios[0], 3), "max": round(ratios[-1], 3),
            "rounds": len(ratios)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Training-step benchmark against the direct PAMR formulation")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="square crop side (the original's: 321 / 448)")
    p.add_argument("--steps", type=int, default=2,
                   help="timed steps of each variant after one warm-up step, then as many again taken in turns with "
                        "the other variant (median of all reported)")
    p.add_argument("--full", action="store_true", help="also resnet38 at the original's crop 321")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--amp", choices=["", "bf16", "fp16"], default="")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (start-up cost not timed)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="step time: wall clock, or the process's CPU time (steadier on a shared machine with "
                        "--threads 1; with more threads it counts their waiting too)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "train_step.json"))
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    plan = [(bb, args.batch, args.size, args.amp) for bb in args.backbones]
    if args.full and ("resnet38", args.batch, 321, args.amp) not in plan:
        plan.append(("resnet38", args.batch, 321, args.amp))
    if device.type == "cuda":
        plan += [("resnet38", 16, 321, "bf16"), ("resnet38", 16, 321, "fp16")]
    peaks: dict[str, dict] = {}  # the best peak_rate so far per precision

    def update_peak(amp: str) -> dict:
        new = peak_rate(device, AMP_DTYPES[amp])
        if amp not in peaks or new["flops_per_s"] > peaks[amp]["flops_per_s"]:
            peaks[amp] = new
        return peaks[amp]

    for amp in dict.fromkeys(a for *_, a in plan):
        peak = update_peak(amp)
        print(f"peak {peak['dtype']}: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['workload']}); "
              f"{torch.get_num_threads()} threads; {device}")
    rows, checks = [], []
    header = (f"{'backbone':<10} {'batch':>5} {'size':>4} {'amp':>5} | {'ours s':>7} {'spec s':>7} {'ratio':>6} | "
              f"{'orig s':>7} {'ratio':>6} | {'fast s':>7} {'ratio':>6} | {'img/s':>6} {'GFLOP':>7} {'of peak':>7} | "
              f"{'MB/img':>7} {'spec MB/img':>11}")
    print(header)
    print("-" * len(header))
    for bb, batch, size, amp in plan:
        ours = measure(bb, "ours", batch, size, args.steps, device, amp, args.channels_last, args.compile,
                       with_flops=not args.compile)
        spec = measure(bb, "spec", batch, size, args.steps, device, amp, args.channels_last, args.compile,
                       with_flops=False)
        # the original's whole step (its model, SG, PAMR and loss) in float32, as it trained
        orig = None if amp else measure(bb, "orig", batch, size, args.steps, device, amp, args.channels_last,
                                        args.compile, with_flops=False)
        # the fast path (TRAIN.FAST) as resolved for this device, next to the float32 rows
        # (measured only where it is not the float32 row's settings: on a CPU without native bf16 it is float32
        # itself, and its row is then the float32 row's)
        fast_cfg = None if amp else fast_settings(device, training=True)
        fast_same = fast_cfg is not None and (fast_cfg.amp, fast_cfg.channels_last, fast_cfg.compile) == (
            "", args.channels_last, args.compile)
        fast = None if fast_cfg is None or fast_same else measure(
            bb, "ours", batch, size, args.steps, device, fast_cfg.amp, fast_cfg.channels_last, fast_cfg.compile,
            with_flops=False)
        alternate([v for v in (ours, spec, orig, fast) if v is not None], args.steps)
        if fast_same:
            fast = ours
        ratio = spec["step_s"] / ours["step_s"]
        ratio_orig = orig["step_s"] / ours["step_s"] if orig else None
        ratio_fast = orig["step_s"] / fast["step_s"] if orig and fast else None
        paired_orig = paired_ratio(orig, ours) if orig else None
        paired_fast = paired_ratio(orig, fast) if orig and fast and not fast_same else None
        equiv = None if amp else equivalence(bb, batch, size, device)
        peak = update_peak(amp)  # after the steps, under the load they ran with
        frac = None
        if ours["flops"]:  # the fastest step against the best peak: both as little slowed by other load as seen
            frac = fraction_of_peak(ours["flops"], min(ours["step_runs_s"]), peak["flops_per_s"])
        # the first step starts from the same weights and input: its loss differs only by the PAMR formulation
        # (later steps drift apart by float rounding, faster with TF32 convolutions on GPU)
        tol = LOSS_RTOL if not amp else LOSS_RTOL_AMP
        same = abs(ours["losses"][0] - spec["losses"][0]) <= tol * max(1.0, abs(spec["losses"][0]))
        checks.append(same and (equiv is None or equiv["match"]))
        row = {"ours": ours, "spec": spec, "orig": orig, "speedup_vs_spec": round(ratio, 3),
               "speedup_vs_orig": round(ratio_orig, 3) if ratio_orig else None,
               "speedup_vs_orig_paired": paired_orig, "fast_speedup_vs_orig_paired": paired_fast,
               "orig_equivalence": equiv,
               "fast": None if fast_same else fast, "fast_is_fp32": fast_same,
               "fast_settings": fast_cfg.describe() if fast_cfg else None,
               "fast_speedup_vs_orig": round(ratio_fast, 3) if ratio_fast else None,
               "fraction_of_peak": round(frac, 4) if frac is not None else None,
               "peak_gflops": round(peak["flops_per_s"] / 1e9, 2), "losses_match": same}
        if device.type == "cuda" and batch == 16 and size == 321:
            row["fits_24gb"] = ours["peak_memory_total_mb"] / 1024 <= GPU_MEMORY_LIMIT_GB
        rows.append(row)
        mem = ours["peak_memory_per_image_mb"]
        smem = spec["peak_memory_per_image_mb"]
        print(f"{bb:<10} {batch:>5} {size:>4} {ours['amp']:>5} | {ours['step_s']:>7.2f} {spec['step_s']:>7.2f} "
              f"{ratio:>5.2f}x | " + (f"{orig['step_s']:>7.2f} {ratio_orig:>5.2f}x" if orig else f"{'n/a':>7} {'':>6}")
              + " | " + (f"{fast['step_s']:>7.2f} {ratio_fast:>5.2f}x" if fast else f"{'n/a':>7} {'':>6}")
              + f" | {ours['images_per_s']:>6.2f} {(ours['flops'] or 0) / 1e9:>7.1f} "
              f"{(frac or 0) * 100:>6.1f}% | {mem if mem is not None else 'n/a':>7} "
              f"{smem if smem is not None else 'n/a':>11}" + ("" if same else "  LOSSES DIFFER")
              + ("" if equiv is None or equiv["match"] else "  ORIGINAL'S STEP DIFFERS"), flush=True)
        for name, pr in (("float32", paired_orig), ("fast path", paired_fast)):
            if pr:
                print(f"{'':<10} {name} over the original's step, per round in turns: median {pr['median']:.2f}x "
                      f"(from {pr['min']:.2f}x to {pr['max']:.2f}x over {pr['rounds']} rounds)", flush=True)
    # every row against the best peak of the whole run (the table's rows used the best measured up to then)
    for r in rows:
        best = peaks[r["ours"]["amp"] if r["ours"]["amp"] != "fp32" else ""]["flops_per_s"]
        r["peak_gflops"] = round(best / 1e9, 2)
        if r["ours"]["flops"]:
            r["fraction_of_peak"] = round(fraction_of_peak(r["ours"]["flops"], min(r["ours"]["step_runs_s"]), best), 4)
    print("of the run's best peak (" + ", ".join(f"{pk['dtype']} {pk['flops_per_s'] / 1e9:.1f} GFLOP/s"
                                               for pk in peaks.values()) + "): "
          + ", ".join(f"{r['ours']['backbone']} {r['ours']['amp']} {r['fraction_of_peak'] * 100:.1f}%"
                      for r in rows if r["fraction_of_peak"] is not None))
    ratios = [r["speedup_vs_spec"] for r in rows]
    ratios_orig = [r["speedup_vs_orig"] for r in rows if r["speedup_vs_orig"]]
    fast_targeted = [r["fast_speedup_vs_orig"] for r in rows
                     if r["fast_speedup_vs_orig"] and r["ours"]["backbone"] in FAST_TARGET_BACKBONES]
    result = {
        "benchmark": "train_step",
        "command": " ".join(["bench/train_step.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "peak": {amp or "fp32": {**pk, "flops_per_s": round(pk["flops_per_s"])} for amp, pk in peaks.items()},
        "rows": rows,
        "targets": {"speedup_vs_spec": TARGET_RATIO, "never_slower": True,
                    "reached": min(ratios) >= TARGET_RATIO, "never_slower_reached": min(ratios) >= 1.0,
                    "fp32_vs_orig_never_slower": min(ratios_orig) >= 1.0 if ratios_orig else None,
                    # within the run's noise: 1.0 is no further than the highest ratio of a round in turns
                    "fp32_vs_orig_never_slower_within_noise": all(
                        r["speedup_vs_orig_paired"]["max"] >= 1.0 for r in rows if r["speedup_vs_orig_paired"])
                    if ratios_orig else None,
                    "fast_vs_orig": {"backbones": list(FAST_TARGET_BACKBONES), "ratio": FAST_TARGET[device.type],
                                     "reached": min(fast_targeted) >= FAST_TARGET[device.type]
                                     if fast_targeted else None}},
        "check": {"losses_match": all(r["losses_match"] for r in rows),
                  "original_step_matches": all(r["orig_equivalence"]["match"] for r in rows if r["orig_equivalence"])},
    }
    write_json(args.out, result)
    print(f"speed-up over the direct formulation: min {min(ratios):.2f}x, max {max(ratios):.2f}x "
          f"(target >= {TARGET_RATIO}x: {'reached' if result['targets']['reached'] else 'not reached'}); "
          + (f"over the original's step: min {min(ratios_orig):.2f}x, max {max(ratios_orig):.2f}x; "
             if ratios_orig else "")
          + (f"fast path ({rows[0]['fast_settings']}) over the original's step, {'/'.join(FAST_TARGET_BACKBONES)}: "
             f"min {min(fast_targeted):.2f}x (target >= {FAST_TARGET[device.type]}x: "
             f"{'reached' if result['targets']['fast_vs_orig']['reached'] else 'not reached'}); "
             if fast_targeted else "")
          + f"losses match: {result['check']['losses_match']}; original's step matches (losses, gradients): "
          f"{result['check']['original_step_matches']}; {args.out}")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
