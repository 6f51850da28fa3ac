"""Benchmark of inference (multi-scale + flip) against the SPEC formulation in bench/baselines/infer_pad.py.

    python bench/infer.py                 # a quarter of the original's size: 125x94 images, PAD 256
    python bench/infer.py --full          # also the original's shape: 500x375 images, PAD 1024 (16x the work)
    python bench/infer.py --full --device cuda --images 20

Both paths run the same network (a light ResNet-18 "ae" model from scratch, fixed seed, CPU unless --device cuda)
on the same images with TEST.SCALES [1, 0.5, 1.5, 2] and TEST.FLIP:
  * baseline: the main process decodes an image, builds its variants (every scale padded to PAD_SIZE), runs the
    network, merges; one image after the other (bench/baselines/infer_pad.py);
  * ours: infer_val.py's path: MultiscaleLoader in --workers DataLoader processes (decoding, resizing and padding
    overlapped with the network), the network with its batch norms folded (models/fold.py) in channels_last
    memory format, ``infer_val.predict`` (merge where the network ran);
  * ours --tight-canvas: each scale on its own canvas instead of PAD_SIZE: less compute, different numbers.
Reported: images/s, the ratio to the baseline, and the largest difference of the merged probabilities from the
baseline (must be float rounding for the default path), plus how many pixels change label with --tight-canvas.
The CRF and the PNG writers are measured by bench/crf.py.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

import infer_val  # noqa: E402
from bench.baselines.infer_pad import infer_image  # noqa: E402
from datasets.pascal_voc_ms import build_inference_dataset, get_inference_loader, read_inference_items  # noqa: E402
from models import build_model  # noqa: E402
from models.fold import fold_batchnorms  # noqa: E402
from utils.config import get_cfg_defaults  # noqa: E402
from utils.fileio import write_json  # noqa: E402

SCALES = [1, 0.5, 1.5, 2.0]  # the ResNet38 config's
TOLERANCE = 1e-4  # largest allowed |P_ours - P_baseline| on the padded canvas (float32 rounding: ~1e-5)
REDUCED = {"size": (125, 94), "pad": 256}  # a quarter of the VOC image size and of the original's canvas
FULL = {"size": (500, 375), "pad": 1024}  # a typical VOC image, the ResNet38 config's canvas


def make_images(directory: str, num: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """``num`` JPEGs of smooth random colour regions with noise (decoding costs about what a photo's does)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        noise = rng.normal(0, 8, (size[1], size[0], 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
        path = os.path.join(directory, f"img_{i:04d}.jpg")
        img.save(path, quality=90)
        paths.append(path)
    return paths


def bench_model(device: torch.device) -> torch.nn.Module:
    """The light "ae" model (ResNet-18 from scratch, seed 0), frozen, eval mode."""
    cfg = get_cfg_defaults()
    cfg.NET.MODEL, cfg.NET.BACKBONE, cfg.NET.FROM_SCRATCH = "ae", "resnet18", True
    torch.manual_seed(0)
    model = build_model(cfg.NET, num_classes=21).eval().to(device)
    for q in model.parameters():
        q.requires_grad_(False)
    return model


def bench_test_cfg(pad: int):
    """TEST settings of the ResNet38 config (4 scales + flip) on a pad x pad canvas."""
    t = get_cfg_defaults().TEST
    t.SCALES, t.FLIP, t.BATCH_SIZE, t.PAD_SIZE = SCALES, True, 2 * len(SCALES), [pad, pad]
    return t


def run_baseline(model, paths: list[str], test_cfg) -> tuple[float, list[torch.Tensor]]:
    t0 = time.perf_counter()
    out = [infer_image(model, np.asarray(Image.open(p).convert("RGB")), test_cfg) for p in paths]
    return time.perf_counter() - t0, out


def run_ours(model, folder: str, test_cfg, workers: int, tight: bool, device) -> tuple[float, list[torch.Tensor]]:
    """infer_val.py's path with its defaults: batch norms folded, channels_last, the DataLoader, predict()."""
    model = copy.deepcopy(model)  # the baseline keeps its batch norms
    fold_batchnorms(model)
    model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    dataset = build_inference_dataset(read_inference_items(folder, folder), test_cfg, tight=tight)
    out = [infer_val.predict(model, batch, test_cfg, device, channels_last=True).cpu()
           for batch in get_inference_loader(dataset, workers)]
    elapsed = time.perf_counter() - t0
    return elapsed, out


def bench_size(model, setting: dict, num: int, workers: int, device) -> dict:
    t = bench_test_cfg(setting["pad"])
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as folder:
        paths = make_images(folder, num, setting["size"])
        infer_image(model, np.asarray(Image.open(paths[0])), t)  # warm-up: allocator, threads, first calls
        base_s, ref = run_baseline(model, paths, t)
        ours_s, ours_p = run_ours(model, folder, t, workers, False, device)
        tight_s, tight_p = run_ours(model, folder, t, workers, True, device)
    diff = max(float((a - b).abs().max()) for a, b in zip(ours_p, ref))
    tight_diff = max(float((a - b).abs().max()) for a, b in zip(tight_p, ref))
    agree = float(np.mean([(a.argmax(0) == b.argmax(0)).float().mean().item() for a, b in zip(tight_p, ref)]))
    return {
        "image_size": list(setting["size"]), "pad_size": setting["pad"], "images": num,
        "baseline_images_per_s": round(num / base_s, 4), "ours_images_per_s": round(num / ours_s, 4),
        "tight_images_per_s": round(num / tight_s, 4),
        "speedup": round(base_s / ours_s, 3), "tight_speedup": round(base_s / tight_s, 3),
        "max_abs_diff": diff, "tight_max_abs_diff": tight_diff, "tight_label_agreement": round(agree, 5),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4, help="images per setting")
    p.add_argument("--full", action="store_true",
                   help="also the original's shape (on 2 CPU cores over a minute per image and path)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of our path (infer_val's --workers)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "infer.json"), help="JSON result")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    infer_val.configure_backends()  # both paths in float32 as infer_val.py runs (no TF32 on GPUs)
    device = torch.device(args.device)

    model = bench_model(device)
    results = {"reduced": bench_size(model, REDUCED, args.images, args.workers, device)}
    if args.full:
        results["full"] = bench_size(model, FULL, args.images if device.type == "cuda" else 1, args.workers, device)

    print(f"inference benchmark: ResNet-18 'ae' from scratch, scales {SCALES} + flip, {args.threads} threads, "
          f"{args.workers} loader workers, {device}")
    print(f"{'setting':34} {'baseline img/s':>14} {'ours img/s':>11} {'ratio':>6} {'max |dP|':>9} "
          f"{'tight img/s':>11} {'ratio':>6} {'tight |dP|':>10} {'labels =':>8}")
    for name, r in results.items():
        label = f"{name}: {r['image_size'][0]}x{r['image_size'][1]}, pad {r['pad_size']}, {r['images']} img"
        print(f"{label:34} {r['baseline_images_per_s']:14.3f} {r['ours_images_per_s']:11.3f} {r['speedup']:6.2f} "
              f"{r['max_abs_diff']:9.1e} {r['tight_images_per_s']:11.3f} {r['tight_speedup']:6.2f} "
              f"{r['tight_max_abs_diff']:10.1e} {100 * r['tight_label_agreement']:7.2f}%")
    ok = all(r["max_abs_diff"] <= TOLERANCE for r in results.values())
    print(f"merged probabilities of the default path within {TOLERANCE:g} of the baseline: {ok}")
    write_json(args.out, {
        "benchmark": "infer",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"},
        "torch_version": torch.__version__,
        "threads": args.threads,
        "workers": args.workers,
        "settings": {"backbone": "resnet18", "model": "ae", "scales": SCALES, "flip": True},
        "figures": results,
        "check": {"tolerance": TOLERANCE, "within_tolerance": ok},
    })
    print(f"wrote {os.path.relpath(args.out)}")
    if not ok:
        sys.exit("error: the inference path's merged probabilities differ from the SPEC formulation")


if __name__ == "__main__":
    main()
