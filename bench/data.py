"""Benchmark of the training data pipeline: images/s of one loader worker against the original's sample
(bench/baselines/transforms_spec.py), and the workers a GPU step needs.

    python bench/data.py                       # 40 VOC-sized images (500 px wide), crops 321 and 448
    python bench/data.py --images 100 --rounds 3

The images are synthetic VOC-layout JPEGs with their masks (tools/make_synthetic.py, 500 px wide, 375 to 500 high,
as VOC's photos). A DataLoader worker runs one torch thread, so one worker's rate is measured in this process with
one thread: every sample of the list through ``VOCSegmentation.__getitem__`` (decode, labels, random resized crop,
flip, colour jitter, tensors; the project's training transform) and through the original's, in turns for --rounds
rounds (fastest round). Then the same through a DataLoader with one worker process and batches of 16 (what a
worker adds: collation and the transfer to the main process). The workers a GPU needs are the images/s of its
step (bench/README.md, H100) divided by one worker's images/s.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch
from torch.utils.data import DataLoader, Subset

from bench.baselines.transforms_spec import TrainSampleSpec
from bench.common import write_results
from datasets.pascal_voc import VOCSegmentation, collate_skip_none
from utils.config import get_cfg_defaults

CROPS = (321, 448)  # ResNet38's crop; VGG16's and the ResNets'
# training steps on one H100 (bench/README.md): resnet38, batch 16 at crop 321
GPU_STEPS = {"resnet38 bf16, batch 16 at 321": (16, 0.15, 321), "resnet38 fp32, batch 16 at 321": (16, 0.23, 321)}
BATCH = 16
LOADER_BATCHES = 4


def rate(dataset, rounds_out: list[float]) -> None:
    """Every sample once; appends images/s."""
    t = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    rounds_out.append(len(dataset) / (time.perf_counter() - t))


def loader_rate(dataset) -> float:
    """images/s through a DataLoader with one worker process, batches of BATCH (the worker's start-up and first
    batch excluded), over the list repeated to at least LOADER_BATCHES batches."""
    repeats = math.ceil(LOADER_BATCHES * BATCH / len(dataset))
    loader = DataLoader(Subset(dataset, list(range(len(dataset))) * repeats), batch_size=BATCH, num_workers=1,
                        collate_fn=collate_skip_none)
    it = iter(loader)
    next(it)  # the worker is up and has made its first batch
    t, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch[0])
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON result (default bench/results/data.json)")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    from tools.make_synthetic import make_synthetic

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as root:
        make_synthetic(root, n_train=args.images, n_val=1, n_test=0, size=500, seed=0, workers=2)
        for crop in CROPS:
            cfg = get_cfg_defaults()
            cfg.DATASET.ROOT, cfg.DATASET.CROP_SIZE = root, crop
            ours = VOCSegmentation(cfg, "train")
            base = TrainSampleSpec(ours.items, crop)
            torch.manual_seed(0)
            ours[0], base[0]  # warm-up: imports, first allocations
            runs: dict[str, list[float]] = {"ours": [], "baseline": []}
            for _ in range(args.rounds):
                rate(ours, runs["ours"])
                rate(base, runs["baseline"])
            best = {k: max(v) for k, v in runs.items()}
            loaders = {"ours": loader_rate(ours), "baseline": loader_rate(base)}
            results[crop] = {"images_per_s_per_worker": {k: round(v, 2) for k, v in best.items()},
                             "rounds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
                             "ratio": round(best["ours"] / best["baseline"], 3),
                             "loader_one_worker_images_per_s": {k: round(v, 2) for k, v in loaders.items()}}
    needs = {}
    for name, (batch, step_s, crop) in GPU_STEPS.items():
        per_worker = results[crop]["loader_one_worker_images_per_s"]["ours"]
        needs[name] = {"images_per_s": round(batch / step_s, 1), "workers": math.ceil(batch / step_s / per_worker)}
    print(f"training samples of {args.images} synthetic 500 px JPEGs, one thread per worker, best of {args.rounds}")
    print(f"{'crop':>5} {'ours img/s':>11} {'original img/s':>15} {'ratio':>6} | {'ours, 1-worker loader':>22} "
          f"{'original, 1-worker loader':>26}")
    for crop, r in results.items():
        a, b = r["images_per_s_per_worker"], r["loader_one_worker_images_per_s"]
        print(f"{crop:>5} {a['ours']:11.1f} {a['baseline']:15.1f} {r['ratio']:5.2f}x | {b['ours']:22.1f} "
              f"{b['baseline']:26.1f}")
    for name, n in needs.items():
        plural = "s" if n["workers"] != 1 else ""
        print(f"{name}: {n['images_per_s']} img/s -> {n['workers']} worker{plural} of this machine's speed")
    path = write_results("data", {"images": args.images, "rounds": args.rounds, "figures": results,
                                  "gpu_workers_needed": needs}, path=args.out)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
