"""Check a file list and every file it names before a run: prints each problem, exit 2 if any.

    python tools/check_data.py --root data --list data/train_augvoc.txt
    python tools/check_data.py --root data --list data/test.txt --no-masks
    python tools/check_data.py --dataset coco --root data/coco --list data/coco/train_coco.txt

Checks that the root and list exist, every line is well formed, every image and mask exists and decodes, masks
are palette/grey PNGs holding only 0..20 (0..80 with --dataset coco) and 255 with at least one foreground class, and image and mask sizes
agree. Paths in the list are relative to --root, as in training (DATASET.ROOT) and inference (TEST.DATA_ROOT).
"""
from __future__ import annotations

import argparse

from datasets.checks import check_file_list
from datasets.filelists import parse_file_list
from datasets.info import DATASETS, get_dataset
from utils.errors import UserError, run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a file list and the images and masks it names")
    p.add_argument("--root", required=True, help="data root the list's paths are relative to")
    p.add_argument("--list", required=True, help="file list ('<image> <mask>' lines, or '<image>' with --no-masks)")
    p.add_argument("--no-masks", action="store_true", help="the list has image paths only (like test.txt)")
    p.add_argument("--limit", type=int, default=20, help="stop after this many problems")
    p.add_argument("--dataset", default="pascal_voc",
                   help=f"whose classes the masks hold: {', '.join(DATASETS)} (default pascal_voc)")
    args = p.parse_args(argv)
    info = get_dataset(args.dataset)
    if args.limit < 1:
        raise UserError(f"--limit {args.limit} must be at least 1 (the number of problems reported before stopping)")
    problems = check_file_list(args.list, args.root, need_masks=not args.no_masks, limit=args.limit,
                               num_classes=info.num_classes)
    if problems:
        raise UserError("\n".join(problems))
    entries = parse_file_list(args.list, args.root, need_masks=not args.no_masks)
    n_masks = sum(m is not None for _, _, m in entries)
    print(f"OK: {args.list}: {len(entries)} images and {n_masks} masks under {args.root} are readable"
          + (f", masks hold 0..{info.num_classes - 1} and 255, sizes agree" if n_masks else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
