"""Up-front data checks: find every problem of a file list before a long run starts, one line each.

A run that stops three hours in because one image of 10582 is truncated costs the user the day; these checks
decode every listed image and mask once and report all problems together (up to a limit), each naming the file
and the fix.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from datasets.filelists import IMAGE_ERRORS, check_mask_values, image_id, load_image, mask_labels, parse_file_list
from datasets.voc import NUM_CLASSES
from utils.errors import UserError

CHECK_THREADS = 4  # PIL decodes without the GIL, so threads overlap the decoding of several files


def _check_pair(n: int, image_path: str, mask_path: str | None, list_path: str, num_classes: int) -> list[str]:
    """Problems of the list entry on line ``n``."""
    where = f"file list {list_path} line {n}"
    problems = []
    size = None
    if not os.path.isfile(image_path):
        problems.append(f"{image_path} not found ({where}); restore the file or remove the line")
    else:
        try:
            size = load_image(image_path).size
        except IMAGE_ERRORS as e:
            problems.append(f"{image_path} is not a readable image ({e}) ({where}); "
                            f"replace the file or remove the line")
    if mask_path is None:
        return problems
    if not os.path.isfile(mask_path):
        problems.append(f"{mask_path} not found ({where}); restore the mask or remove the line")
        return problems
    try:
        with Image.open(mask_path) as m:
            m.load()
            mode, mask = m.mode, np.asarray(m)
    except IMAGE_ERRORS as e:
        problems.append(f"{mask_path} is not a readable PNG ({e}) ({where}); replace the mask or remove the line")
        return problems
    if mode not in ("P", "L"):
        problems.append(f"{mask_path} is a mode-{mode} image ({where}); masks are palette or greyscale PNGs of "
                        f"class indices (convert SBD .mat files with tools/convert_sbd.py)")
        return problems
    try:
        mask_labels(mask, num_classes)
    except ValueError as e:
        problems.append(f"{mask_path}: {e} ({where}); fix the mask or remove the line")
    if size is not None and size != (mask.shape[1], mask.shape[0]):
        problems.append(f"{image_path} is {size[0]}x{size[1]} but its mask {mask_path} is "
                        f"{mask.shape[1]}x{mask.shape[0]} ({where}); they must have the same size")
    return problems


def check_file_list(list_path: str, root: str, need_masks: bool, limit: int = 20,
                    num_classes: int = NUM_CLASSES) -> list[str]:
    """Every problem of a file list and its files, one line each (empty when all is well).

    Checks: the root and list exist, lines are well formed, every image and mask exists and decodes, masks are
    palette/grey PNGs with values 0..C-1 (0..20 for VOC) and 255 and at least one foreground class, image and mask
    sizes agree.
    At most ``limit`` problems are returned, then one line saying the check stopped.
    """
    try:
        entries = parse_file_list(list_path, root, need_masks)
    except UserError as e:
        return str(e).splitlines()
    problems: list[str] = []
    # in chunks, so that a list full of problems stops early instead of decoding everything
    chunk = max(limit, 64)
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for start in range(0, len(entries), chunk):
            results = pool.map(lambda e: _check_pair(*e, list_path, num_classes), entries[start:start + chunk])
            for found in results:
                problems.extend(found)
            if len(problems) >= limit:
                return problems[:limit] + [f"stopped after {limit} problems in {list_path}; fix these and check again"]
    return problems


def _check_replacement(n: int, image_path: str, mask_dir: str, list_path: str, num_classes: int) -> list[str]:
    """Problems of the replacement mask of the list entry on line ``n`` (the image itself is checked with the list)."""
    mask_path = os.path.join(mask_dir, image_id(image_path) + ".png")
    where = f"for {image_path}, file list {list_path} line {n}"
    if not os.path.isfile(mask_path):
        return [f"{mask_path} not found ({where}); write masks for the whole list into DATASET.MASK_DIR "
                "(infer_val.py --mask-output-dir) or remove the line"]
    try:
        with Image.open(mask_path) as m:
            m.load()
            mode, mask = m.mode, np.asarray(m)
        check_mask_values(mask, num_classes)
    except IMAGE_ERRORS as e:
        return [f"{mask_path} is not a mask of class indices ({e}) ({where}); write it again"]
    if mode not in ("P", "L"):
        return [f"{mask_path} is a mode-{mode} image ({where}); masks are palette or greyscale PNGs of class indices"]
    try:
        with Image.open(image_path) as img:
            size = img.size
    except (FileNotFoundError, *IMAGE_ERRORS):
        return []  # reported by the list check
    if size != (mask.shape[1], mask.shape[0]):
        return [f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but {image_path} is {size[0]}x{size[1]} ({where}); "
                "they must have the same size"]
    return []


def check_mask_dir(list_path: str, root: str, mask_dir: str, limit: int = 20,
                   num_classes: int = NUM_CLASSES) -> list[str]:
    """Every problem of the masks ``<mask_dir>/<image id>.png`` that replace the masks of a file list
    (DATASET.MASK_DIR): one per listed image, a readable palette/grey PNG of values 0..20 and 255, of the image's
    size."""
    if not os.path.isdir(mask_dir):
        return [f"DATASET.MASK_DIR {mask_dir} is not a directory; give the folder of class-index PNGs "
                "(e.g. the --mask-output-dir of infer_val.py on the training list), or '' for the GT masks"]
    try:
        entries = parse_file_list(list_path, root, need_masks=True)
    except UserError:
        return []  # reported by the list check
    problems: list[str] = []
    chunk = max(limit, 64)
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for start in range(0, len(entries), chunk):
            for found in pool.map(lambda e: _check_replacement(e[0], e[1], mask_dir, list_path, num_classes),
                                  entries[start:start + chunk]):
                problems.extend(found)
            if len(problems) >= limit:
                return problems[:limit] + [f"stopped after {limit} problems in {mask_dir}; fix these and check again"]
    return problems
