"""CAM quality at the best background threshold: a model's raw masks against the GT over a sweep of thresholds.

The field reports CAMs at their best constant background score (the eval_cam scripts of PSA, IRN and ToCo sweep
it). For every image of ``--list`` the model runs with the GT image labels (as tools/eval_pseudo.py does); the
foreground scores of the image's classes meet a constant background score t, the argmax is compared with the GT
mask, and the mIoU over the classes present is reported for every t of ``--thresholds``, with the best one.
Scored: "cam", the raw masks (the CAM baseline's CAMs normalised by their maximum, the single-stage model's softmax
foreground masks), and "dec", their PAMR refinement (single-stage model only). Writes ``<out>/eval_cam.json`` and,
with ``--png``, each kind's masks at its best threshold as palette PNGs under ``<out>/cam/`` and ``<out>/dec/``.

    python tools/eval_cam.py --cfg configs/demo_bsl.yaml --snapshot snapshots/.../model_enc_e008Xs0.700.pth \
        --root data/synthetic --list data/synthetic/val_voc.txt --out results/demo/bsl/cam_val
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np

from tools.labelled_eval import add_model_list_args, labelled_outputs, load_model_and_list
from utils.errors import UserError, run_main
from utils.fileio import write_json
from utils.inference_tools import save_palette_png
from utils.metrics import (best_foreground, default_thresholds, sweep_scores, threshold_prediction,
                           threshold_sweep_confusion)

KINDS = {"cam": "raw masks", "dec": "PAMR-refined masks"}  # output key -> column title


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate raw (and PAMR-refined) masks over a sweep of background "
                                            "thresholds; print the table and the best threshold")
    add_model_list_args(p, "output directory (eval_cam.json; with --png the masks under cam/ and dec/)")
    p.add_argument("--thresholds", type=float, nargs="+", default=default_thresholds(), metavar="T",
                   help="constant background scores to try, in [0, 1] (default 0.05 0.10 ... 0.95)")
    p.add_argument("--png", action="store_true", help="also write the masks at the best threshold as PNGs")
    args = p.parse_args(argv)
    bad = [t for t in args.thresholds if not (math.isfinite(t) and 0.0 <= t <= 1.0)]
    if bad:
        raise UserError(f"--thresholds {bad[0]:g} is outside [0, 1], the range of the masks; "
                        "give background scores such as 0.05 0.1 0.15")
    return args


def format_table(result: dict, kinds: list[str], num_classes: int) -> list[str]:
    """One line per threshold with the mIoU (%) of each kind, the best marked with '*', then the best lines."""
    lines = ["threshold" + "".join(f" | {KINDS[k]:>18}" for k in kinds), "-" * (9 + 21 * len(kinds))]
    for i, t in enumerate(result["thresholds"]):
        cells = "".join(f" | {100 * result[k]['miou'][i]:>17.2f}{'*' if i == result[k]['best_index'] else ' '}"
                        for k in kinds)
        lines.append(f"{t:>9.2f}{cells}")
    for k in kinds:
        r = result[k]
        lines.append(f"best threshold of the {KINDS[k]}: {r['best_threshold']:.2f} "
                     f"(mIoU {100 * r['best_miou']:.2f}, classes present; "
                     f"{100 * r[f'best_miou_{num_classes}']:.2f} over {num_classes})")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, model, device, items = load_model_and_list(args)
    n = cfg.TEST.NUM_CLASSES  # the dataset's (load_model_and_list checks it)
    thresholds = np.asarray(sorted(set(args.thresholds)))  # each once, ascending
    confs: dict[str, np.ndarray] = {}
    maps: dict[str, list] = {k: [] for k in KINDS}  # --png: (image id, best score, its class) until t is known
    for name, gt, labels, out in labelled_outputs(model, items, device, desc="CAM sweep", num_classes=n):
        for k in KINDS:
            if k in out:
                fg = out[k][0, 1:].float().cpu().numpy()  # [C-1,H,W]
                c = threshold_sweep_confusion(fg, labels, gt, thresholds, n)  # [T,C,C]
                confs[k] = confs[k] + c if k in confs else c
                if args.png:
                    maps[k].append((name, *best_foreground(fg, labels)))

    kinds = [k for k in KINDS if k in confs]
    result: dict = {"list": args.list, "snapshot": args.snapshot, "num_images": len(items),
                    "thresholds": [float(t) for t in thresholds]}
    for k in kinds:
        s = sweep_scores(confs[k], thresholds)
        best = s["best"]
        result[k] = {"miou": s["miou"], f"miou_{n}": s[f"miou_{n}"], "best_threshold": s["best_threshold"],
                     "best_index": s["best_index"], "best_miou": best["miou_present"],
                     f"best_miou_{n}": best[f"miou_{n}"],
                     "best_iou": best["iou"], "best_iou_defined": best["iou_defined"], "count": best["count"]}
    for k in kinds:
        for name, best, cls in maps[k]:
            save_palette_png(threshold_prediction(best, cls, result[k]["best_threshold"]),
                             os.path.join(args.out, k, name + ".png"))
    write_json(os.path.join(args.out, "eval_cam.json"), result)
    print("\n".join(format_table(result, kinds, n)))


if __name__ == "__main__":
    run_main(main)
