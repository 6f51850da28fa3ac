"""MS COCO 2014: the dataset description, tools/convert_coco.py on hand-made annotations (overlaps, crowd, every
segmentation format, resuming, bad files), and the README's COCO steps end to end on the synthetic COCO layout:
make_synthetic_coco -> convert_coco -> check_data -> launch/run_coco_resnet38.sh -> eval_pseudo / eval_cam ->
launch/infer_val.sh (CRF) -> launch/eval_seg.sh, all with DATASET coco."""
from __future__ import annotations

import glob
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.coco import CATEGORIES, CLASS_NAMES
from datasets.info import COCO, PASCAL_VOC, get_dataset
from datasets.voc import CLASS_NAMES as VOC_NAMES
from tests.helpers import EXIT_USER_ERROR, TINY_INFER_SET, files_under, run_script
from tests.train_helpers import TINY_SETS, env
from utils.config import load_cfg
from utils.errors import UserError
from utils.metrics import format_scores, scores_from_confusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 6, 8  # the hand-made image


def test_descriptions_hold_the_voc_constants_and_the_81_coco_classes():
    assert PASCAL_VOC.class_names == VOC_NAMES[:21] and PASCAL_VOC.num_classes == 21 and PASCAL_VOC.num_fg == 20
    assert COCO.num_classes == 81 and COCO.class_names[0] == "background"
    # category ids sorted ascending -> 1..80: person (1) is 1, toothbrush (90) is 80, tv (72) is 63
    assert COCO.class_names[1] == "person" and COCO.class_names[80] == "toothbrush" and CLASS_NAMES[63] == "tv"
    assert [c for c, _ in CATEGORIES] == sorted(c for c, _ in CATEGORIES) and len(CATEGORIES) == 80
    with pytest.raises(UserError, match="--dataset is 'cityscapes'; use one of pascal_voc, coco"):
        get_dataset("cityscapes")
    cfg = load_cfg(os.path.join(ROOT, "configs", "voc_resnet38.yaml"))
    with pytest.raises(UserError, match="TEST.NUM_CLASSES is 21, but --dataset coco has 81 classes"):
        COCO.check_num_classes(cfg)
    for backbone in ("resnet38", "resnet50", "resnet101", "vgg16"):
        COCO.check_num_classes(load_cfg(os.path.join(ROOT, "configs", f"coco_{backbone}.yaml")))


def test_81_class_table_keeps_the_format_and_widens_only_the_name_column():
    g = CLASS_NAMES.index("baseball glove")  # the longest name, 14 characters
    conf = np.zeros((81, 81), dtype=np.int64)
    conf[0, 0], conf[g, g], conf[g, 0] = 10, 3, 1
    lines = format_scores(scores_from_confusion(conf), COCO.class_names)
    assert len(lines) == 2 + 81 + 6
    assert lines[0] == "         Class |     # |   IoU |    Pr |    Re" and lines[1] == lines[83] == "-" * 46
    assert lines[2 + g] == "baseball glove |     4 |  75.0 | 100.0 |  75.0"
    assert lines[-3] == "With background: "  # the 81-class mean under it
    assert lines[-2].startswith(f"mIoU: {100 * (10 / 11 + 0.75) / 81:.2f}\t  Pr: ")


# ------------------------------------------------------------------------------------------------ conversion

def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _write_hand_tree(root: str) -> np.ndarray:
    """Three images: 1 with overlapping instances and crowd, 2 without annotations, 3 with a crowd region only;
    returns the mask the conversion must write for image 1."""
    os.makedirs(os.path.join(root, "train2014"))
    os.makedirs(os.path.join(root, "annotations"))
    for i in (1, 2, 3):
        Image.new("RGB", (W, H), (i, 0, 0)).save(os.path.join(root, "train2014", f"COCO_train2014_{i:012d}.jpg"))
    car, dog, cat, bird, person = 3, 18, 17, 16, 1  # category ids -> classes 3, 17, 16, 15, 1
    big = _box(0, 6, 0, 5)  # 30 px, car
    small = _box(1, 3, 1, 3)  # 4 px inside it, dog: on top although annotated first
    crowd = _box(4, 6, 3, 8)  # crowd over the car's corner and background
    left, right = _box(3, 4, 4, 7), _box(3, 4, 5, 8)  # two 3-px instances overlapping at x 5..6
    polygon = [[6.0, 0.0, 8.0, 0.0, 8.0, 2.0, 6.0, 2.0]]  # a person outlined by a polygon
    anns = [
        (1, 1, dog, _rle(small), 0),
        (2, 1, car, _rle(big), 0),
        (3, 1, person, {"size": [H, W], "counts": _uncompressed(crowd)}, 1),
        (4, 1, bird, _rle(right), 0),  # equal sizes: the higher id (5, cat) ends on top
        (5, 1, cat, _rle(left), 0),
        (6, 1, person, polygon, 0),
        (7, 3, person, {"size": [H, W], "counts": _uncompressed(crowd)}, 1),
    ]
    data = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W}
                       for i in (1, 2, 3)],
            "annotations": [{"id": a, "image_id": im, "category_id": c, "segmentation": s, "iscrowd": k,
                             "area": 0.0, "bbox": [0, 0, 1, 1]} for a, im, c, s, k in anns],
            "categories": [{"id": c, "name": n, "supercategory": ""} for c, n in CATEGORIES]}
    with open(os.path.join(root, "annotations", "instances_train2014.json"), "w") as f:
        json.dump(data, f)
    expected = np.zeros((H, W), dtype=np.uint8)
    expected[crowd] = 255
    expected[big] = 3
    expected[small] = 17
    expected[right] = 15
    expected[left] = 16  # cat (id 5) over bird (id 4) where they overlap
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W))).astype(bool)
    assert poly.sum() >= 4 and not (poly & (big | left | right | crowd)).any()
    expected[poly] = 1
    return expected


def _uncompressed(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a run of zeros, written out by hand for these boxes."""
    flat = mask.ravel(order="F").astype(int)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    return counts + [run]


def test_conversion_overlaps_crowd_formats_lists_and_resume(tmp_path):
    root = str(tmp_path)
    expected = _write_hand_tree(root)
    proc = run_script("tools/convert_coco.py", "--root", root, "--splits", "train2014")
    assert proc.returncode == 0, proc.stderr
    assert "train2014: 3 images, 2 with annotations, 1 with a foreground pixel listed" in proc.stdout
    assert "2 masks written, 0 there already" in proc.stdout
    mask_path = os.path.join(root, "masks", "train2014", "COCO_train2014_000000000001.png")
    img = Image.open(mask_path)
    assert img.mode == "P" and np.array_equal(np.asarray(img), expected)
    crowd_only = np.asarray(Image.open(os.path.join(root, "masks", "train2014", "COCO_train2014_000000000003.png")))
    assert set(np.unique(crowd_only)) == {0, 255}
    with open(os.path.join(root, "train_coco.txt")) as f:
        assert f.read() == ("train2014/COCO_train2014_000000000001.jpg "
                            "masks/train2014/COCO_train2014_000000000001.png\n")
    # resumable: finished masks are kept, a missing one is converted again
    before = files_under(os.path.join(root, "masks"))
    os.remove(os.path.join(root, "masks", "train2014", "COCO_train2014_000000000003.png"))
    again = run_script("tools/convert_coco.py", "--root", root, "--splits", "train2014", "--workers", "2")
    assert again.returncode == 0 and "1 masks written, 1 there already" in again.stdout, again.stderr
    assert files_under(os.path.join(root, "masks"))[mask_path] == before[mask_path]
    assert np.array_equal(np.asarray(Image.open(mask_path)), expected)


@pytest.mark.parametrize("case", ["missing", "not_json", "no_lists", "categories", "orphan", "bad_polygon"])
def test_conversion_bad_annotation_file_is_one_error_line(tmp_path, case):
    root = str(tmp_path)
    _write_hand_tree(root)
    path = os.path.join(root, "annotations", "instances_train2014.json")
    with open(path) as f:
        data = json.load(f)
    if case == "missing":
        os.remove(path)
    elif case == "not_json":
        with open(path, "w") as f:
            f.write('{"images": [')
    else:
        if case == "no_lists":
            del data["annotations"]
        elif case == "categories":
            data["categories"] = data["categories"][:79]
        elif case == "orphan":
            data["annotations"][0]["image_id"] = 99
        elif case == "bad_polygon":
            data["annotations"][5]["segmentation"] = [[1.0, 2.0]]
        with open(path, "w") as f:
            json.dump(data, f)
    proc = run_script("tools/convert_coco.py", "--root", root, "--splits", "train2014")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == EXIT_USER_ERROR and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    word = {"missing": "not found", "bad_polygon": "annotation 6: a polygon needs"}.get(case, "malformed")
    assert word in lines[0], lines[0]
    assert ("COCO_train2014_000000000001.png" if case == "bad_polygon" else "instances_train2014.json") in lines[0]
    assert not os.path.exists(os.path.join(root, "train_coco.txt"))


# ------------------------------------------------------------------------------------------------ end to end

def _bash(script: str, cwd: str, **variables: str) -> subprocess.CompletedProcess:
    e = env()
    e.update(FOREGROUND="1", **variables)
    return subprocess.run(["bash", os.path.join(ROOT, "launch", script)], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=600)


def test_readme_coco_steps_end_to_end(tmp_path):
    data, out = str(tmp_path / "coco"), str(tmp_path / "out")
    made = run_script("tools/make_synthetic_coco.py", "--out", data, "--num-train", "8", "--num-val", "5",
                      "--size", "64", "--workers", "1")
    assert made.returncode == 0, made.stderr
    conv = run_script("tools/convert_coco.py", "--root", data)
    assert conv.returncode == 0, conv.stderr
    # each split's image without annotations and its crowd-only image are left out
    assert "train2014: 10 images, 9 with annotations, 8 with a foreground pixel" in conv.stdout
    assert "val2014: 7 images, 6 with annotations, 5 with a foreground pixel" in conv.stdout
    values = {split: set() for split in ("train2014", "val2014")}
    for split in values:
        for p in glob.glob(os.path.join(data, "masks", split, "*.png")):
            values[split] |= set(np.unique(np.asarray(Image.open(p))).tolist())
    # the synthetic classes bird, car, cat, dog, person, tv as COCO classes; crowd regions 255; both splits hold
    # tv (63), a class index that VOC's 21 classes would reject
    assert values["train2014"] | values["val2014"] == {0, 15, 3, 16, 17, 1, 63, 255} and all(
        63 in v for v in values.values())
    for name in ("train_coco.txt", "val_coco.txt"):
        check = run_script("tools/check_data.py", "--dataset", "coco", "--root", data, "--list",
                           os.path.join(data, name))
        assert check.returncode == 0 and "masks hold 0..80 and 255" in check.stdout, check.stderr

    # training: 2 epochs of 2 iterations, validation at epochs 0 and 2
    sets = " ".join([*TINY_SETS, "DATASET.ROOT", data, "TRAIN.NUM_EPOCHS", "2", "TRAIN.MAX_ITERS", "2"])
    train = _bash("run_coco_resnet38.sh", str(tmp_path), EXP="t", RUN_ID="r", LOGDIR=os.path.join(out, "logs"),
                  SNAPSHOT_DIR=os.path.join(out, "snapshots"), EXTRA_ARGS=f"--workers 0 --set {sets}")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "--dataset coco --cfg configs/coco_resnet38.yaml" in train.stdout.splitlines()[0]
    assert "(all 81 classes)" in train.stdout
    run_logs = os.path.join(out, "logs", "coco", "t", "r")
    found = {k for k in scalars_of(run_logs)}
    assert "val/masks/miou81_cam" in found and "val/masks/miou21_cam" not in found
    assert any(k.startswith("val/") and k.endswith("_person/AP") for k in found)
    snaps = sorted(glob.glob(os.path.join(out, "snapshots", "coco", "t", "r", "model_enc_e*.pth")))
    assert snaps
    suffix = os.path.basename(snaps[-1])[len("model_enc_"):-len(".pth")]

    # the masks and pseudo labels of the trained model against the GT of the validation list
    pseudo = run_script("tools/eval_pseudo.py", "--dataset", "coco", "--cfg", "configs/coco_resnet38.yaml",
                        "--set", *TINY_SETS, "--snapshot", snaps[-1], "--root", data, "--list",
                        os.path.join(data, "val_coco.txt"), "--out", os.path.join(out, "pseudo"), "--device", "cpu",
                        "--no-png")
    assert pseudo.returncode == 0, pseudo.stderr[-3000:]
    with open(os.path.join(out, "pseudo", "pseudo.json")) as f:
        assert len(json.load(f)["cam"]["iou"]) == 81
    cam = run_script("tools/eval_cam.py", "--dataset", "coco", "--cfg", "configs/coco_resnet38.yaml",
                     "--set", *TINY_SETS, "--snapshot", snaps[-1], "--root", data, "--list",
                     os.path.join(data, "val_coco.txt"), "--out", os.path.join(out, "cam"), "--device", "cpu",
                     "--thresholds", "0.2", "0.5")
    assert cam.returncode == 0 and " over 81)" in cam.stdout, cam.stderr[-3000:]
    with open(os.path.join(out, "cam", "eval_cam.json")) as f:
        sweep = json.load(f)["cam"]
    assert len(sweep["miou_81"]) == 2 and len(sweep["best_iou"]) == 81

    # inference with the CRF, then the evaluation of both mask sets
    # EXTRA_ARGS is split on spaces: the lists of TINY_INFER_SET written without them
    infer_sets = " ".join([v.replace(" ", "") for v in TINY_INFER_SET] + ["TEST.DATA_ROOT", data])
    infer = _bash("infer_val.sh", str(tmp_path), DATASET="coco", EXP="t", RUN_ID="r", SNAPSHOT=suffix, SAVE_ID="r",
                  OUTPUT_DIR=os.path.join(out, "results"), FILELIST=os.path.join(data, "val_coco.txt"),
                  NUM_THREADS="1", EXTRA_ARGS=f"--snapshot-dir {os.path.join(out, 'snapshots')} --logdir "
                                              f"{os.path.join(out, 'logs')} --set {infer_sets}")
    assert infer.returncode == 0, infer.stdout[-3000:] + infer.stderr[-3000:]
    save_dir = os.path.join(out, "results", "coco", "t", "r", "val_coco")
    preds = sorted(glob.glob(os.path.join(save_dir, "crf", "*.png")))
    assert len(preds) == 5 and all(np.asarray(Image.open(p)).max() <= 80 for p in preds)

    ev = _bash("eval_seg.sh", str(tmp_path), DATASET="coco", EXP="t", RUN_ID="r", DATA_ROOT=data,
               OUTPUT_DIR=os.path.join(out, "results"), FILELIST=os.path.join(data, "val_coco.txt"), WORKERS="1")
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    for d in (save_dir, os.path.join(save_dir, "crf")):
        report = open(f"{d}.eval").read().splitlines()
        rows = report[report.index("# of images: 5") + 3:][:81]
        assert [r.split("|")[0].strip() for r in rows] == list(CLASS_NAMES)
        assert "With background: " in report
        with open(os.path.join(d, "eval.json")) as f:
            result = json.load(f)
        assert result["dataset"] == "coco" and len(result["iou"]) == 81 and "miou_81" in result
        assert np.asarray(result["confusion"]).shape == (81, 81)
        assert os.path.isfile(os.path.join(d, "confusion.png")) and os.path.isfile(os.path.join(d, "iou.png"))

    # a VOC config with --dataset coco: one line naming the key and the fix, nothing written
    before = files_under(out)
    wrong = run_script("train.py", "--dataset", "coco", "--cfg", "configs/voc_resnet38.yaml", "--run", "w",
                       "--logdir", os.path.join(out, "logs"), "--snapshot-dir", os.path.join(out, "snapshots"),
                       "--set", "DATASET.ROOT", data, "DATASET.TRAIN_LIST", "train_coco.txt",
                       "DATASET.VAL_LIST", "val_coco.txt", "TRAIN.VAL_TRAIN_VOC", "False", "TRAIN.BATCH_SIZE", "4")
    lines = [ln for ln in wrong.stderr.splitlines() if ln.strip()]
    assert wrong.returncode == EXIT_USER_ERROR and len(lines) == 1, wrong.stderr
    assert "TEST.NUM_CLASSES is 21, but --dataset coco has 81 classes" in lines[0]
    assert files_under(out) == before


def scalars_of(run_logs: str) -> dict:
    from utils.visualize import read_events

    return {f"{w}/{tag}": v for w in ("train", "val") for tag, v in read_events(os.path.join(run_logs, w)).items()}
