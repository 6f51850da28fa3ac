"""The demo's report: a static HTML page (results/demo/report.html) with its figures as PNG and JSON.

It reads what the pipeline wrote: eval_seg.py's eval.json of every inference, tools/eval_cam.py's eval_cam.json
(raw and PAMR-refined masks at their best background threshold), tools/eval_pseudo.py's pseudo.json, the predicted
and intermediate PNG masks, the training runs' event files, configs and commits, and the demo's stage times. The
scores of the page are over the classes the val ground truth has (the 21-class averages stay in report.json).
It checks the demo's targets: the single-stage model beats the CAM baseline at its best threshold by 10 points of
mIoU and reaches 60%, PAMR-refined masks beat the raw ones by 5 points on train, and the demo took at most ten
minutes (when its wall time is given).
"""
from __future__ import annotations

import argparse
import html
import json
import os
import platform

import numpy as np
from PIL import Image

from datasets.pascal_voc import read_file_list
from datasets.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE
from utils.errors import UserError, run_main
from utils.fileio import save_image, write_json, write_text
from utils.metrics import confusion_and_misses, scores_from_confusion
from utils.visualize import overlay_labels, read_events

# the demo's targets: single-stage >= CAM + 10 points and >= 60% mIoU; PAMR >= raw + 5 points on train; <= 10 min
MIN_GAIN_OVER_CAM = 10.0
MIN_MIOU = 60.0
MIN_PAMR_GAIN = 5.0
MAX_WALL_TIME_S = 600.0
GRID_ROWS_BEST = 3
GRID_ROWS_WORST = 3
RUNS = {"bsl": "CAM baseline", "ae": "single-stage model", "stage2": "second stage (trained on the pseudo labels)",
        "sup": "fully supervised reference"}
STAGE2_MODEL = "second stage (same network trained on the single-stage model's pseudo labels of train_aug)"

# the chain of the main table: key -> (model, masks, CRF, (kind, scores file under --out, entry)); kind "eval":
# eval_seg.py's eval.json; kind "cam": the "cam" or "dec" entry of eval_cam.json, at its best threshold
CHAIN = {
    "bsl_cam": ("CAM baseline", "raw CAMs given the GT image labels, background score at its best threshold",
                False, ("cam", "bsl/cam_val/eval_cam.json", "cam")),
    "bsl": ("CAM baseline", "its own inference (multi-scale + flip, classes from its classifier)",
            False, ("eval", "bsl/val/eval.json", None)),
    "ae_cam": ("single-stage model", "raw masks given the GT image labels, background score at its best threshold",
               False, ("cam", "ae/cam_val/eval_cam.json", "cam")),
    "ae_dec": ("single-stage model", "PAMR-refined masks given the GT image labels, at their best threshold",
               False, ("cam", "ae/cam_val/eval_cam.json", "dec")),
    "ae": ("single-stage model", "final prediction (multi-scale + flip, classes from its classifier)",
           False, ("eval", "ae/val/eval.json", None)),
    "ae_crf": ("single-stage model", "final prediction", True, ("eval", "ae/val/crf/eval.json", None)),
    "stage2": (STAGE2_MODEL, "final prediction", False, ("eval", "stage2/val/eval.json", None)),
    "stage2_crf": (STAGE2_MODEL, "final prediction", True, ("eval", "stage2/val/crf/eval.json", None)),
    "sup": ("fully supervised reference (same network trained on the GT masks)", "final prediction",
            False, ("eval", "sup/val/eval.json", None)),
    "sup_crf": ("fully supervised reference (same network trained on the GT masks)", "final prediction",
                True, ("eval", "sup/val/crf/eval.json", None)),
}
# short column titles of the per-class table
SHORT = {"bsl_cam": "CAM baseline, best threshold", "bsl": "CAM baseline, inference",
         "ae_cam": "single-stage raw, best threshold", "ae_dec": "single-stage PAMR, best threshold",
         "ae": "single-stage", "ae_crf": "single-stage + CRF", "stage2": "second stage",
         "stage2_crf": "second stage + CRF", "sup": "fully supervised",
         "sup_crf": "fully supervised + CRF"}
TARGET_LABELS = {
    "single_stage_minus_cam": "single-stage model minus the CAM baseline at its best threshold (val mIoU points)",
    "single_stage_miou": "single-stage model, val mIoU (%)",
    "pamr_gain_on_train": "PAMR-refined minus raw masks of the single-stage model on train (mIoU points)",
    "wall_time_s": "whole demo, wall time (s)",
}
# the example columns: (title, mask directory under --out; None for the image, "" for the GT)
EXAMPLE_COLUMNS = (
    ("image", None),
    ("ground truth", ""),
    ("CAM baseline: raw CAM at its best threshold (GT image labels)", "bsl/cam_val/cam"),
    ("CAM baseline: its inference, no CRF", "bsl/val"),
    ("single-stage: raw mask at its best threshold (GT image labels)", "ae/cam_val/cam"),
    ("single-stage: PAMR-refined mask at its best threshold (GT image labels)", "ae/cam_val/dec"),
    ("single-stage: prediction, no CRF", "ae/val"),
    ("single-stage: prediction + CRF", "ae/val/crf"),
)
LOSS_WORD = "loss"
MIOU_WORD = "miou"
# 21-class means average the classes the data lacks into the curve; the report's scores are over the classes present
ALL_CLASS_MIOU_WORDS = ("miou21", "miou_21")


def _load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run the demo's earlier stages (bash launch/demo.sh)") from None


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def mean_over(iou: list[float], classes: list[int]) -> float:
    """Mean IoU (fraction) of the given classes."""
    return float(np.mean([iou[c] for c in classes])) if classes else 0.0


def load_chain(out: str) -> tuple[dict[str, dict], dict[str, float]]:
    """Per chain entry {"iou", "miou_21", "count"} (and eval_seg.py's "confusion"); the best threshold of each
    eval_cam entry."""
    chain, thresholds = {}, {}
    for key, (_, _, _, (kind, path, sub)) in CHAIN.items():
        data = _load_json(os.path.join(out, path))
        if kind == "eval":
            chain[key] = {"iou": data["iou"], "miou_21": data["miou_21"], "count": data["count"],
                          "confusion": data["confusion"]}
        else:
            if sub not in data:
                raise UserError(f"{os.path.join(out, path)} has no '{sub}' scores; rerun tools/eval_cam.py")
            e = data[sub]
            chain[key] = {"iou": e["best_iou"], "miou_21": e["best_miou_21"], "count": e["count"]}
            thresholds[key] = e["best_threshold"]
    return chain, thresholds


# ---------------------------------------------------------------------------------------------------------------
# examples

def _overlay(img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 image and [H,W] class map -> uint8 [H,W,3]: the map's VOC colours over the image (255 = plain
    image)."""
    return np.round(255 * overlay_labels(lab, img / 255.0, plain_ignored=True)).astype(np.uint8)


def _image_miou(gt: np.ndarray, pred: np.ndarray) -> float:
    """mIoU of one image over the classes in its GT or the prediction, scored as eval_seg.py scores it (a pseudo
    label's unlabelled pixel is a miss of its GT class)."""
    return scores_from_confusion(*confusion_and_misses(gt, pred))["miou_present"]


def examples(items: list[tuple[str, str]], out: str) -> list[dict]:
    """The best and the worst val images of the single-stage model (per-image mIoU), one overlay PNG per cell
    under examples/ and the same rows as one picture, examples.png."""
    rows = []
    for img_path, mask_path in items:
        name = os.path.splitext(os.path.basename(img_path))[0]
        gt = np.asarray(Image.open(mask_path))
        pred = np.asarray(Image.open(os.path.join(out, "ae", "val", name + ".png")))
        rows.append({"id": name, "img": img_path, "gt": mask_path, "miou": _image_miou(gt, pred)})
    rows.sort(key=lambda r: -r["miou"])
    picked = rows[:GRID_ROWS_BEST] + rows[-GRID_ROWS_WORST:] if len(rows) > GRID_ROWS_BEST + GRID_ROWS_WORST else rows
    strips = []
    for r in picked:
        img = np.asarray(Image.open(r["img"]).convert("RGB"))
        gt = np.asarray(Image.open(r["gt"]))
        r["cells"] = []
        panels = []
        for col, (_, sub) in enumerate(EXAMPLE_COLUMNS):
            if sub is None:
                panel, score = img, None
            elif sub == "":
                panel, score = _overlay(img, gt), None
            else:
                lab = np.asarray(Image.open(os.path.join(out, sub, r["id"] + ".png")))
                panel, score = _overlay(img, lab), _image_miou(gt, lab)
            rel = f"examples/{r['id']}_{col}.png"
            save_image(Image.fromarray(panel), os.path.join(out, rel))
            r["cells"].append({"src": rel, "miou": score, "classes": [] if sub is None else
                               sorted(int(c) for c in np.unique(gt if sub == "" else lab) if c != IGNORE_INDEX)})
            panels.append(np.pad(panel, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        strips.append(np.concatenate(panels, axis=1))
    grid = Image.fromarray(np.concatenate(strips, axis=0))
    save_image(grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST), os.path.join(out, "examples.png"))
    return picked


# ---------------------------------------------------------------------------------------------------------------
# training curves, configs, commits, stage times

def read_curves(logs: str) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """Per run, the scalar tags of its event files with "loss" in the name ("losses" panel) and those with "miou"
    in it, in % ("mIoU (%)" panel; 21-class means left out), as {panel: {"<split>: <tag>": {epoch: value}}};
    empty panels left out."""
    curves = {}
    for run in RUNS:
        panels: dict[str, dict[str, dict[int, float]]] = {"losses": {}, "mIoU (%)": {}}
        for split in ("train", "val"):
            for tag, points in read_events(os.path.join(logs, run, split)).items():
                if not points or not all(isinstance(v, float) for v in points.values()):
                    continue  # images
                low = tag.lower()
                if MIOU_WORD in low and not any(w in low for w in ALL_CLASS_MIOU_WORDS):
                    panels["mIoU (%)"][f"{split}: {tag}"] = {e: 100.0 * v for e, v in points.items()}
                elif LOSS_WORD in low:
                    panels["losses"][f"{split}: {tag}"] = points
        curves[run] = {k: v for k, v in panels.items() if v}
        if not curves[run]:
            raise UserError(f"no loss or mIoU scalars in the event files under {os.path.join(logs, run)}; "
                            "give --logs the demo's <logdir>/pascal_voc/<exp> directory")
    return curves


def run_records(logs: str) -> dict[str, dict[str, str]]:
    """The commit line and the resolved config each run recorded next to its logs (train.py's git.txt,
    config.yaml)."""
    records = {}
    for run in RUNS:
        rec = {}
        for name, key in (("git.txt", "git"), ("config.yaml", "config")):
            path = os.path.join(logs, run, name)
            try:
                with open(path) as f:
                    rec[key] = f.read()
            except FileNotFoundError:
                raise UserError(f"{path} is missing; train.py writes it next to the run's logs "
                                "(give --logs the demo's <logdir>/pascal_voc/<exp> directory)") from None
        commit = [ln.split(":", 1)[1].strip() for ln in rec["git"].splitlines() if ln.startswith("commit:")]
        dirty = [ln.split(":", 1)[1].strip() for ln in rec["git"].splitlines() if ln.startswith("dirty:")]
        rec["commit"] = (commit[0] if commit else "unknown") + (" (uncommitted changes)" if dirty == ["yes"] else "")
        records[run] = rec
    return records


def read_stage_times(path: str) -> list[tuple[str, int]]:
    """(stage, seconds) lines of launch/demo.sh's stage_times.tsv."""
    try:
        with open(path) as f:
            lines = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    except FileNotFoundError:
        raise UserError(f"{path} is missing; launch/demo.sh writes it (give --times its stage_times.tsv)") from None
    if any(len(p) != 2 or not p[1].isdigit() for p in lines):
        raise UserError(f"{path} is not a stage-time file (lines of stage<TAB>seconds); rerun launch/demo.sh")
    return [(name, int(s)) for name, s in lines]


# ---------------------------------------------------------------------------------------------------------------
# the page

def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class=\"{cls}\"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(c: int) -> str:
    r, g, b = (int(v) for v in PALETTE[c])
    return (f'<span class="swatch"><span style="background:rgb({r},{g},{b})"></span>'
            f"{html.escape(CLASS_NAMES[c])}</span>")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the demo's HTML report from the pipeline's outputs")
    p.add_argument("--data", required=True, help="synthetic dataset root")
    p.add_argument("--out", required=True, help="the demo's results directory")
    p.add_argument("--list", required=True, help="val list (for the examples)")
    p.add_argument("--logs", required=True, help="the runs' log directory, <logdir>/pascal_voc/<exp>")
    p.add_argument("--times", required=True, help="launch/demo.sh's stage_times.tsv")
    p.add_argument("--seed", type=int, default=0, help="seed the demo ran with (recorded)")
    p.add_argument("--wall-time", type=float, default=None, help="the demo's wall time in seconds (recorded)")
    args = p.parse_args(argv)

    chain, thresholds = load_chain(args.out)
    pseudo = {k: _load_json(os.path.join(args.out, k, "pseudo_train", "pseudo.json")) for k in ("bsl", "ae")}
    records = run_records(args.logs)
    curves = read_curves(args.logs)
    times = read_stage_times(args.times)
    # the classes the val ground truth has (GT pixel counts are the same in every evaluation of the list)
    data_classes = [c for c in range(NUM_CLASSES) if chain["ae"]["count"][c] > 0]
    names = [CLASS_NAMES[c] for c in data_classes]

    miou = {k: _pct(mean_over(e["iou"], data_classes)) for k, e in chain.items()}
    miou21 = {k: _pct(e["miou_21"]) for k, e in chain.items()}
    raw, refined = _pct(pseudo["ae"]["cam"]["miou_present"]), _pct(pseudo["ae"]["dec"]["miou_present"])
    stage2_labels = _pct(_load_json(os.path.join(args.out, "ae", "pseudo_train_aug", "crf", "eval.json"))
                         ["miou_present"])
    targets = {
        "single_stage_minus_cam": {"value": round(miou["ae"] - miou["bsl_cam"], 2), "target": MIN_GAIN_OVER_CAM},
        "single_stage_miou": {"value": miou["ae"], "target": MIN_MIOU},
        "pamr_gain_on_train": {"value": round(refined - raw, 2), "target": MIN_PAMR_GAIN},
    }
    if args.wall_time is not None:
        targets["wall_time_s"] = {"value": round(args.wall_time, 1), "target": MAX_WALL_TIME_S, "at_most": True}
    for key, t in targets.items():
        t["label"] = TARGET_LABELS[key]
        t["reached"] = t["value"] <= t["target"] if t.get("at_most") else t["value"] >= t["target"]

    picked = examples(read_file_list(args.list, args.data, need_masks=True), args.out)
    from utils.figures import save_confusion_figure, save_curves_figure

    for run, panels in curves.items():
        save_curves_figure(panels, os.path.join(args.out, "figures", f"curves_{run}.png"), title=RUNS[run])

    others = [c for c in range(NUM_CLASSES) if c not in data_classes]
    for key in ("ae", "ae_crf"):
        conf = np.asarray(chain[key]["confusion"], dtype=np.int64)[data_classes]  # [N, 21]
        # predictions of classes the data does not have: one column, so that every row still sums to its pixels
        conf = np.concatenate((conf[:, data_classes], conf[:, others].sum(1, keepdims=True)), axis=1)  # [N, N+1]
        save_confusion_figure(conf, names, os.path.join(args.out, "figures", f"confusion_{key}.png"),
                              title=f"{SHORT[key]}: the {len(names)} classes of val",
                              pred_names=names + ["other classes"])

    report = {
        "val_miou": miou,
        "val_miou_over": names,
        "val_miou_21_classes": miou21,
        "best_thresholds": thresholds,
        "per_class_iou": {k: {CLASS_NAMES[c]: _pct(e["iou"][c]) for c in data_classes} for k, e in chain.items()},
        "train_pseudo_labels": {
            "cam_baseline_raw": _pct(pseudo["bsl"]["cam"]["miou_present"]),
            "single_stage_raw": raw,
            "single_stage_pamr_refined": refined,
            "single_stage_pseudo_labels": _pct(pseudo["ae"]["pseudo"]["miou_present"]),
            "pseudo_label_coverage": _pct(pseudo["ae"].get("pseudo_coverage", 0.0)),
            "second_stage_labels": stage2_labels,
        },
        "targets": targets,
        "examples": [{"id": r["id"], "miou": _pct(r["miou"])} for r in picked],
        "training_curves": {run: sorted(s for series in p.values() for s in series) for run, p in curves.items()},
        "commits": {run: rec["commit"] for run, rec in records.items()},
        "stage_times_s": dict(times),
        "seed": args.seed,
        "wall_time_s": args.wall_time,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    write_json(os.path.join(args.out, "report.json"), report)

    def model_cell(key: str) -> str:
        model, masks, _, _ = CHAIN[key]
        if key in thresholds:
            masks += f" (t = {thresholds[key]:.2f})"
        return f"{html.escape(model)}</td><td>{html.escape(masks)}"

    main_rows = [[model_cell(k), "yes" if CHAIN[k][2] else "no", f"{miou[k]:.2f}"] for k in CHAIN]
    tp = report["train_pseudo_labels"]
    pseudo_rows = [
        ["CAM baseline, raw CAMs (background score 0.1)", f"{tp['cam_baseline_raw']:.2f}"],
        ["single-stage model, raw masks", f"{raw:.2f}"],
        ["single-stage model, PAMR-refined masks", f"{refined:.2f}"],
        ["single-stage model, pseudo labels (labelled pixels only; "
         f"{tp['pseudo_label_coverage']:.1f}% of pixels labelled)", f"{tp['single_stage_pseudo_labels']:.2f}"],
        ["the second stage's training masks: single-stage inference on train_aug given the GT image labels, with "
         "CRF", f"{stage2_labels:.2f}"],
    ]
    class_rows = [[_swatch(c)] + [f"{report['per_class_iou'][k][CLASS_NAMES[c]]:.1f}" for k in CHAIN]
                  for c in data_classes]
    target_rows = [[html.escape(t["label"]), f"{t['value']:.2f}",
                    f"{'&le;' if t.get('at_most') else '&ge;'} {t['target']:.0f}",
                    "reached" if t["reached"] else "<b>not reached</b>"] for t in targets.values()]
    time_rows = [[html.escape(name), str(s)] for name, s in times]
    example_rows = []
    for r in picked:
        cells = [f"<b>{html.escape(r['id'])}</b><br>single-stage mIoU {100 * r['miou']:.1f}%"]
        for cell in r["cells"]:
            score = "" if cell["miou"] is None else f"<br>{100 * cell['miou']:.1f}%"
            cells.append(f'<img class="cell" src="{cell["src"]}" alt="">{score}')
        example_rows.append(cells)
    run_blocks = "".join(
        f"<h3>{html.escape(RUNS[run])}</h3>"
        f'<img class="curves" src="figures/curves_{run}.png" alt="training curves of the {html.escape(RUNS[run])}">'
        f"<p>commit {html.escape(rec['commit'])}</p>"
        f"<details><summary>config and command</summary><pre>{html.escape(rec['git'])}\n"
        f"{html.escape(rec['config'])}</pre></details>"
        for run, rec in records.items())
    legend = sorted({c for r in picked for cell in r["cells"] for c in cell["classes"]} | set(data_classes))
    wall = f"{args.wall_time:.0f} s" if args.wall_time is not None else "not recorded"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Single-stage WSSS demo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}}
td:first-child,th:first-child{{text-align:left}} table.chain td:nth-child(2){{text-align:left}}
img{{max-width:100%;border:1px solid #ddd}} img.cell{{width:108px;max-width:none;image-rendering:pixelated}}
.swatch{{white-space:nowrap;margin-right:1em}} .swatch span{{display:inline-block;width:1em;height:1em;
border:1px solid #888;margin-right:.3em;vertical-align:middle}} pre{{font-size:80%;background:#f6f6f6;padding:.5em}}
</style>
<script>/* for automated checks: the number of images that loaded */
window.addEventListener("load", () => {{ document.body.dataset.imagesLoaded =
  [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; }});</script></head><body>
<h1>Single-stage semantic segmentation from image labels: demo report</h1>
<p>Synthetic dataset <code>{html.escape(args.data)}</code>. The CAM baseline and the single-stage model learnt from
the image-level labels only; the second stage is the fully supervised network trained on the single-stage model's
pseudo labels (no GT mask either); the fully supervised reference is the same network trained on the GT masks.
Seed {args.seed}; wall time {wall}. Scores are over the {len(names)} classes of the val ground truth
({html.escape(", ".join(names))}); the 21-class averages are in report.json.</p>

<h2 id="main">Validation mIoU (%)</h2>
<p>From the CAMs to the final masks. "Best threshold" rows score the masks given the GT image labels with a constant
background score swept from 0.05 to 0.95 (tools/eval_cam.py), as CAMs are usually reported; the other rows are
full inference, which predicts the classes itself.</p>
{_table(["model", "masks", "dense CRF", "mIoU"], main_rows, "chain")}

<h2 id="targets">Targets</h2>
{_table(["target", "measured", "target", "status"], target_rows)}

<h2 id="train-masks">Quality of the masks on the training split (mIoU %, given the GT image labels)</h2>
{_table(["masks", "mIoU"], pseudo_rows)}

<h2 id="per-class">Per-class IoU on val (%)</h2>
{_table(["class"] + [SHORT[k] for k in CHAIN], class_rows)}

<h2 id="confusion">Confusion of the single-stage model on val, without and with CRF</h2>
<img src="figures/confusion_ae.png" alt="confusion matrix without CRF">
<img src="figures/confusion_ae_crf.png" alt="confusion matrix with CRF">

<h2 id="examples">Examples: the best {GRID_ROWS_BEST} and worst {GRID_ROWS_WORST} val images of the
single-stage model</h2>
<p>Under each mask its mIoU on the image. Colours: {" ".join(_swatch(c) for c in legend)}
(the ground truth's unlabelled pixels, 255 along object edges, show the plain image)</p>
{_table(["image id"] + [t for t, _ in EXAMPLE_COLUMNS], example_rows)}

<h2 id="training">Training curves, configs and commits</h2>
<p>Losses and validation mIoU per epoch, as the runs' event files record them (train solid, val dashed).</p>
{run_blocks}

<h2 id="times">Time per stage (s)</h2>
{_table(["stage", "seconds"], time_rows)}
</body></html>
"""
    write_text(os.path.join(args.out, "report.html"), page)
    print(f"{'model, masks':<40} {'CRF':>4} {'mIoU':>7}")
    for k in CHAIN:
        print(f"{SHORT[k]:<40} {'yes' if CHAIN[k][2] else 'no':>4} {miou[k]:>7.2f}")
    print(f"(mIoU over the {len(names)} classes of val)")
    print(f"train masks: raw {raw:.2f} -> PAMR-refined {refined:.2f}; "
          f"pseudo labels {tp['single_stage_pseudo_labels']:.2f}")
    for name, t in targets.items():
        bound = "<=" if t.get("at_most") else ">="
        status = "reached" if t["reached"] else "NOT reached"
        print(f"target {name}: {t['value']:.2f} ({bound} {t['target']:.0f}) {status}")


if __name__ == "__main__":
    run_main(main)
