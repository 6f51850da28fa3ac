"""The demo's report: a static HTML page (results/demo/report.html) with its figures as PNG and JSON.

It reads what the pipeline wrote (eval_seg.py's eval.json, tools/eval_pseudo.py's pseudo.json, the predicted and
intermediate PNG masks) and checks the demo's targets: the single-stage model beats the CAM baseline by 10 points of
mIoU and reaches 60%, PAMR-refined masks beat the raw ones by 5 points on train, and the demo took at most ten
minutes (when its wall time is given).
"""
from __future__ import annotations

import argparse
import html
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import platform

import numpy as np
from PIL import Image, ImageDraw

from datasets.pascal_voc import read_file_list
from datasets.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE
from utils.errors import UserError, run_main
from utils.fileio import save_image, write_json, write_text
from utils.metrics import confusion_matrix, scores_from_confusion

# the demo's targets: single-stage >= CAM + 10 points and >= 60% mIoU; PAMR >= raw + 5 points on train; <= 10 min
MIN_GAIN_OVER_CAM = 10.0
MIN_MIOU = 60.0
MIN_PAMR_GAIN = 5.0
MAX_WALL_TIME_S = 600.0
OVERLAY_ALPHA = 0.7
GRID_ROWS_BEST = 3
GRID_ROWS_WORST = 3

METHODS = (  # (key, label, eval.json path under --out)
    ("bsl", "CAM baseline", "bsl/val/eval.json"),
    ("ae", "single-stage model", "ae/val/eval.json"),
    ("ae_crf", "single-stage model + CRF", "ae/val/crf/eval.json"),
    ("sup", "fully supervised bound (same network, GT masks)", "sup/val/eval.json"),
)


def _load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run the demo's earlier stages (bash launch/demo.sh)") from None


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def _overlay(img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 image and [H,W] class map -> the map's VOC colours over the image (255 = plain image)."""
    col = PALETTE[lab].astype(np.float32)
    out = (1 - OVERLAY_ALPHA) * img + OVERLAY_ALPHA * col
    out[lab == IGNORE_INDEX] = img[lab == IGNORE_INDEX]
    return out.round().clip(0, 255).astype(np.uint8)


def _panel_row(panels: list[np.ndarray], scale: int) -> Image.Image:
    row = np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=255) for p in panels], axis=1)
    im = Image.fromarray(row)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def example_grid(data: str, items: list[tuple[str, str]], out: str) -> tuple[list[dict], Image.Image]:
    """Per-image IoU of the single-stage model; the best and the worst images as overlay rows."""
    rows = []
    for img_path, mask_path in items:
        name = os.path.splitext(os.path.basename(img_path))[0]
        gt = np.asarray(Image.open(mask_path))
        pred = np.asarray(Image.open(os.path.join(out, "ae", "val", name + ".png")))
        s = scores_from_confusion(confusion_matrix(gt, pred, NUM_CLASSES))
        rows.append({"id": name, "img": img_path, "gt": mask_path, "miou": s["miou_present"]})
    rows.sort(key=lambda r: -r["miou"])
    picked = rows[:GRID_ROWS_BEST] + rows[-GRID_ROWS_WORST:] if len(rows) > GRID_ROWS_BEST + GRID_ROWS_WORST else rows
    images = []
    for r in picked:
        img = np.asarray(Image.open(r["img"]).convert("RGB"))
        gt = np.asarray(Image.open(r["gt"]))
        maps = [gt]
        for sub in ("ae/pseudo_val/cam", "ae/pseudo_val/dec", "ae/val"):
            maps.append(np.asarray(Image.open(os.path.join(out, sub, r["id"] + ".png"))))
        images.append(_panel_row([img] + [_overlay(img, m) for m in maps], scale=2))
    w = max(i.width for i in images)
    header = 18
    grid = Image.new("RGB", (w, header + sum(i.height for i in images)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    labels = ("image", "ground truth", "CAM (raw mask)", "PAMR-refined", "prediction")
    step = images[0].width // len(labels)
    for k, text in enumerate(labels):
        draw.text((k * step + 6, 3), text, fill=(0, 0, 0))
    y = header
    for im in images:
        grid.paste(im, (0, y))
        y += im.height
    return picked, grid


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the demo's HTML report from the pipeline's outputs")
    p.add_argument("--data", required=True, help="synthetic dataset root")
    p.add_argument("--out", required=True, help="the demo's results directory")
    p.add_argument("--list", required=True, help="val list (for the example grid)")
    p.add_argument("--seed", type=int, default=0, help="seed the demo ran with (recorded)")
    p.add_argument("--wall-time", type=float, default=None, help="the demo's wall time in seconds (recorded)")
    args = p.parse_args(argv)

    evals = {k: _load_json(os.path.join(args.out, path)) for k, _, path in METHODS}
    pseudo = {k: _load_json(os.path.join(args.out, k, "pseudo_train", "pseudo.json")) for k in ("bsl", "ae")}
    present = [c for c in range(NUM_CLASSES)
               if any(e["iou_defined"][c] for e in evals.values())]

    miou = {k: _pct(e["miou_present"]) for k, e in evals.items()}
    miou21 = {k: _pct(e["miou_21"]) for k, e in evals.items()}
    raw, refined = _pct(pseudo["ae"]["cam"]["miou_present"]), _pct(pseudo["ae"]["dec"]["miou_present"])
    targets = {
        "single_stage_minus_cam": {"value": round(miou["ae"] - miou["bsl"], 2), "target": MIN_GAIN_OVER_CAM},
        "single_stage_miou": {"value": miou["ae"], "target": MIN_MIOU},
        "pamr_gain_on_train": {"value": round(refined - raw, 2), "target": MIN_PAMR_GAIN},
    }
    if args.wall_time is not None:
        targets["wall_time_s"] = {"value": round(args.wall_time, 1), "target": MAX_WALL_TIME_S, "at_most": True}
    for t in targets.values():
        t["reached"] = t["value"] <= t["target"] if t.get("at_most") else t["value"] >= t["target"]

    picked, grid = example_grid(args.data, read_file_list(args.list, args.data, need_masks=True), args.out)
    save_image(grid, os.path.join(args.out, "examples.png"))

    report = {
        "val_miou_present_classes": miou,
        "val_miou_21_classes": miou21,
        "per_class_iou": {k: {CLASS_NAMES[c]: _pct(e["iou"][c]) for c in present} for k, e in evals.items()},
        "train_pseudo_labels": {
            "cam_baseline_raw": _pct(pseudo["bsl"]["cam"]["miou_present"]),
            "single_stage_raw": raw,
            "single_stage_pamr_refined": refined,
            "single_stage_pseudo_labels": _pct(pseudo["ae"]["pseudo"]["miou_present"]),
            "pseudo_label_coverage": _pct(pseudo["ae"].get("pseudo_coverage", 0.0)),
        },
        "targets": targets,
        "examples": [{"id": r["id"], "miou": _pct(r["miou"])} for r in picked],
        "seed": args.seed,
        "wall_time_s": args.wall_time,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    write_json(os.path.join(args.out, "report.json"), report)

    labels = {k: label for k, label, _ in METHODS}
    main_rows = [[html.escape(labels[k]), f"{miou[k]:.2f}", f"{miou21[k]:.2f}"] for k in labels]
    tp = report["train_pseudo_labels"]
    pseudo_rows = [
        ["CAM baseline, raw CAM", f"{tp['cam_baseline_raw']:.2f}"],
        ["single-stage, raw masks", f"{raw:.2f}"],
        ["single-stage, PAMR-refined masks", f"{refined:.2f}"],
        ["single-stage, pseudo labels (labelled pixels only; "
         f"{tp['pseudo_label_coverage']:.1f}% of pixels labelled)", f"{tp['single_stage_pseudo_labels']:.2f}"],
    ]
    class_rows = [[html.escape(CLASS_NAMES[c])] + [f"{report['per_class_iou'][k][CLASS_NAMES[c]]:.1f}" for k in labels]
                  for c in present]
    target_rows = [[html.escape(name.replace("_", " ")), f"{t['value']:.2f}",
                    f"{'&le;' if t.get('at_most') else '&ge;'} {t['target']:.0f}",
                    "reached" if t["reached"] else "<b>not reached</b>"] for name, t in targets.items()]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Single-stage WSSS demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%;border:1px solid #ddd}}</style>
<script>/* for automated checks: the number of images that loaded */
window.addEventListener("load", () => {{ document.body.dataset.imagesLoaded =
  [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; }});</script></head><body>
<h1>Single-stage semantic segmentation from image labels: demo report</h1>
<p>Synthetic dataset <code>{html.escape(args.data)}</code>; every network was trained from scratch on CPU with the image-level
labels only, except the fully supervised bound, which saw the GT masks. Seed {args.seed};
wall time {args.wall_time if args.wall_time is not None else "n/a"} s.</p>
<h2>Validation mIoU (%)</h2>
{_table(["method", "mIoU (classes present)", "mIoU (21 VOC classes)"], main_rows)}
<h2>Quality of the masks on the training split (mIoU %, classes present)</h2>
{_table(["masks", "mIoU"], pseudo_rows)}
<h2>Targets</h2>
{_table(["target", "measured", "target", "status"], target_rows)}
<h2>Per-class IoU on val (%)</h2>
{_table(["class"] + [labels[k] for k in labels], class_rows)}
<h2>Examples (best {GRID_ROWS_BEST} and worst {GRID_ROWS_WORST} val images of the single-stage model)</h2>
<p>image | ground truth | CAM (raw mask) | PAMR-refined mask | final prediction</p>
<img id="examples" src="examples.png" alt="example overlays">
<h2>Single-stage model on val</h2>
<img id="confusion" src="ae/val/confusion.png" alt="confusion matrix"> <img id="iou" src="ae/val/iou.png" alt="per-class IoU">
</body></html>
"""
    write_text(os.path.join(args.out, "report.html"), page)
    print(f"{'method':<50} {'mIoU':>7} {'mIoU-21':>8}")
    for k in labels:
        print(f"{labels[k]:<50} {miou[k]:>7.2f} {miou21[k]:>8.2f}")
    print(f"train masks: raw {raw:.2f} -> PAMR-refined {refined:.2f}; pseudo labels {tp['single_stage_pseudo_labels']:.2f}")
    for name, t in targets.items():
        bound = "<=" if t.get("at_most") else ">="
        print(f"target {name}: {t['value']:.2f} ({bound} {t['target']:.0f}) {'reached' if t['reached'] else 'NOT reached'}")


if __name__ == "__main__":
    run_main(main)
