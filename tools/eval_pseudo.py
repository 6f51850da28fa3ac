"""Quality of the masks a trained model makes on a labelled list: raw masks, PAMR-refined masks, pseudo labels.

For every image of ``--list`` the model runs in its training-mode forward (in eval mode, with the GT image labels),
which gives the masks cleaned with the image labels ("cam"), their PAMR refinement ("dec", "ae" model only) and the
pseudo ground truth the self-supervised loss learns from. Each is compared with the GT masks; the argmax maps are
written as PNGs for inspection and the scores as JSON. Pseudo labels are scored on the pixels they label (the loss
ignores the others; their share is "pseudo_coverage"), and also as eval_seg.py scores their PNGs, where an
unlabelled pixel (255) is a miss of its GT class ("miou_present_with_misses").

    python tools/eval_pseudo.py --cfg configs/demo_ae.yaml --snapshot snapshots/.../model_enc_e010Xs0.900.pth \
        --root data/synthetic --list data/synthetic/train_voc.txt --out results/demo/pseudo_train
    (--dataset coco with a configs/coco_*.yaml config for the COCO lists)
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from datasets.voc import PALETTE_FLAT
from tools.labelled_eval import add_model_list_args, labelled_outputs, load_model_and_list
from utils.errors import run_main
from utils.fileio import save_image, write_json
from utils.inference_tools import label_maps
from utils.metrics import MaskScores, scores_from_confusion


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate raw, PAMR-refined and pseudo-label masks against GT masks")
    add_model_list_args(p, "output directory (PNGs under cam/, dec/, pseudo/ and pseudo.json)")
    p.add_argument("--no-png", action="store_true", help="only write the JSON scores")
    return p.parse_args(argv)


def _save_label(lab: np.ndarray, path: str) -> None:
    img = Image.fromarray(lab, mode="P")
    img.putpalette(PALETTE_FLAT)
    save_image(img, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, model, device, items = load_model_and_list(args)
    num_classes = cfg.TEST.NUM_CLASSES  # the dataset's (load_model_and_list checks it)

    kinds = ("cam", "dec", "pseudo")
    scores = MaskScores(num_classes)
    for name, gt, _, out in labelled_outputs(model, items, device, desc="pseudo labels", num_classes=num_classes):
        maps = {k: v[0].cpu().numpy() for k, v in label_maps(out, cfg.TEST.FP_CUT_SCORE, cfg.TEST.BG_POW).items()
                if k in kinds}
        # pixels the pseudo labels leave unlabelled are scored by their coverage, not as errors
        scores.update(maps, gt)
        if not args.no_png:
            for k, lab in maps.items():
                _save_label(lab, os.path.join(args.out, k, name + ".png"))

    result = {"list": args.list, "snapshot": args.snapshot, "num_images": len(items)}
    for k in kinds:
        if k not in scores.conf or scores.conf[k].sum() + scores.misses[k].sum() == 0:
            continue  # no labelled GT pixel seen
        s = scores_from_confusion(scores.conf[k])
        result[k] = {key: s[key] for key in ("miou_present", "iou")}
        if scores.misses[k].any():  # unlabelled pixels: also the score eval_seg.py gives the written PNGs
            with_misses = scores_from_confusion(scores.conf[k], scores.misses[k])
            result[k]["miou_present_with_misses"] = with_misses["miou_present"]
    coverage = scores.summary().get("pseudo_coverage")
    if coverage is not None:
        result["pseudo_coverage"] = coverage
    write_json(os.path.join(args.out, "pseudo.json"), result)
    for k in kinds:
        if k in result:
            line = f"{k:>7}: mIoU {100 * result[k]['miou_present']:.2f} (classes present)"
            if "miou_present_with_misses" in result[k]:
                line += (f" on the labelled pixels; {100 * result[k]['miou_present_with_misses']:.2f} with the "
                         "unlabelled ones as misses, as eval_seg.py scores the PNGs")
            print(line)
    if "pseudo_coverage" in result:
        print(f"pseudo labels cover {100 * result['pseudo_coverage']:.1f}% of the labelled pixels (the rest is ignored)")


if __name__ == "__main__":
    run_main(main)
