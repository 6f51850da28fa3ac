"""Benchmark of PAMR (models/mods/pamr.py) against the direct SPEC 5.8 formulation (bench/baselines/pamr_spec.py).

    python bench/pamr.py                        # the training size: batch 16 x 21 classes x 81x81, CPU
    python bench/pamr.py --batch 4 --repeats 5
    python bench/pamr.py --device cuda          # writes bench/results/pamr_cuda.json

Both run on the same inputs (a smooth random image with noise and edges, resized to the mask grid as in the
model, and softmax masks) with the original's settings: 6 dilations [1, 2, 4, 8, 12, 24], 10 iterations.
Reported: median time over the repeats, per image, peak memory added by the call (on CPU each variant is measured
in a fresh process from the kernel's resident high-water mark; on CUDA from torch's peak counter), the ratios
and the largest difference of the refined masks, which must stay within float32 rounding (TOLERANCE).
Issue 7's targets: at least 10x faster and at most 0.3x the peak memory of the direct formulation.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from bench.baselines.pamr_spec import PAMRSpec
from bench.common import (measure_in_subprocess, peak_memory_mib, print_table, report_child, time_fn,
                          write_results)
from models.mods.pamr import PAMR, pamr_affinity, pamr_propagate

TOLERANCE = 1e-5  # largest allowed |ours - SPEC| of the refined masks (values in [0, 1])
TARGET_SPEEDUP = 10.0
TARGET_MEMORY = 0.3


def make_inputs(batch: int, classes: int, size: int, seed: int = 0,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """image [B,3,S,S] in [0,1] (smooth regions, sharp edges, noise) and softmax masks [B,C,S,S]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 6, generator=g)
    image = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    blocks = F.interpolate(torch.rand(batch, 3, 4, 4, generator=g), size=(size, size), mode="nearest")
    image = (0.6 * image + 0.4 * blocks + 0.03 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)
    logits = F.interpolate(4 * torch.randn(batch, classes, 8, 8, generator=g), size=(size, size), mode="bilinear",
                           align_corners=True)
    return image.to(device), torch.softmax(logits, 1).to(device)


def build(variant: str, iters: int, dilations: tuple[int, ...], device: str) -> torch.nn.Module:
    module = PAMRSpec(iters, dilations) if variant == "spec" else PAMR(iters, dilations)
    return module.to(device)


def child(args: argparse.Namespace) -> None:
    """Fresh process: peak memory of one call of one variant."""
    image, mask = make_inputs(args.batch, args.classes, args.size, device=args.device)
    module = build(args.child, args.iters, tuple(args.dilations), args.device)
    with torch.no_grad():
        report_child(peak_memory_mib(lambda: module(image, mask), args.device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16, help="images (the original's training batch: 16)")
    p.add_argument("--classes", type=int, default=21, help="mask channels")
    p.add_argument("--size", type=int, default=81, help="mask grid side (ResNet38 at crop 321: 81)")
    p.add_argument("--iters", type=int, default=10, help="PAMR iterations (NET.PAMR_ITER)")
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 4, 8, 12, 24], help="NET.PAMR_KERNEL")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    p.add_argument("--baseline-repeats", type=int, default=1,
                   help="timed runs of the slow SPEC formulation (after the untimed one that the check uses)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="", help="JSON path (default bench/results/pamr[_cuda].json)")
    p.add_argument("--child", choices=["spec", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return

    dilations = tuple(args.dilations)
    image, mask = make_inputs(args.batch, args.classes, args.size, device=args.device)
    spec, ours = (build(v, args.iters, dilations, args.device) for v in ("spec", "ours"))
    with torch.no_grad():
        ref, out = spec(image, mask), ours(image, mask)  # also the warm-up of both
        diff = (out - ref).abs().max().item()
        same_label = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        t_spec = time_fn(lambda: spec(image, mask), 0, args.baseline_repeats, args.device)
        t_ours = time_fn(lambda: ours(image, mask), 1, args.repeats, args.device)
        alpha = pamr_affinity(image, dilations)
        t_aff = time_fn(lambda: pamr_affinity(image, dilations), 1, args.repeats, args.device)
        t_prop = time_fn(lambda: pamr_propagate(mask, alpha, dilations, args.iters), 1, args.repeats, args.device)

    child_args = ["--batch", str(args.batch), "--classes", str(args.classes), "--size", str(args.size),
                  "--iters", str(args.iters), "--device", args.device, "--dilations", *map(str, dilations)]
    if args.threads:
        child_args += ["--threads", str(args.threads)]
    script = os.path.abspath(__file__)
    mem = {v: measure_in_subprocess(script, child_args + ["--child", v])["peak_mib"] for v in ("spec", "ours")}

    speedup = t_spec["median_s"] / t_ours["median_s"]
    mem_ratio = mem["ours"] / mem["spec"]
    ok = diff <= TOLERANCE
    per_image = 1000 / args.batch
    print_table(
        ["variant", "median s", "ms/image", "peak MiB"],
        [["SPEC 5.8 (48 mask copies/iter)", t_spec["median_s"], t_spec["median_s"] * per_image, mem["spec"]],
         ["ours (shifted views, in place)", t_ours["median_s"], t_ours["median_s"] * per_image, mem["ours"]],
         ["  of which affinities", t_aff["median_s"], t_aff["median_s"] * per_image, ""],
         ["  of which propagation", t_prop["median_s"], t_prop["median_s"] * per_image, ""]],
        title=f"PAMR: batch {args.batch} x {args.classes} classes x {args.size}x{args.size}, dilations "
              f"{list(dilations)}, {args.iters} iterations, {args.device}, {torch.get_num_threads()} threads")
    print(f"speed-up {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x), peak memory {mem_ratio:.3f}x "
          f"(target <= {TARGET_MEMORY}x); max |ours - SPEC| = {diff:.2e} (tolerance {TOLERANCE:.0e}): "
          f"{'pass' if ok else 'FAIL'}; same argmax on {100 * same_label:.3f}% of pixels")

    name = "pamr" if args.device == "cpu" else f"pamr_{torch.device(args.device).type}"
    path = write_results(name, {
        "settings": {"batch": args.batch, "classes": args.classes, "size": args.size, "iters": args.iters,
                     "dilations": list(dilations)},
        "figures": {"spec_s": t_spec, "ours_s": t_ours, "ours_affinity_s": t_aff, "ours_propagation_s": t_prop,
                    "spec_peak_mib": round(mem["spec"], 1), "ours_peak_mib": round(mem["ours"], 1),
                    "speedup": round(speedup, 2), "memory_ratio": round(mem_ratio, 4)},
        "check": {"max_abs_diff": diff, "tolerance": TOLERANCE, "pass": ok, "same_argmax_fraction": same_label},
        "targets": {"speedup": TARGET_SPEEDUP, "memory_ratio": TARGET_MEMORY,
                    "reached": bool(speedup >= TARGET_SPEEDUP and mem_ratio <= TARGET_MEMORY)},
    }, device=args.device, path=args.out or None)
    print(f"wrote {os.path.relpath(path)}")
    if not ok:
        sys.exit(f"error: PAMR differs from the SPEC formulation by {diff:.2e} > {TOLERANCE:.0e}")


if __name__ == "__main__":
    main()
