"""Benchmark of infer_val.py's whole loop against the original's (bench/baselines/infer_loop.py), end to end.

    python bench/infer_loop.py                # 4 images 125 px wide (VOC's shape / 4) on a 256 canvas
    python bench/infer_loop.py --full         # 3 images 500 px wide on the ResNet38 config's 1024 canvas (slow on CPU)
    python bench/infer_loop.py --backbone vgg16 --images 2 --rounds 1

Both commands run as a user runs them, in their own processes, on the same list (synthetic VOC-layout images with
GT masks, tools/make_synthetic.py), the same snapshot (the "ae" model with a light ResNet-18 by default, from
scratch, seed 0) and the ResNet38 config's inference settings (scales 1, 0.5, 1.5, 2 with flips, FP_CUT_SCORE 0.1,
BG_POW 3, the dense CRF) with --workers (loader workers, writer processes and threads alike):
  * ours: ``python infer_val.py`` with its defaults, and once more with TEST.FAST (utils/fastpath.py) where that
    changes anything (a GPU, or a CPU with native bf16; elsewhere the fast path is the default path);
  * baseline: ``python bench/baselines/infer_loop.py``, the original's loop transcribed (SPEC 3.6, 8).
The runs alternate for --rounds rounds; each variant's time is its fastest round (wall clock, start-up and the
last writer included). The masks of ours (defaults) must equal the baseline's, plain and CRF, at every pixel but
float-rounding ties (TIE_FRACTION); the count of differing pixels is reported, and the fast path's agreement with
the default masks.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import write_results  # noqa: E402
from models import build_model  # noqa: E402
from utils.config import cfg_to_yaml, load_cfg  # noqa: E402
from utils.fastpath import fast_settings  # noqa: E402

SETTINGS = {"reduced": {"width": 125, "pad": 256, "images": 4},  # a quarter of VOC's image and canvas sides
            "full": {"width": 500, "pad": 1024, "images": 3}}  # VOC's width, the ResNet38 config's canvas
CONFIG = os.path.join(ROOT, "configs", "voc_resnet38.yaml")  # its TEST keys are the inference settings
TIE_FRACTION = 1e-4  # masks: pixels that may differ (argmax ties broken by float rounding)
TARGET = 1.3  # issue 16: the whole loop >= 1.3x the original's on CPU
SUFFIX = "e000Xs0.000"


def prepare(folder: str, setting: dict, backbone: str, images: int, seed: int = 0) -> dict[str, str]:
    """The list, the snapshot and the config under ``folder``."""
    from tools.make_synthetic import make_synthetic

    data = os.path.join(folder, "data")
    make_synthetic(data, n_train=2, n_val=images, n_test=0, size=setting["width"], seed=seed)
    cfg = load_cfg(CONFIG)
    cfg.NET.BACKBONE, cfg.NET.FROM_SCRATCH = backbone, True
    cfg.TEST.PAD_SIZE, cfg.TEST.DATA_ROOT = [setting["pad"], setting["pad"]], data
    cfg_path = os.path.join(folder, "infer.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg_to_yaml(cfg))
    snapshots = os.path.join(folder, "snapshots")
    snapshot = os.path.join(snapshots, "pascal_voc", "bench", "run", f"model_enc_{SUFFIX}.pth")
    os.makedirs(os.path.dirname(snapshot))
    torch.manual_seed(seed)
    torch.save(build_model(cfg.NET).state_dict(), snapshot)
    return {"cfg": cfg_path, "data": data, "list": os.path.join(data, "val_voc.txt"), "snapshots": snapshots,
            "snapshot": snapshot, "logs": os.path.join(folder, "logs")}


def commands(paths: dict[str, str], out: str, workers: int) -> dict[str, list[str]]:
    ours = [sys.executable, "infer_val.py", "--dataset", "pascal_voc", "--cfg", paths["cfg"], "--exp", "bench",
            "--run", "run", "--resume", SUFFIX, "--snapshot-dir", paths["snapshots"], "--logdir", paths["logs"],
            "--infer-list", paths["list"], "--workers", str(workers), "--device", "cpu"]
    return {
        "ours": ours + ["--mask-output-dir", os.path.join(out, "ours")],
        "fast": ours + ["--mask-output-dir", os.path.join(out, "fast"), "--set", "TEST.FAST", "True"],
        "baseline": [sys.executable, os.path.join("bench", "baselines", "infer_loop.py"), "--cfg", paths["cfg"],
                     "--snapshot", paths["snapshot"], "--infer-list", paths["list"], "--data-root", paths["data"],
                     "--out", os.path.join(out, "baseline"), "--workers", str(workers)],
    }


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def differing_pixels(a_dir: str, b_dir: str) -> tuple[int, int, int]:
    """(pixels that differ, pixels, images) between the PNG masks of two output folders (plain and crf/)."""
    diff = total = images = 0
    for sub in ("", "crf"):
        names = sorted(n for n in os.listdir(os.path.join(b_dir, sub)) if n.endswith(".png"))
        for name in names:
            a = np.asarray(Image.open(os.path.join(a_dir, sub, name)))
            b = np.asarray(Image.open(os.path.join(b_dir, sub, name)))
            diff += int((a != b).sum())
            total += b.size
            images += 1
    return diff, total, images


def bench_setting(name: str, setting: dict, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_infer_loop_") as folder:
        paths = prepare(folder, setting, args.backbone, args.images or setting["images"])
        # TEST.FAST runs only where it changes something (utils/fastpath.py): on a CPU without native bf16 it is
        # the default path itself
        fast_differs = bool(fast_settings(torch.device("cpu"), training=False).amp)
        times: dict[str, list[float]] = {"ours": [], "fast": [], "baseline": []}
        for r in range(args.rounds):
            out = os.path.join(folder, f"round{r}")
            for variant, cmd in commands(paths, out, args.workers).items():
                if variant == "fast" and not fast_differs:
                    continue
                times[variant].append(round(timed(cmd), 3))
                print(f"  {name} round {r + 1}: {variant} {times[variant][-1]:.1f} s", flush=True)
        diff, total, masks = differing_pixels(os.path.join(out, "ours"), os.path.join(out, "baseline"))
        fdiff, ftotal, _ = differing_pixels(os.path.join(out, "fast" if fast_differs else "ours"),
                                            os.path.join(out, "ours"))
    if not fast_differs:
        times["fast"] = times["ours"]
    best = {k: min(v) for k, v in times.items()}
    n = args.images or setting["images"]
    return {"image_width": setting["width"], "pad_size": setting["pad"], "images": n, "runs_s": times,
            "best_s": best, "images_per_s": {k: round(n / v, 4) for k, v in best.items()},
            "speedup": round(best["baseline"] / best["ours"], 3),
            "fast_speedup": round(best["baseline"] / best["fast"], 3),
            "masks_compared": masks, "differing_pixels": diff, "pixels": total,
            "same_masks": diff <= TIE_FRACTION * total,
            "fast_runs": fast_differs, "fast_agreement": round(1 - fdiff / ftotal, 6)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="also 500 px images on the 1024 canvas (CPU: minutes per image)")
    p.add_argument("--backbone", default="resnet18", help="NET.BACKBONE of the snapshot (from scratch)")
    p.add_argument("--images", type=int, default=0, help="images per setting (0: the setting's own)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the three runs, in turns")
    p.add_argument("--workers", type=int, default=2, help="--workers of both loops")
    p.add_argument("--out", default=None, help="JSON result (default bench/results/infer_loop.json)")
    args = p.parse_args()
    results = {}
    for name in ("reduced", "full") if args.full else ("reduced",):
        results[name] = bench_setting(name, SETTINGS[name], args)
    print(f"whole inference loop: {args.backbone} 'ae', scales 1/0.5/1.5/2 + flip, CRF, --workers {args.workers}, "
          f"best of {args.rounds} rounds, cpu")
    print(f"{'setting':28} {'baseline s':>10} {'ours s':>8} {'ratio':>6} {'fast s':>8} {'ratio':>6} "
          f"{'differing px':>13} {'fast agrees':>11}")
    for name, r in results.items():
        label = f"{name}: {r['image_width']} px, pad {r['pad_size']}, {r['images']} img"
        b = r["best_s"]
        print(f"{label:28} {b['baseline']:10.1f} {b['ours']:8.1f} {r['speedup']:5.2f}x {b['fast']:8.1f} "
              f"{r['fast_speedup']:5.2f}x {r['differing_pixels']:>6} of {r['pixels']:<7} "
              f"{100 * r['fast_agreement']:9.2f}%")
    same = all(r["same_masks"] for r in results.values())
    reached = all(r["speedup"] >= TARGET for r in results.values())
    print(f"same masks as the original's loop (plain and CRF, up to {TIE_FRACTION:g} of the pixels): {same}; "
          f"target >= {TARGET}x: {'reached' if reached else 'not reached'}")
    path = write_results("infer_loop", {"settings": {"backbone": args.backbone, "model": "ae", "config": "voc_resnet38",
                                                      "workers": args.workers, "rounds": args.rounds},
                                         "figures": results, "target": TARGET, "reached": reached,
                                         "check": {"same_masks": same, "tie_fraction": TIE_FRACTION}},
                         path=args.out)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
