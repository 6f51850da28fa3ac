"""Benchmark of the dense CRF and of the writer pool: does the CPU post-processing keep up with the network?

    python bench/crf.py                       # bench/results/crf.json
    python bench/crf.py --workers 6 --images 24

Measures, at the size of a VOC image (500x375, 21 classes, the original's CRF parameters):
  * the CRF alone (utils.dcrf.dense_crf), seconds per image, in this process;
  * a whole writer job (argmax, CRF, the three PNGs) inline, seconds per image;
  * the pool of --workers processes (utils.inference_tools.WriterPool, as infer_val.py runs it): images/s.
The pool keeps up when its images/s is at least the network's: infer_val.py's network path (a light ResNet-18
model, 4 scales + flip) is timed here at a quarter of the original's canvas side and scaled by the area to the
original's PAD 1024 (bench/infer.py --full measures that shape directly; on a GPU compare with its figure).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import infer_val
from bench.infer import FULL, REDUCED, bench_model, bench_test_cfg, make_images, run_ours
from utils.dcrf import CRFParams, dense_crf
from utils.fileio import write_json
from utils.inference_tools import WriterOptions, WriterPool, crf_image, image_01, write_outputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H, C = 500, 375, 21
NETWORK_IMAGES = 2  # images timed through the network for the comparison


def make_inputs(num: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 image [H, W, 3], merged probabilities [21, H, W] float32) pairs with a few smooth regions each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        small = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((W, H), Image.BICUBIC).filter(ImageFilter.GaussianBlur(3))
        image = np.clip(np.asarray(img) + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)
        logits = torch.zeros(1, C, 6, 8)
        present = rng.choice(np.arange(1, C), 3, replace=False)
        logits[0, [0, *present]] = torch.from_numpy(rng.normal(0, 3, (4, 6, 8)).astype(np.float32))
        probs = torch.softmax(F.interpolate(logits, (H, W), mode="bilinear", align_corners=False), 1)[0]
        probs[0] = probs[0] ** 3  # the background raised to BG_POW, as infer_val.py hands it over
        out.append((image, probs.numpy()))
    return out


def network_rate(threads: int) -> dict:
    """images/s of infer_val.py's network path on CPU, measured on two images at bench/infer.py's reduced size
    (a quarter of the original's image and canvas side) and scaled by the canvas area to the original's shape."""
    torch.set_num_threads(threads)
    infer_val.configure_backends()
    model = bench_model(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_crf_net_") as folder:
        make_images(folder, NETWORK_IMAGES, REDUCED["size"])
        elapsed, _ = run_ours(model, folder, bench_test_cfg(REDUCED["pad"]), 0, False, torch.device("cpu"))
    torch.set_num_threads(1)
    area = (FULL["pad"] / REDUCED["pad"]) ** 2
    return {"images_per_s": NETWORK_IMAGES / elapsed / area, "threads": threads,
            "source": f"ResNet-18 'ae', {NETWORK_IMAGES} images at {REDUCED['size'][0]}x{REDUCED['size'][1]} on a "
                      f"{REDUCED['pad']} canvas, scaled by the canvas area ({area:.0f}x) to PAD {FULL['pad']}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8, help="images through the pool")
    p.add_argument("--workers", type=int, default=2, help="writer processes (infer_val.py's --workers)")
    p.add_argument("--repeats", type=int, default=3, help="timed CRF runs (the median is reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the network")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "crf.json"), help="JSON result")
    args = p.parse_args()
    torch.set_num_threads(1)

    inputs = make_inputs(max(args.images, args.repeats))
    params = CRFParams()
    crf_times = []
    for image, probs in inputs[:args.repeats]:
        rgb = crf_image(image_01(image))
        t0 = time.perf_counter()
        q = dense_crf(rgb, probs, params)
        crf_times.append(time.perf_counter() - t0)
    changed = float((q.argmax(0) != probs.argmax(0)).mean())
    crf_s = statistics.median(crf_times)

    with tempfile.TemporaryDirectory(prefix="bench_crf_") as out:
        opts = WriterOptions(out, params)
        for d in opts.dirs():
            os.makedirs(d, exist_ok=True)
        image, probs = inputs[0]
        t0 = time.perf_counter()
        write_outputs("inline", probs, image, None, opts)
        job_s = time.perf_counter() - t0

        pool = WriterPool(args.workers)  # the processes start here, outside the timing
        t0 = time.perf_counter()
        for i in range(args.images):
            image, probs = inputs[i % len(inputs)]
            pool.submit(f"img_{i:04d}", write_outputs, probs, image, None, opts)
        pool.join()
        pool_s = time.perf_counter() - t0
    pool_rate = args.images / pool_s

    net = network_rate(args.threads)
    keeps_up = bool(pool_rate >= net["images_per_s"])
    print(f"CRF benchmark: {W}x{H}, {C} classes, {params.iterations} iterations, pydensecrf")
    print(f"  dense CRF alone:            {crf_s:7.3f} s/image  (labels changed on {100 * changed:.1f}% of pixels)")
    print(f"  writer job inline:          {job_s:7.3f} s/image  (argmax, CRF, 3 PNGs)")
    print(f"  writer pool, {args.workers} processes:  {pool_rate:7.3f} images/s "
          f"({args.images} images in {pool_s:.2f} s)")
    print(f"  network (CPU, {args.threads} threads): {net['images_per_s']:.4f} images/s ({net['source']})")
    print(f"  the pool keeps up with the network: {keeps_up} ({pool_rate / net['images_per_s']:.0f}x its rate)")
    write_json(args.out, {
        "benchmark": "crf",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "torch_version": torch.__version__,
        "threads": {"crf_and_writers": 1, "network": args.threads},
        "workers": args.workers,
        "image_size": [W, H],
        "figures": {"crf_s_per_image": round(crf_s, 4), "crf_runs_s": [round(t, 4) for t in crf_times],
                    "writer_job_s": round(job_s, 4), "pool_images_per_s": round(pool_rate, 3),
                    "pool_images": args.images, "network": net, "pool_keeps_up": keeps_up,
                    "crf_changed_fraction": round(changed, 4)},
    })
    print(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
