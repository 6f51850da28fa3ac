"""Benchmark of the dense CRF and of the writer pool: does the CPU post-processing keep up with the network?

    python bench/crf.py                       # bench/results/crf.json
    python bench/crf.py --workers 6 --images 24

Measures, at the size of a VOC image (500x375, 21 classes, the original's CRF parameters):
  * the CRF alone (utils.dcrf.dense_crf), seconds per image, in this process;
  * a whole writer job (argmax, CRF, the three PNGs) inline, seconds per image;
  * the pool of --workers processes (utils.inference_tools.WriterPool, as infer_val.py runs it): images/s.
The pool keeps up when its images/s is at least the network's; the network's figure is taken from
bench/results/infer.json (bench/infer.py, same machine) when it is there, scaled to the original's canvas.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from utils.dcrf import CRFParams, dense_crf  # noqa: E402
from utils.fileio import write_json  # noqa: E402
from utils.inference_tools import WriterOptions, WriterPool, crf_image, image_01, write_outputs  # noqa: E402

W, H, C = 500, 375, 21
CANVAS_WORK_FULL_OVER_REDUCED = 16  # bench/infer.py's reduced setting has 1/16 of the original's canvas area


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


def network_rate() -> dict | None:
    """The inference path's images/s from bench/results/infer.json, if bench/infer.py ran on this machine."""
    path = os.path.join(ROOT, "bench", "results", "infer.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        figures = json.load(f)["figures"]
    if "full" in figures:
        return {"images_per_s": figures["full"]["ours_images_per_s"], "source": "bench/infer.py, full size"}
    reduced = figures["reduced"]["ours_images_per_s"]
    return {"images_per_s": reduced / CANVAS_WORK_FULL_OVER_REDUCED,
            "source": "bench/infer.py reduced size / 16 (the original's canvas has 16x the area)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8, help="images through the pool")
    p.add_argument("--workers", type=int, default=2, help="writer processes (infer_val.py's --workers)")
    p.add_argument("--repeats", type=int, default=3, help="timed CRF runs (the median is reported)")
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

    net = network_rate()
    keeps_up = None if net is None else bool(pool_rate >= net["images_per_s"])
    print(f"CRF benchmark: {W}x{H}, {C} classes, {params.iterations} iterations, pydensecrf")
    print(f"  dense CRF alone:            {crf_s:7.3f} s/image  (labels changed on {100 * changed:.1f}% of pixels)")
    print(f"  writer job inline:          {job_s:7.3f} s/image  (argmax, CRF, 3 PNGs)")
    print(f"  writer pool, {args.workers} processes:  {pool_rate:7.3f} images/s ({args.images} images in {pool_s:.2f} s)")
    if net is None:
        print("  network: no bench/results/infer.json; run bench/infer.py first to compare")
    else:
        print(f"  network (CPU, original's canvas): {net['images_per_s']:.4f} images/s ({net['source']}); "
              f"the pool keeps up: {keeps_up} ({pool_rate / net['images_per_s']:.0f}x headroom)")
    write_json(args.out, {
        "benchmark": "crf",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "torch_version": torch.__version__,
        "threads": 1,
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
