"""Build the four file lists of SPEC 3.2 from a user's VOC2012 and SBD downloads.

    python tools/make_filelists.py --voc data/voc --sbd data/sbd [--voc-test data/voc_test] --out data

``--voc`` holds VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt);
``--sbd`` holds benchmark_RELEASE/dataset (img, cls_png from tools/convert_sbd.py, train.txt, val.txt);
``--voc-test`` (optional) holds the VOC2012 test images as VOCdevkit/VOC2012 with ImageSets/Segmentation/test.txt.
Without it, a test.txt split file inside --voc is used; without either, no test.txt is written.

Lists (paths relative to the data root, which holds voc/, sbd/ and voc_test/, e.g. as symlinks; SPEC 3.1):
* train_augvoc.txt = VOC train + SBD train + SBD val - VOC val; an id present in SBD uses the SBD pair
  (img/ + cls_png/), the others the VOC pair (JPEGImages/ + SegmentationClass/): 10252 + 330 = 10582 lines for
  the official downloads;
* train_voc.txt = VOC train (1464), sorted; val_voc.txt = VOC val (1449); test.txt = VOC test images (1456),
  image path only.
"""
from __future__ import annotations

import argparse
import os

from utils.errors import UserError, run_main
from utils.fileio import write_text

VOC_REL = "voc/VOCdevkit/VOC2012"
SBD_REL = "sbd/benchmark_RELEASE/dataset"
VOC_TEST_REL = "voc_test/VOCdevkit/VOC2012"
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
SBD_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
VOC_TEST_URL = "http://host.robots.ox.ac.uk:8080/ (VOC2012 test data, after registration)"
ORIGINAL_COUNTS = {"train_augvoc.txt": 10582, "train_voc.txt": 1464, "val_voc.txt": 1449, "test.txt": 1456}
MAX_REPORTED = 5


def read_ids(path: str, what: str) -> list[str]:
    """Image ids of a split file (one per line, first column), in file order without duplicates."""
    try:
        with open(path) as f:
            ids = [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        raise UserError(f"split file {path} not found; {what}") from None
    return list(dict.fromkeys(ids))


def _need_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a directory; {what}")
    return path


def _check_files(paths: list[str], what: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - MAX_REPORTED} more)" if len(missing) > MAX_REPORTED else ""
        raise UserError(f"{len(missing)} {what} missing, e.g. {', '.join(missing[:MAX_REPORTED])}{more}")


def build_lists(voc: str, sbd: str, voc_test: str | None = None) -> dict[str, list[str]]:
    """The lines of each list file (without newlines), checked against the files on disk."""
    voc_dir = _need_dir(os.path.join(voc, "VOCdevkit", "VOC2012"),
                        f"--voc must hold VOCdevkit/VOC2012: download {VOC_URL} and extract it into {voc}")
    sbd_dir = _need_dir(os.path.join(sbd, "benchmark_RELEASE", "dataset"),
                        f"--sbd must hold benchmark_RELEASE/dataset: download {SBD_URL} and extract it into {sbd}")
    seg = os.path.join(voc_dir, "ImageSets", "Segmentation")
    voc_train = read_ids(os.path.join(seg, "train.txt"), f"--voc must be the VOC2012 trainval download ({VOC_URL})")
    voc_val = read_ids(os.path.join(seg, "val.txt"), f"--voc must be the VOC2012 trainval download ({VOC_URL})")
    sbd_ids = read_ids(os.path.join(sbd_dir, "train.txt"), f"--sbd must be the SBD download ({SBD_URL})") + \
        read_ids(os.path.join(sbd_dir, "val.txt"), f"--sbd must be the SBD download ({SBD_URL})")
    _need_dir(os.path.join(sbd_dir, "cls_png"),
              f"convert the SBD annotations first: python tools/convert_sbd.py --inp {sbd_dir}/cls "
              f"--out {sbd_dir}/cls_png")

    val_set, sbd_set = set(voc_val), set(sbd_ids)
    aug_sbd = sorted(i for i in sbd_set if i not in val_set)
    aug_voc = sorted(i for i in voc_train if i not in sbd_set and i not in val_set)
    _check_files([os.path.join(sbd_dir, "img", i + ".jpg") for i in aug_sbd], "SBD images (img/<id>.jpg) are")
    _check_files([os.path.join(sbd_dir, "cls_png", i + ".png") for i in aug_sbd],
                 f"SBD masks (cls_png/<id>.png) are; run python tools/convert_sbd.py --inp {sbd_dir}/cls "
                 f"--out {sbd_dir}/cls_png;")
    voc_ids = sorted(set(voc_train) | set(voc_val))
    _check_files([os.path.join(voc_dir, "JPEGImages", i + ".jpg") for i in voc_ids], "VOC images (JPEGImages) are")
    _check_files([os.path.join(voc_dir, "SegmentationClass", i + ".png") for i in voc_ids],
                 "VOC masks (SegmentationClass) are")

    def voc_pair(i: str) -> str:
        return f"{VOC_REL}/JPEGImages/{i}.jpg {VOC_REL}/SegmentationClass/{i}.png"

    lists = {
        "train_augvoc.txt": [f"{SBD_REL}/img/{i}.jpg {SBD_REL}/cls_png/{i}.png" for i in aug_sbd]
        + [voc_pair(i) for i in aug_voc],
        "train_voc.txt": [voc_pair(i) for i in sorted(voc_train)],
        "val_voc.txt": [voc_pair(i) for i in voc_val],
    }
    if voc_test is not None:
        test_dir = _need_dir(os.path.join(voc_test, "VOCdevkit", "VOC2012"),
                             f"--voc-test must hold VOCdevkit/VOC2012 of the VOC2012 test download ({VOC_TEST_URL})")
        test_ids = read_ids(os.path.join(test_dir, "ImageSets", "Segmentation", "test.txt"),
                            f"--voc-test must be the VOC2012 test download ({VOC_TEST_URL})")
        rel = VOC_TEST_REL
    elif os.path.isfile(os.path.join(seg, "test.txt")):
        test_dir, test_ids, rel = voc_dir, read_ids(os.path.join(seg, "test.txt"), ""), VOC_REL
    else:
        return lists
    _check_files([os.path.join(test_dir, "JPEGImages", i + ".jpg") for i in test_ids], "VOC test images are")
    lists["test.txt"] = [f"{rel}/JPEGImages/{i}.jpg" for i in test_ids]
    return lists


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build train_augvoc.txt, train_voc.txt, val_voc.txt and test.txt "
                                            "from the VOC2012 and SBD downloads")
    p.add_argument("--voc", required=True, help="directory holding VOCdevkit/VOC2012 (the list prefix voc/)")
    p.add_argument("--sbd", required=True, help="directory holding benchmark_RELEASE/dataset (the list prefix sbd/)")
    p.add_argument("--voc-test", default=None, help="directory holding the VOC2012 test VOCdevkit (prefix voc_test/)")
    p.add_argument("--out", required=True, help="data root to write the lists into (e.g. data)")
    args = p.parse_args(argv)
    lists = build_lists(args.voc, args.sbd, args.voc_test)
    for name, lines in lists.items():
        write_text(os.path.join(args.out, name), "".join(line + "\n" for line in lines))
        n_sbd = sum(line.startswith("sbd/") for line in lines)
        detail = f" ({n_sbd} SBD + {len(lines) - n_sbd} VOC)" if name == "train_augvoc.txt" else ""
        print(f"{os.path.join(args.out, name)}: {len(lines)} lines{detail} "
              f"(the original's: {ORIGINAL_COUNTS[name]})")
    if "test.txt" not in lists:
        print("no test.txt: pass --voc-test with the VOC2012 test download to write it")
    # the lists' paths start with voc/, sbd/, voc_test/: the data root must hold these (links are fine)
    for prefix, src in (("voc", args.voc), ("sbd", args.sbd), ("voc_test", args.voc_test)):
        target = os.path.join(args.out, prefix)
        if src is not None and os.path.realpath(target) != os.path.realpath(src):
            print(f"note: the lists expect {target} to be {src}; link it: ln -s {os.path.abspath(src)} {target}")
    return 0


if __name__ == "__main__":
    run_main(main)
