"""A synthetic dataset in the MS COCO 2014 layout: the images of tools/make_synthetic.py with instance annotations.

    python tools/make_synthetic_coco.py --out data/synthetic_coco [--num-train 600 --num-val 120] [--size 112]
    python tools/convert_coco.py --root data/synthetic_coco

writes what the official downloads unpack to (datasets/coco.py)::

    train2014/COCO_train2014_<id:012d>.jpg  val2014/COCO_val2014_<id:012d>.jpg
    annotations/instances_train2014.json    annotations/instances_val2014.json

The pictures, objects and classes are those of make_synthetic.py (the same drawing, seeded the same way); each
labelled object becomes one instance of the COCO category of its VOC class (person, car, cat, ...), with all 80
categories declared. Its segmentation covers the whole object, also where a later object hides it, so
instances overlap. Every annotation format of the official files occurs: non-crowd instances alternate between
polygons (the drawn outlines: body and round head) and compressed RLE; every third image has a crowd region
(uncompressed RLE, ``iscrowd`` 1) over its lower-left corner. Each split also holds one image without
annotations and one with a crowd region only: the conversion leaves both out of its lists.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
from typing import Any, Sequence

import numpy as np

from datasets.coco import ANNOTATION_FILE, CATEGORIES, IMAGE_DIR
from datasets.voc import CLASS_NAMES as VOC_NAMES
from tools.make_synthetic import DEFAULT_CLASSES, _save_jpeg, draw_sample, get_difficulty
from utils.errors import UserError, run_main
from utils.fileio import check_writable_dir, write_json

# VOC class name -> COCO category name, where they differ (the other 14 VOC classes have the same name)
VOC_TO_COCO_NAME = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
                    "potted-plant": "potted plant", "sofa": "couch", "tv/monitor": "tv"}
COCO_ID_OF_NAME = {name: cat_id for cat_id, name in CATEGORIES}
SPLIT_SOURCES = {"train2014": "sbd", "val2014": "val"}  # make_synthetic's streams: the same images as its splits
CROWD_EVERY = 3  # images i with i % 3 == 1 get a crowd region
CROWD_FRACTION = 0.3  # the crowd region: this fraction of the width and height, in the lower-left corner
EXTRA_IMAGES = ("no annotations", "crowd only")  # appended to each split, left out by the conversion


def coco_category(voc_class: int) -> int:
    """The COCO category id of a VOC class index (1..20)."""
    name = VOC_NAMES[voc_class]
    return COCO_ID_OF_NAME[VOC_TO_COCO_NAME.get(name, name)]


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """[H, W] bool -> COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _annotation(mask: np.ndarray, category: int, segmentation: Any, crowd: bool) -> dict[str, Any]:
    return {"image_id": 0, "category_id": category, "segmentation": segmentation, "area": float(mask.sum()),
            "bbox": _bbox(mask), "iscrowd": int(crowd)}


def _crowd_mask(height: int, width: int) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[height - int(CROWD_FRACTION * height):, :int(CROWD_FRACTION * width)] = True
    return m


def _draw(job: tuple) -> tuple[int, int, list[dict[str, Any]]]:
    """Draw image ``index`` of a split, write its JPEG; return (height, width, annotations without ids)."""
    out_dir, split, index, kind, path, seed, size, classes, d = job
    instances: list = []
    img, _ = draw_sample(SPLIT_SOURCES[split], index, seed, size, classes, d, instances)
    _save_jpeg(img, path, d.jpeg_quality)
    width, height = img.size
    anns = []
    if kind == "regular":
        for n, (cls, mask, outlines) in enumerate(instances):
            if n % 2 == 0:
                seg: Any = [[round(float(v), 2) for v in o.ravel()] for o in outlines]  # [x1, y1, x2, y2, ...]
            else:
                seg = compressed_rle(mask)
            anns.append(_annotation(mask, coco_category(cls), seg, crowd=False))
    if (kind == "regular" and index % CROWD_EVERY == 1) or kind == "crowd only":
        crowd = _crowd_mask(height, width)
        anns.append(_annotation(crowd, coco_category(classes[0]), uncompressed_rle(crowd), crowd=True))
    return height, width, anns


def make_synthetic_coco(out_dir: str, n_train: int = 600, n_val: int = 120, size: int = 112, seed: int = 0,
                        difficulty: str = "default", classes: Sequence[int] = DEFAULT_CLASSES,
                        workers: int = 1) -> dict[str, int]:
    """Write the tree under ``out_dir`` (module docstring); returns the number of images per split (with the two
    extra images each)."""
    if n_train < 2 or n_val < 1:
        raise UserError(f"need at least 2 training and 1 validation image (got {n_train}, {n_val})")
    if size < 32:
        raise UserError(f"--size {size} is too small; use 32 pixels or more")
    d = get_difficulty(difficulty)
    check_writable_dir(out_dir, "output directory")
    counts = {}
    categories = [{"id": cat_id, "name": name, "supercategory": ""} for cat_id, name in CATEGORIES]
    for split, n in (("train2014", n_train), ("val2014", n_val)):
        image_dir = os.path.join(out_dir, IMAGE_DIR.format(split=split))
        check_writable_dir(image_dir, "output directory")
        kinds = ["regular"] * n + list(EXTRA_IMAGES)
        names = [f"COCO_{split}_{i + 1:012d}.jpg" for i in range(len(kinds))]
        jobs = [(out_dir, split, i, kind, os.path.join(image_dir, name), seed, size, tuple(classes), d)
                for i, (kind, name) in enumerate(zip(kinds, names))]
        with contextlib.ExitStack() as stack:
            if workers > 1:
                pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
                drawn = pool.map(_draw, jobs, chunksize=4)
            else:
                drawn = list(map(_draw, jobs))
        images, annotations = [], []
        for i, (name, (height, width, anns)) in enumerate(zip(names, drawn)):
            images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
            for a in anns:
                annotations.append({"id": len(annotations) + 1, **a, "image_id": i + 1})
        write_json(os.path.join(out_dir, ANNOTATION_FILE.format(split=split)),
                   {"info": {"description": "synthetic COCO-layout data (tools/make_synthetic_coco.py)"},
                    "images": images, "annotations": annotations, "categories": categories})
        counts[split] = len(images)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic dataset in the MS COCO 2014 layout")
    p.add_argument("--out", required=True, help="output directory (the --root of tools/convert_coco.py)")
    p.add_argument("--num-train", type=int, default=600, help="annotated training images")
    p.add_argument("--num-val", type=int, default=120, help="annotated validation images")
    p.add_argument("--size", type=int, default=112, help="image width in pixels (heights 0.75-1 of it)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="drawing processes")
    args = p.parse_args(argv)
    counts = make_synthetic_coco(args.out, args.num_train, args.num_val, args.size, args.seed, workers=args.workers)
    print(f"wrote {args.out}: " + ", ".join(f"{s} {n} images" for s, n in counts.items())
          + f" (each with {len(EXTRA_IMAGES)} that have no object); convert with "
            f"python tools/convert_coco.py --root {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
