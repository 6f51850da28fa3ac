"""Benchmark of eval_seg.py against the original's per-pixel loop, at the size of VOC val (1449 masks of 500x375).

    python bench/eval.py                      # full size; bench/results/eval.json
    python bench/eval.py --num 200 --workers 2
    python bench/eval.py --dataset coco       # COCO val: 40,137 masks of 640x480, 81 classes; eval_coco.json

Writes synthetic GT (palette PNG, a few objects with 255 borders) and prediction PNG pairs into a temporary
directory (a set of distinct pairs copied under all names, so that decoding costs what it costs on real masks
without spending the benchmark on generating them), then times:
  * pipeline: eval_seg.py's list parsing + multi-process decoding + confusion matrix (utils/mask_eval.py), in
    this process;
  * cli: ``python eval_seg.py ...`` as a user runs it (interpreter start, table, log, JSON, figures);
  * baseline: bench/baselines/eval_loop.py (decode + per-pixel loop) on a few masks, extrapolated per mask.
The confusion matrices of pipeline and baseline over the same masks must be equal.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from bench.baselines.eval_loop import evaluate_pair_loop
from datasets.info import get_dataset
from datasets.voc import IGNORE_INDEX, PALETTE_FLAT
from utils.fileio import write_json
from utils.mask_eval import default_workers, evaluate, parse_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_VAL_SIZE = 1449
# per dataset: (val masks, mask width, height); COCO: val2014 images with objects, at COCO's usual 640x480
SIZES = {"pascal_voc": (VOC_VAL_SIZE, 500, 375), "coco": (40137, 640, 480)}
BORDER = 2  # half-width of the 255 band around object boundaries, as in VOC's SegmentationClass
DISTINCT_PAIRS = 48
TARGET_SECONDS = 5.0  # issue 7: 1449 masks in <= 5 s on 2 cores
TARGET_RATIO = 50.0  # and >= 50x the per-pixel loop


def _objects(rng: np.random.Generator, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """[H, W] uint8 class map of ``size`` (W, H): background with 1..4 ellipses/rectangles of random classes."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 5)):
        x0, y0 = rng.integers(0, size[0] - 60), rng.integers(0, size[1] - 60)
        x1, y1 = x0 + rng.integers(40, 260), y0 + rng.integers(40, 220)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=int(rng.integers(1, num_classes)))
    return np.asarray(img).copy()


def _with_borders(lab: np.ndarray) -> np.ndarray:
    """Mark pixels within BORDER of a class boundary as 255."""
    edge = np.zeros(lab.shape, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    band = edge.copy()
    for shift in range(1, BORDER + 1):
        band[shift:, :] |= edge[:-shift, :]
        band[:-shift, :] |= edge[shift:, :]
        band[:, shift:] |= edge[:, :-shift]
        band[:, :-shift] |= edge[:, shift:]
    return np.where(band, IGNORE_INDEX, lab).astype(np.uint8)


def make_pairs(root: str, num: int, seed: int = 0, num_classes: int = 21, size: tuple[int, int] = (500, 375)) -> str:
    """root/{gt,pred}/<id>.png for num ids and root/list.txt in the original's format; returns the list path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "gt"), exist_ok=True)
    os.makedirs(os.path.join(root, "pred"), exist_ok=True)
    lines = []
    for i in range(num):
        image_id = f"2007_{i:06d}"
        gt_path = os.path.join(root, "gt", image_id + ".png")
        pred_path = os.path.join(root, "pred", image_id + ".png")
        if i < DISTINCT_PAIRS:
            lab = _objects(rng, num_classes, size)
            gt = Image.fromarray(_with_borders(lab), mode="P")
            gt.putpalette(PALETTE_FLAT)
            gt.save(gt_path)
            # the prediction: the objects shifted a little plus one wrong blob, saved as 8-bit grey like infer_val.py
            pred = np.roll(lab, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
            pred = np.maximum(pred, _objects(rng, num_classes, size) * (rng.random() < 0.5))
            Image.fromarray(pred, mode="L").save(pred_path)
        else:
            src = f"2007_{i % DISTINCT_PAIRS:06d}.png"
            shutil.copyfile(os.path.join(root, "gt", src), gt_path)
            shutil.copyfile(os.path.join(root, "pred", src), pred_path)
        lines.append(f"img/{image_id}.jpg gt/{image_id}.png")
    list_path = os.path.join(root, "list.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return list_path


def time_pipeline(list_path: str, root: str, workers: int, repeats: int,
                  num_classes: int) -> tuple[list[float], np.ndarray]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        entries, _ = parse_list(list_path, root, os.path.join(root, "pred"), num_classes)
        result = evaluate(entries, None, workers, progress=False, num_classes=num_classes)
        times.append(time.perf_counter() - t0)
    if result.problems:
        raise RuntimeError(f"benchmark data has problems: {result.problems[:3]}")
    return times, result.conf


def time_cli(list_path: str, root: str, workers: int, dataset: str) -> float:
    cmd = [sys.executable, os.path.join(ROOT, "eval_seg.py"), "--dataset", dataset, "--data", root,
           "--filelist", list_path,
           "--masks", os.path.join(root, "pred"), "--log-scores", os.path.join(root, "scores.log"),
           "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"eval_seg.py failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="pascal_voc", choices=list(SIZES),
                   help="classes and mask size: pascal_voc (1449 masks of 500x375, 21 classes) or coco (40,137 "
                        "masks of 640x480, 81 classes)")
    p.add_argument("--num", type=int, default=None, help="number of mask pairs (default: the dataset's val size)")
    p.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    p.add_argument("--repeats", type=int, default=3, help="timed pipeline runs (the median is reported)")
    p.add_argument("--baseline-masks", type=int, default=3, help="masks timed with the per-pixel loop")
    p.add_argument("--out", default=None, help="JSON result (default bench/results/eval.json, eval_coco.json)")
    args = p.parse_args()
    n_classes = get_dataset(args.dataset).num_classes
    val_size, mask_w, mask_h = SIZES[args.dataset]
    args.num = args.num or val_size
    args.out = args.out or os.path.join(ROOT, "bench", "results",
                                        "eval.json" if args.dataset == "pascal_voc" else f"eval_{args.dataset}.json")

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as root:
        t0 = time.perf_counter()
        list_path = make_pairs(root, args.num, num_classes=n_classes, size=(mask_w, mask_h))
        gen_s = time.perf_counter() - t0

        times, _ = time_pipeline(list_path, root, args.workers, args.repeats, n_classes)
        pipeline_s = statistics.median(times)
        times1, _ = time_pipeline(list_path, root, 1, 1, n_classes)
        cli_s = time_cli(list_path, root, args.workers, args.dataset)

        # baseline on the first masks; the pipeline on the same masks must give the same matrix
        entries, _ = parse_list(list_path, root, os.path.join(root, "pred"), n_classes)
        few = entries[:args.baseline_masks]
        t0 = time.perf_counter()
        conf_loop = sum(evaluate_pair_loop(e.gt_path, e.pred_path, n_classes) for e in few)
        loop_per_mask = (time.perf_counter() - t0) / len(few)
        conf_fast = evaluate(few, None, 1, progress=False, num_classes=n_classes).conf
        equal = bool(np.array_equal(conf_loop.astype(np.int64), conf_fast))

    baseline_s = loop_per_mask * args.num  # extrapolated: the loop is linear in the number of masks
    ratio = baseline_s / pipeline_s
    rows = [
        ("pipeline (decode + confusion)", f"{args.workers} proc", pipeline_s, 1000 * pipeline_s / args.num),
        ("pipeline, one process", "1 proc", times1[0], 1000 * times1[0] / args.num),
        ("eval_seg.py CLI end to end", f"{args.workers} proc", cli_s, 1000 * cli_s / args.num),
        (f"baseline loop (x{args.num} from {len(few)} masks)", "1 proc", baseline_s, 1000 * loop_per_mask),
    ]
    print(f"eval benchmark: {args.num} GT/prediction pairs of {mask_w}x{mask_h}, {n_classes} classes "
          f"({DISTINCT_PAIRS} distinct, generated in {gen_s:.1f} s)")
    print(f"{'':40} {'':>8} {'total s':>9} {'ms/mask':>9}")
    for name, procs, total, per in rows:
        print(f"{name:40} {procs:>8} {total:9.2f} {per:9.2f}")
    print(f"speed-up over the per-pixel loop: {ratio:.0f}x (target >= {TARGET_RATIO:.0f}x); "
          f"pipeline {pipeline_s:.2f} s ({1000 * pipeline_s / args.num:.2f} ms/mask; target <= {TARGET_SECONDS:.0f} s "
          f"for {VOC_VAL_SIZE} masks); "
          f"confusion matrices equal: {equal}")

    import torch

    result = {
        "benchmark": "eval",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "dataset": args.dataset,
        "num_classes": n_classes,
        "num_masks": args.num,
        "mask_size": [mask_w, mask_h],
        "figures": {
            "pipeline_s": round(pipeline_s, 3),
            "pipeline_runs_s": [round(t, 3) for t in times],
            "pipeline_one_process_s": round(times1[0], 3),
            "cli_s": round(cli_s, 3),
            "baseline_s_per_mask": round(loop_per_mask, 4),
            "baseline_masks_timed": len(few),
            "baseline_s_extrapolated": round(baseline_s, 1),
            "speedup": round(ratio, 1),
            "pipeline_s_scaled_to_1449": round(pipeline_s * VOC_VAL_SIZE / args.num, 3),
        },
        "targets": {"pipeline_s_1449": TARGET_SECONDS, "speedup": TARGET_RATIO,
                    "reached": bool(pipeline_s * VOC_VAL_SIZE / args.num <= TARGET_SECONDS and ratio >= TARGET_RATIO)},
        "check": {"confusion_equal": equal},
    }
    write_json(args.out, result)
    print(f"wrote {os.path.relpath(args.out)}")
    if not equal:
        sys.exit("error: the pipeline's confusion matrix differs from the per-pixel loop's")


if __name__ == "__main__":
    main()
