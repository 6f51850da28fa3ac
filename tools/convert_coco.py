"""MS COCO 2014 instance annotations -> one class-index PNG per image and the file lists of this project.

    python tools/convert_coco.py --root data/coco [--splits train2014 val2014] [--workers 8]

reads ``<root>/annotations/instances_<split>.json`` and the images ``<root>/<split>/<file_name>`` and writes
``<root>/masks/<split>/<image name>.png`` and the lists ``<root>/train_coco.txt`` / ``<root>/val_coco.txt`` with
``<split>/<image name>.jpg masks/<split>/<image name>.png`` lines (SPEC 3.2), in image-id order.

How a mask is made (pycocotools decodes polygons, uncompressed and compressed RLE alike):
* class indices: the 80 category ids sorted ascending -> 1..80, background 0 (datasets/coco.py);
* crowd regions (``iscrowd`` 1) -> 255, ignored by training and evaluation, where no instance covers them;
* overlapping instances: the smaller one (fewer pixels) lies on top, as a small object is usually in front of a
  large one; equal sizes: the later annotation id on top. The result does not depend on the annotation order.

An image is listed when its mask has at least one foreground pixel (an image-level label needs one); images
without annotations and images whose annotations are all crowd are left out. The peers' split sizes (82,081
train / 40,137 val images, the images with annotations) are what the tool's "with annotations" count gives; it
prints its own counts. Masks are palette PNGs in the VOC colour map, written atomically, so an interrupted
conversion resumes where it stopped: a mask that exists already is read instead of converted again
(``--overwrite`` converts everything again).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.coco import (ANNOTATION_FILE, CATEGORIES, CLASS_OF_CATEGORY, IMAGE_DIR, LIST_NAMES,
                           MASK_DIR, SPLITS)
from datasets.voc import IGNORE_INDEX, PALETTE_FLAT
from utils.errors import UserError, run_main
from utils.fileio import atomic_path, check_writable_dir, write_text

MAX_REPORTED = 5  # names listed in one error line
DOWNLOAD_HINT = "download annotations_trainval2014.zip from https://cocodataset.org and unpack it into the root"

Job = tuple[str, int, int, list[dict[str, Any]], bool]  # (mask path, height, width, annotations, overwrite)


def _bad_file(path: str, why: str) -> UserError:
    return UserError(f"annotation file {path} is malformed ({why}); {DOWNLOAD_HINT}")


def load_annotations(path: str) -> dict[str, Any]:
    """The parsed instances file, checked for what the conversion reads; one UserError names the problem."""
    if not os.path.isfile(path):
        raise UserError(f"annotation file {path} not found; {DOWNLOAD_HINT} (or pass --annotations DIR)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad_file(path, f"not JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise _bad_file(path, "expected an object with the lists 'images', 'annotations' and 'categories'")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        for im in data["images"]:
            int(im["id"]), str(im["file_name"]), int(im["height"]), int(im["width"])
        for a in data["annotations"]:
            int(a["id"]), int(a["image_id"]), int(a["category_id"]), a["segmentation"]
    except (KeyError, TypeError, ValueError) as e:
        raise _bad_file(path, f"an entry lacks a field or has a wrong type: {e!r}") from None
    if cats != sorted(CATEGORIES):
        raise _bad_file(path, f"its {len(cats)} categories are not the 80 categories of COCO 2014")
    image_ids = {int(im["id"]) for im in data["images"]}
    orphans = sorted({int(a["id"]) for a in data["annotations"] if int(a["image_id"]) not in image_ids})
    if orphans:
        raise _bad_file(path, f"annotations {orphans[:MAX_REPORTED]} name images that are not in 'images'")
    return data


def instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """[H, W] bool mask of one annotation: a list of polygons, uncompressed RLE (counts list) or compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation):
            raise ValueError("a polygon needs at least 3 (x, y) points")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError("segmentation is neither polygons nor RLE")
    m = mask_utils.decode(rle)
    if m.shape[:2] != (height, width):
        raise ValueError(f"RLE of size {m.shape[1]}x{m.shape[0]}, image {width}x{height}")
    return m.astype(bool)


def class_mask(annotations: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """[H, W] uint8 class indices of one image: 0 background, 1..80, 255 crowd (see the module docstring)."""
    out = np.zeros((height, width), dtype=np.uint8)
    instances = []
    for a in annotations:
        try:
            m = instance_mask(a["segmentation"], height, width)
        except Exception as e:  # pycocotools raises plain Exceptions for input it does not take
            raise ValueError(f"annotation {a['id']}: {e}") from None
        if a.get("iscrowd", 0):
            out[m] = IGNORE_INDEX
        else:
            instances.append((int(m.sum()), int(a["id"]), CLASS_OF_CATEGORY[int(a["category_id"])], m))
    # the largest first, so smaller ones end on top; equal sizes: the higher annotation id on top
    for _, _, cls, m in sorted(instances, key=lambda t: (-t[0], t[1])):
        out[m] = cls
    return out


def _read_mask(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError):
        return None


def convert_image(job: Job) -> tuple[bool, bool]:
    """Write one mask (unless it exists); returns (it has a foreground pixel, it was written now)."""
    path, height, width, annotations, overwrite = job
    if not overwrite and os.path.isfile(path):
        mask = _read_mask(path)
        if mask is not None and mask.shape == (height, width):
            return bool(((mask > 0) & (mask != IGNORE_INDEX)).any()), False
    try:
        mask = class_mask(annotations, height, width)
    except ValueError as e:
        raise UserError(f"cannot decode the mask {path}: {e}; the annotation file is damaged, download it "
                        "again") from None
    img = Image.fromarray(mask, "P")
    img.putpalette(PALETTE_FLAT)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return bool(((mask > 0) & (mask != IGNORE_INDEX)).any()), True


def convert_split(root: str, split: str, ann_dir: str, workers: int, overwrite: bool,
                  progress: bool = True) -> dict[str, int]:
    """Masks and file list of one split; returns its counts."""
    data = load_annotations(os.path.join(ann_dir, os.path.basename(ANNOTATION_FILE.format(split=split))))
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    image_dir = IMAGE_DIR.format(split=split)
    missing = [im["file_name"] for im in images if int(im["id"]) in by_image
               and not os.path.isfile(os.path.join(root, image_dir, im["file_name"]))]
    if missing:
        raise UserError(f"{len(missing)} images of {split} are missing from {os.path.join(root, image_dir)} (e.g. "
                        f"{', '.join(missing[:MAX_REPORTED])}); unpack {split}.zip from https://cocodataset.org there")
    mask_dir = MASK_DIR.format(split=split)
    check_writable_dir(os.path.join(root, mask_dir), "mask directory")
    annotated = [im for im in images if int(im["id"]) in by_image]
    names = [os.path.splitext(im["file_name"])[0] for im in annotated]
    jobs: list[Job] = [(os.path.join(root, mask_dir, name + ".png"), int(im["height"]), int(im["width"]),
                        by_image[int(im["id"])], overwrite) for name, im in zip(names, annotated)]
    with tqdm(total=len(jobs), desc=f"{split} masks", unit="img", file=sys.stderr, disable=None if progress else True,
              mininterval=1.0) as bar:
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(workers) as pool:
                results = []
                for r in pool.imap(convert_image, jobs, chunksize=16):
                    results.append(r)
                    bar.update(1)
        else:
            results = []
            for job in jobs:
                results.append(convert_image(job))
                bar.update(1)
    lines = [f"{image_dir}/{im['file_name']} {mask_dir}/{name}.png"
             for (fg, _), name, im in zip(results, names, annotated) if fg]
    list_path = os.path.join(root, LIST_NAMES[split])
    write_text(list_path, "".join(line + "\n" for line in lines))
    return {"images": len(images), "annotated": len(annotated), "listed": len(lines),
            "written": sum(w for _, w in results), "list": list_path}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert MS COCO 2014 instance annotations to class-index PNG masks "
                                            "and file lists")
    p.add_argument("--root", required=True, help="COCO root: <split>/ images, annotations/, and the outputs")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to convert")
    p.add_argument("--annotations", default=None,
                   help="folder of instances_<split>.json (default <root>/annotations)")
    p.add_argument("--workers", type=int, default=1, help="conversion processes")
    p.add_argument("--overwrite", action="store_true", help="convert every mask again, also those that exist")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        raise UserError(f"--root {args.root} is not a directory; give the folder that holds train2014/, val2014/ "
                        "and annotations/")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    ann_dir = args.annotations or os.path.join(args.root, os.path.dirname(ANNOTATION_FILE))
    for split in args.splits:  # a missing file fails before any work (each is parsed when its split's turn comes)
        path = os.path.join(ann_dir, os.path.basename(ANNOTATION_FILE.format(split=split)))
        if not os.path.isfile(path):
            raise UserError(f"annotation file {path} not found; {DOWNLOAD_HINT} (or pass --annotations DIR)")
    for split in args.splits:
        c = convert_split(args.root, split, ann_dir, args.workers, args.overwrite)
        print(f"{split}: {c['images']} images, {c['annotated']} with annotations, {c['listed']} with a foreground "
              f"pixel listed in {c['list']}; {c['written']} masks written, {c['annotated'] - c['written']} there "
              "already", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
