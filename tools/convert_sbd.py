"""Convert SBD class annotations (.mat) to PNG masks (SPEC 3.7).

Run inside data/sbd/benchmark_RELEASE so that the output matches the paths of train_augvoc.txt:

    cd data/sbd/benchmark_RELEASE && python <repo>/tools/convert_sbd.py
    # or, from the repository root:
    python tools/convert_sbd.py --inp data/sbd/benchmark_RELEASE/dataset/cls \\
        --out data/sbd/benchmark_RELEASE/dataset/cls_png

Every ``<id>.mat`` holds a struct ``GTcls`` whose field ``Segmentation`` is the class-index map (values 0..20);
it is written unchanged as a single-channel 8-bit PNG (mode "L", no palette), atomically.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from PIL import Image
from tqdm import tqdm

from utils.errors import UserError, run_main
from utils.fileio import check_writable_dir, save_image


def read_sbd_mat(path: str) -> np.ndarray:
    """[H, W] uint8 class indices of an SBD ``cls/<id>.mat`` file; UserError naming the file if it is not one."""
    try:
        mat = scipy.io.loadmat(path)
        seg = np.asarray(mat["GTcls"]["Segmentation"][0, 0])
    # MatReadError: a truncated or foreign file (it derives from Exception only)
    except (MatReadError, KeyError, ValueError, TypeError, IndexError, OSError, NotImplementedError) as e:
        raise UserError(f"{path} is not a readable SBD class annotation (GTcls.Segmentation): {e}; "
                        f"re-extract it from benchmark.tgz") from None
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer) or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise UserError(f"{path}: GTcls.Segmentation is not a 2-D map of class indices 0..255 "
                        f"(shape {seg.shape}, dtype {seg.dtype}); re-extract it from benchmark.tgz")
    return seg.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert SBD .mat class annotations to PNG")
    parser.add_argument("--inp", type=str, default="./dataset/cls/", help="directory of the .mat files")
    parser.add_argument("--out", type=str, default="./dataset/cls_png/", help="output directory of the PNGs")
    args = parser.parse_args(argv)
    if not args.inp.endswith("/"):
        args.inp += "/"
    if not os.path.isdir(args.inp):
        raise UserError(f"input directory {args.inp} not found; pass --inp <benchmark_RELEASE>/dataset/cls/ "
                        f"or run inside benchmark_RELEASE")
    check_writable_dir(args.out, "output directory --out")
    files = sorted(glob.glob(args.inp + "*.mat"))
    print("Found {} files".format(len(files)))
    if not files:
        return 0
    # the bar only on a terminal: a log or a caller reading stderr gets the messages alone
    for path in tqdm(files, disable=None):
        seg = read_sbd_mat(path)
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        save_image(Image.fromarray(seg, "L"), os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    run_main(main)
