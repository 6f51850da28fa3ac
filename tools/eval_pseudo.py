"""Quality of the masks a trained model makes on a labelled list: raw masks, PAMR-refined masks, pseudo labels.

For every image of ``--list`` the model runs in its training-mode forward (in eval mode, with the GT image labels),
which gives the masks cleaned with the image labels ("cam"), their PAMR refinement ("dec", "ae" model only) and the
pseudo ground truth the self-supervised loss learns from. Each is compared with the GT masks; the argmax maps are
written as PNGs for inspection and the scores as JSON.

    python tools/eval_pseudo.py --cfg configs/demo_ae.yaml --snapshot snapshots/.../model_enc_e010Xs0.900.pth \
        --root data/synthetic --list data/synthetic/train_voc.txt --out results/demo/pseudo_train
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets.pascal_voc import read_file_list
from datasets.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE_FLAT, labels_from_mask, normalize_np
from models import build_model
from models.weights import load_snapshot
from utils.config import load_cfg
from utils.errors import UserError, run_main
from utils.fileio import save_image, write_json
from utils.metrics import confusion_matrix, scores_from_confusion
from utils.opts import select_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate raw, PAMR-refined and pseudo-label masks against GT masks")
    p.add_argument("--cfg", required=True, help="YAML config the model was trained with")
    p.add_argument("--set", dest="set_cfgs", nargs="+", default=[], metavar="KEY VALUE", help="config overrides")
    p.add_argument("--snapshot", required=True, help="model_enc_*.pth file")
    p.add_argument("--root", required=True, help="data root the list paths are relative to")
    p.add_argument("--list", required=True, help="file list with image and mask columns")
    p.add_argument("--out", required=True, help="output directory (PNGs under cam/, dec/, pseudo/ and pseudo.json)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    p.add_argument("--no-png", action="store_true", help="only write the JSON scores")
    return p.parse_args(argv)


def _label_map(masks: torch.Tensor) -> np.ndarray:
    """[21,H,W] cleaned masks -> [H,W] uint8 argmax."""
    return masks.argmax(0).to(torch.uint8).cpu().numpy()


def _pseudo_map(pseudo: torch.Tensor) -> np.ndarray:
    """[21,H,W] 0/1 pseudo GT -> [H,W] uint8 class or 255 where no class is set (ignored by the loss)."""
    lab = pseudo.argmax(0).to(torch.uint8)
    lab[pseudo.sum(0) < 1] = IGNORE_INDEX
    return lab.cpu().numpy()


def _save_label(lab: np.ndarray, path: str) -> None:
    img = Image.fromarray(lab, mode="P")
    img.putpalette(PALETTE_FLAT)
    save_image(img, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_cfg(args.cfg, args.set_cfgs)
    cfg.NET.FROM_SCRATCH = True  # the snapshot overwrites every weight
    device = select_device(args.device)
    items = read_file_list(args.list, args.root, need_masks=True)
    model = build_model(cfg.NET, num_classes=NUM_CLASSES)
    load_snapshot(model, args.snapshot)
    model.to(device).eval()

    kinds = ("cam", "dec", "pseudo")
    conf = {k: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64) for k in kinds}
    labelled = {"pixels": 0, "pseudo_labelled": 0}
    for img_path, mask_path in tqdm(items, desc="pseudo labels", file=sys.stderr, mininterval=2):
        name = os.path.splitext(os.path.basename(img_path))[0]
        try:
            img = np.array(Image.open(img_path).convert("RGB"))
            gt = np.asarray(Image.open(mask_path))
        except OSError as e:
            raise UserError(f"cannot read {img_path} or {mask_path}: {e}; run tools/check_data.py on the list") from None
        x = torch.from_numpy(normalize_np(img)).permute(2, 0, 1)[None].to(device)  # [1,3,H,W]
        raw = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)
        labels = torch.from_numpy(labels_from_mask(gt))[None].to(device)  # [1,20]
        with torch.inference_mode():
            out = model(x, raw, labels)
        maps = {"cam": _label_map(out["cam"][0])}
        if "dec" in out:
            maps["dec"] = _label_map(out["dec"][0])
            maps["pseudo"] = _pseudo_map(out["pseudo"][0])
        for k, lab in maps.items():
            # pixels the pseudo labels leave unlabelled are scored by the coverage below, not as errors
            target = np.where(lab == IGNORE_INDEX, IGNORE_INDEX, gt) if k == "pseudo" else gt
            conf[k] += confusion_matrix(target, np.where(lab == IGNORE_INDEX, 0, lab), NUM_CLASSES)
            if not args.no_png:
                _save_label(lab, os.path.join(args.out, k, name + ".png"))
        if "pseudo" in maps:
            valid = gt != IGNORE_INDEX
            labelled["pixels"] += int(valid.sum())
            labelled["pseudo_labelled"] += int((valid & (maps["pseudo"] != IGNORE_INDEX)).sum())

    result = {"list": args.list, "snapshot": args.snapshot, "num_images": len(items)}
    for k in kinds:
        if conf[k].sum() == 0:
            continue
        s = scores_from_confusion(conf[k])
        result[k] = {key: s[key] for key in ("miou", "miou_present", "iou") if key in s}
    if labelled["pixels"]:
        result["pseudo_coverage"] = labelled["pseudo_labelled"] / labelled["pixels"]
    write_json(os.path.join(args.out, "pseudo.json"), result)
    for k in kinds:
        if k in result:
            print(f"{k:>7}: mIoU {100 * result[k]['miou_present']:.2f} (classes present)")
    if "pseudo_coverage" in result:
        print(f"pseudo labels cover {100 * result['pseudo_coverage']:.1f}% of the labelled pixels (the rest is ignored)")


if __name__ == "__main__":
    run_main(main)
