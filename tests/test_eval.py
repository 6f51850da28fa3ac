"""eval_seg.py as a user runs it: hand-computed scores, the original's output, problems, oracle, torchrun, launch script."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bench.baselines.eval_loop import confusion_loop
from datasets.voc import PALETTE_FLAT
from utils import mask_eval
from utils.metrics import confusion_and_misses, confusion_matrix, scores_from_confusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GT_DIR = "voc/VOCdevkit/VOC2012/SegmentationClass"

# Three tiny images; every number below is derived by hand from these arrays.
GT = {
    "a": [[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 2, 2], [0, 0, 2, 2]],
    "b": [[0, 1, 1], [255, 0, 0]],
    "c": [[2, 2, 2]],
}
PRED = {
    "a": [[0, 1, 1, 1], [0, 0, 1, 0], [1, 2, 2, 2], [0, 0, 0, 2]],  # row 2, cols 0-1 lie on GT 255: ignored
    "b": [[0, 0, 1], [20, 0, 3]],  # the 20 lies on GT 255: ignored
    "c": [[0, 0, 2]],
}
# a: [0,0]=5 [0,1]=1 [1,0]=1 [1,1]=3 [2,0]=1 [2,2]=3;  b: [0,0]=2 [0,3]=1 [1,0]=1 [1,1]=1;  c: [2,0]=2 [2,2]=1
HAND_CONF = {(0, 0): 7, (0, 1): 1, (0, 3): 1, (1, 0): 2, (1, 1): 4, (2, 0): 3, (2, 2): 4}
# class 0: TP 7 FN 2 FP 5; class 1: TP 4 FN 2 FP 1; class 2: TP 4 FN 3 FP 0; class 3: TP 0 FN 0 FP 1
# eval_seg.py's stdout for the three images, byte for byte: the original's lines (its eval_seg.py prints the
# summaries with tabs, "With background: " on a line of its own with a trailing space), then ours
HAND_REPORT = """\
# of images: 3
       Class |     # |   IoU |    Pr |    Re
--------------------------------------------
  background |     9 |  50.0 |  58.3 |  77.8
   aeroplane |     6 |  57.1 |  80.0 |  66.7
     bicycle |     7 |  57.1 | 100.0 |  57.1
        bird |     0 |   0.0 |   0.0 |   0.0
        boat |     0 |   0.0 |   0.0 |   0.0
      bottle |     0 |   0.0 |   0.0 |   0.0
         bus |     0 |   0.0 |   0.0 |   0.0
         car |     0 |   0.0 |   0.0 |   0.0
         cat |     0 |   0.0 |   0.0 |   0.0
       chair |     0 |   0.0 |   0.0 |   0.0
         cow |     0 |   0.0 |   0.0 |   0.0
 diningtable |     0 |   0.0 |   0.0 |   0.0
         dog |     0 |   0.0 |   0.0 |   0.0
       horse |     0 |   0.0 |   0.0 |   0.0
   motorbike |     0 |   0.0 |   0.0 |   0.0
      person |     0 |   0.0 |   0.0 |   0.0
potted-plant |     0 |   0.0 |   0.0 |   0.0
       sheep |     0 |   0.0 |   0.0 |   0.0
        sofa |     0 |   0.0 |   0.0 |   0.0
       train |     0 |   0.0 |   0.0 |   0.0
  tv/monitor |     0 |   0.0 |   0.0 |   0.0
--------------------------------------------
mIoU: 5.71\t  Pr: 9.00\t  Re: 6.19
--------------------------------------------
With background: 
mIoU: 7.82\t  Pr: 11.35\t  Re: 9.60
Over classes present in GT or prediction: mIoU: 41.07  Pr: 59.58  Re: 50.40
Prediction pixels without a class (255): 0 (0 on labelled GT pixels, scored as misses)
"""
# 20 foreground classes: IoU (4/7 + 4/7) / 20, Pr (4/5 + 1) / 20, Re (4/6 + 4/7) / 20; 21 classes: IoU
# (7/14 + 4/7 + 4/7) / 21, Pr (7/12 + 4/5 + 1) / 21, Re (7/9 + 4/6 + 4/7) / 21; over classes 0..3 (class 3 is
# predicted once): the same sums / 4
HAND_SUMMARY = HAND_REPORT.splitlines()[-7:]
# per image and GT class TP - FN - FP: a: bg 5-1-2, aeroplane 3-1-1, bicycle 3-1-0; b: bg 2-1-1, aeroplane 1-1-0;
# c: bicycle 1-2-0
HAND_LOG_HEAD = ["background", "00002 | a", "00000 | b", "aeroplane", "00001 | a", "00000 | b",
                 "bicycle", "00002 | a", "-0001 | c", "bird", "boat"]


def _png(path, arr, palette: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette(PALETTE_FLAT)
    img.save(path)


def make_tree(root, gt=GT, pred=PRED, masks_sub="masks") -> dict:
    """root/data/<GT_DIR>/<id>.png (palette), root/<masks_sub>/<id>.png (grey), root/data/val.txt."""
    data = os.path.join(root, "data")
    masks = os.path.join(root, masks_sub)
    os.makedirs(masks, exist_ok=True)
    lines = []
    for name, arr in gt.items():
        _png(os.path.join(data, GT_DIR, name + ".png"), arr, palette=True)
        lines.append(f"voc/VOCdevkit/VOC2012/JPEGImages/{name}.jpg {GT_DIR}/{name}.png")
    for name, arr in pred.items():
        _png(os.path.join(masks, name + ".png"), arr, palette=False)
    filelist = os.path.join(data, "val.txt")
    with open(filelist, "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"data": data, "masks": masks, "filelist": filelist, "log": os.path.join(root, "scores.log")}


def run_eval(tree: dict, *extra: str, masks: bool = True) -> subprocess.CompletedProcess:
    args = ["--data", tree["data"], "--filelist", tree["filelist"], "--log-scores", tree["log"]]
    if masks:
        args += ["--masks", tree["masks"]]
    return subprocess.run([sys.executable, "eval_seg.py", *args, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def assert_user_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def tree(tmp_path):
    return make_tree(str(tmp_path))


def test_confusion_matrix_ignores_255_and_rejects_bad_predictions():
    gt = np.array([[0, 255], [20, 1]], dtype=np.uint8)
    pred = np.array([[1, 20], [20, 1]], dtype=np.uint8)
    conf = confusion_matrix(gt, pred)
    assert conf.dtype == np.int64 and conf.sum() == 3
    assert conf[0, 1] == 1 and conf[20, 20] == 1 and conf[1, 1] == 1
    with pytest.raises(ValueError):
        confusion_matrix(gt, np.full_like(pred, 21))
    s = scores_from_confusion(conf)
    assert s["iou"][1] == pytest.approx(0.5) and s["iou"][0] == 0.0 and s["iou_defined"][:3] == [True, True, False]


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_confusion_matrix_equals_the_per_pixel_loop(dtype):
    rng = np.random.default_rng(3)
    gt = rng.choice([0, 4, 20, 255], size=(19, 23)).astype(dtype)
    pred = rng.integers(0, 21, size=(19, 23)).astype(dtype)
    assert np.array_equal(confusion_matrix(gt, pred), confusion_loop(gt, pred).astype(np.int64))


def test_prediction_255_is_no_class_a_miss_on_labelled_gt_and_ignored_on_255():
    gt = np.array([[0, 1, 1], [255, 2, 1]], dtype=np.uint8)
    pred = np.array([[0, 255, 1], [255, 2, 255]], dtype=np.uint8)
    conf, misses = confusion_and_misses(gt, pred)
    # counted: (0,0), (1,1), (2,2); the two 255s on GT 1 are misses of class 1, the one on GT 255 is ignored
    assert conf.sum() == 3 and conf[0, 0] == conf[1, 1] == conf[2, 2] == 1
    assert misses.tolist() == [0, 2] + [0] * 19
    s = scores_from_confusion(conf, misses)
    # class 1: TP 1, FN 2 (the misses), FP 0 -> IoU 1/3, recall 1/3, precision 1; no class gains a false positive
    assert s["count"][:3] == [1, 3, 1]
    assert s["iou"][1] == pytest.approx(1 / 3) and s["recall"][1] == pytest.approx(1 / 3) and s["precision"][1] == 1
    assert s["iou"][0] == s["iou"][2] == pytest.approx(1.0)
    # GT scored against itself, its 255 pixels included: every class present scores 100%
    conf, misses = confusion_and_misses(gt, gt)
    assert misses.sum() == 0 and scores_from_confusion(conf, misses)["miou_present"] == pytest.approx(1.0)
    # any other value outside the classes stays an error
    for bad in (21, 254):
        with pytest.raises(ValueError):
            confusion_and_misses(gt, np.where(pred == 255, bad, pred).astype(np.uint8))


def test_hand_computed_report_log_json_figures(tree):
    proc = run_eval(tree, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HAND_REPORT

    with open(tree["log"]) as f:
        log = f.read().splitlines()
    assert log[:len(HAND_LOG_HEAD)] == HAND_LOG_HEAD
    assert log[-1] == "tv/monitor" and len(log) == 21 + 6  # 3 + 2 + 1 image-class scores

    with open(os.path.join(tree["masks"], "eval.json")) as f:
        result = json.load(f)
    expected = np.zeros((21, 21), dtype=np.int64)
    for (g, p), n in HAND_CONF.items():
        expected[g, p] = n
    assert np.array_equal(np.array(result["confusion"]), expected)
    assert result["num_images"] == 3 and result["count"][:3] == [9, 6, 7]
    assert result["miou_21"] == pytest.approx((7 / 14 + 4 / 7 + 4 / 7) / 21)
    assert result["miou_fg"] == pytest.approx((4 / 7 + 4 / 7) / 20)
    assert result["miou_present"] == pytest.approx((7 / 14 + 4 / 7 + 4 / 7) / 4)
    assert all(v["count"] == 0 for v in result["problems"].values())
    for fig in ("confusion.png", "iou.png"):
        with Image.open(os.path.join(tree["masks"], fig)) as im:
            assert im.format == "PNG" and im.width > 200


def test_worker_pool_equals_one_process_and_names_a_failing_image(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    gt = {f"im{i:02d}": rng.choice([0, 1, 5, 255], size=(6, 7)) for i in range(24)}
    pred = {k: rng.integers(0, 21, size=(6, 7)) for k in gt}
    t = make_tree(str(tmp_path), gt, pred)
    entries, problems = mask_eval.parse_list(t["filelist"], t["data"], t["masks"])
    assert len(entries) == 24 and not problems
    one = mask_eval.evaluate(entries, None, workers=1, progress=False)
    pool = mask_eval.evaluate(entries, None, workers=2, progress=False)
    assert np.array_equal(one.conf, pool.conf) and one.image_scores == pool.image_scores
    assert one.conf.sum() == sum(int((np.asarray(g) != 255).sum()) for g in gt.values())

    real = mask_eval.evaluate_image

    def failing(entry, oracle):
        if entry.image_id == "im17":
            raise MemoryError("simulated")
        return real(entry, oracle)

    monkeypatch.setattr(mask_eval, "evaluate_image", failing)  # forked workers inherit the patch
    with pytest.raises(RuntimeError, match="im17"):
        mask_eval.evaluate(entries, None, workers=2, progress=False)

    def killed(entry, oracle):
        if entry.image_id == "im17":
            os._exit(9)  # the worker vanishes as if killed
        return real(entry, oracle)

    monkeypatch.setattr(mask_eval, "evaluate_image", killed)
    with pytest.raises(RuntimeError, match="decoding process died"):
        mask_eval.evaluate(entries, None, workers=2, progress=False)


def test_prediction_255_pixels_are_scored_as_misses(tmp_path):
    """The hand-computed tree with two prediction pixels of 255 (no class): c's first pixel (GT bicycle, predicted
    background before) becomes a miss of bicycle, a's pixel on GT 255 stays ignored."""
    pred = {"a": [[0, 1, 1, 1], [0, 0, 1, 0], [255, 2, 2, 2], [0, 0, 0, 2]], "b": PRED["b"], "c": [[255, 0, 2]]}
    t = make_tree(str(tmp_path), pred=pred)
    proc = run_eval(t, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    # background: TP 7, FN 2, FP 4 (one fewer) -> IoU 7/13, Pr 7/11, Re 7/9; bicycle: TP 4, FN 2 + 1 miss, FP 0
    assert out[3] == "  background |     9 |  53.8 |  63.6 |  77.8"
    assert out[5] == "     bicycle |     7 |  57.1 | 100.0 |  57.1"
    assert out[-1] == "Prediction pixels without a class (255): 2 (1 on labelled GT pixels, scored as misses)"
    with open(os.path.join(t["masks"], "eval.json")) as f:
        result = json.load(f)
    assert result["confusion"][2][0] == 2 and result["misses"][2] == 1 and sum(result["misses"]) == 1
    assert result["no_class_pixels"] == 2 and result["count"][:3] == [9, 6, 7]
    assert result["miou_21"] == pytest.approx((7 / 13 + 4 / 7 + 4 / 7) / 21)
    assert result["recall"][2] == pytest.approx(4 / 7) and result["precision"][2] == pytest.approx(1.0)
    with open(t["log"]) as f:
        assert "-0001 | c" in f.read().split("bicycle\n")[1]  # c's bicycle: TP 1 - FN 2 - FP 0, as before


def _corrupt(path):
    with open(path, "r+b") as f:
        f.truncate(30)


BAD_PREDICTIONS = {
    # case: (change to the tree, problem kind, word in the stdout report)
    "missing": (lambda t: os.remove(os.path.join(t["masks"], "b.png")), "missing_prediction", "missing prediction"),
    "wrong_size": (lambda t: _png(os.path.join(t["masks"], "b.png"), np.zeros((3, 2)), False),
                   "size_mismatch", "size differs"),
    "value_21": (lambda t: _png(os.path.join(t["masks"], "b.png"), np.full((2, 3), 21), False),
                 "bad_prediction_values", "outside 0..20"),
    "corrupt": (lambda t: _corrupt(os.path.join(t["masks"], "b.png")), "unreadable_prediction", "unreadable"),
    "rgb": (lambda t: Image.new("RGB", (3, 2)).save(os.path.join(t["masks"], "b.png")),
            "unreadable_prediction", "unreadable"),
    "gt_missing": (lambda t: os.remove(os.path.join(t["data"], GT_DIR, "b.png")), "missing_gt", "missing GT"),
    "gt_value_77": (lambda t: _png(os.path.join(t["data"], GT_DIR, "b.png"), np.full((2, 3), 77), True),
                    "bad_gt_values", "GT values"),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_problems_fail_unless_allowed(tree, case):
    change, kind, words = BAD_PREDICTIONS[case]
    change(tree)
    proc = run_eval(tree, "--workers", "1")
    assert_user_error(proc, "1 of 3", "--allow-problems")
    assert words in proc.stdout and "(b)" in proc.stdout
    assert not os.path.exists(os.path.join(tree["masks"], "eval.json"))
    assert not os.path.exists(tree["log"])

    proc = run_eval(tree, "--workers", "1", "--allow-problems")
    assert proc.returncode == 0, proc.stderr
    assert "# of images: 2" in proc.stdout
    with open(os.path.join(tree["masks"], "eval.json")) as f:
        result = json.load(f)
    assert result["problems"][kind] == {"count": 1, "images": ["b"], "details": result["problems"][kind]["details"]}
    assert result["num_images"] == 2 and result["num_listed"] == 3
    # b left out: a and c alone
    assert result["count"][:3] == [6, 4, 7]


def test_malformed_line_is_a_problem(tree):
    with open(tree["filelist"], "a") as f:
        f.write("voc/VOCdevkit/VOC2012/JPEGImages/x.jpg\n")
    proc = run_eval(tree)
    assert_user_error(proc, "malformed list line: 1")
    assert "line 4" in proc.stdout
    proc = run_eval(tree, "--allow-missing")
    assert proc.returncode == 0 and "# of images: 3" in proc.stdout


@pytest.mark.parametrize("case", ["no_data", "no_filelist", "no_masks", "bad_oracle", "empty_list",
                                  "binary_list", "unwritable_json", "nothing_evaluable"])
def test_bad_arguments_are_one_line_errors(tree, tmp_path, case):
    extra: list[str] = []
    if case == "no_data":
        tree["data"] = str(tmp_path / "nowhere")
        words = ("--data",)
    elif case == "no_filelist":
        tree["filelist"] = str(tmp_path / "missing.txt")
        words = ("--filelist",)
    elif case == "no_masks":
        tree["masks"] = str(tmp_path / "no_masks")
        words = ("--masks",)
    elif case == "bad_oracle":
        extra, words = ["--oracle-from", "2x64"], ("--oracle-from",)
    elif case == "empty_list":
        open(tree["filelist"], "w").close()
        words = ("empty",)
    elif case == "binary_list":
        with open(tree["filelist"], "wb") as f:
            f.write(b"\xff\xfe\x00\x81 \x90\n")
        words = ("not a text file",)
    elif case == "unwritable_json":
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        extra, words = ["--json-out", str(blocker / "eval.json")], ("not writable",)
    else:
        for name in GT:
            os.remove(os.path.join(tree["masks"], name + ".png"))
        extra, words = ["--allow-problems"], ("no image",)
    proc = run_eval(tree, *extra)
    assert_user_error(proc, *words)
    assert not os.path.exists(os.path.join(tree["masks"], "eval.json"))


def test_oracle_mode(tmp_path):
    # 8x8, left half aeroplane. Down to 4 columns (bilinear, support 2 px): 255, 223, 32, 0; back up to 8:
    # every column with weight on the 32 is non-zero, and non-zero is "> 0.5" on the 0..255 scale, so columns
    # 0..6 become aeroplane: per row 4 TP, 3 background pixels lost, 1 background kept.
    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[:, :4] = 1
    t = make_tree(str(tmp_path), {"o": gt}, {})
    t["json"] = str(tmp_path / "oracle" / "eval.json")
    proc = run_eval(t, "--oracle-from", "4x4", "--json-out", t["json"], masks=False)
    assert proc.returncode == 0, proc.stderr
    with open(t["json"]) as f:
        conf = np.array(json.load(f)["confusion"])
    assert conf[1, 1] == 32 and conf[0, 1] == 24 and conf[0, 0] == 8 and conf.sum() == 64
    proc = run_eval(t, "--oracle-from", "8x8", masks=False)  # the identity resize: a perfect score
    assert proc.returncode == 0, proc.stderr
    assert "With background: \nmIoU: 9.52\t  Pr: 9.52\t  Re: 9.52\n" in proc.stdout  # 2 of 21 classes at 100%
    assert "Over classes present in GT or prediction: mIoU: 100.00" in proc.stdout


def test_torchrun_two_processes_equal_one(tmp_path):
    rng = np.random.default_rng(1)
    gt = {f"s{i}": rng.choice([0, 2, 7, 255], size=(5, 6)) for i in range(7)}
    pred = {k: rng.integers(0, 21, size=(5, 6)) for k in gt if k != "s4"}  # s4 missing: gathered problems too
    t = make_tree(str(tmp_path), gt, pred)
    single = run_eval(t, "--allow-problems", "--json-out", str(tmp_path / "one.json"))
    assert single.returncode == 0, single.stderr
    with open(t["log"]) as f:
        log_single = f.read()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "eval_seg.py", "--data", t["data"],
           "--filelist", t["filelist"], "--masks", t["masks"], "--log-scores", str(tmp_path / "two.log"),
           "--json-out", str(tmp_path / "two.json"), "--allow-problems", "--workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    dist = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert dist.returncode == 0, dist.stderr
    assert dist.stdout == single.stdout  # only rank 0 prints
    with open(tmp_path / "two.log") as f:
        assert f.read() == log_single
    with open(tmp_path / "one.json") as f1, open(tmp_path / "two.json") as f2:
        one, two = json.load(f1), json.load(f2)
    assert one["confusion"] == two["confusion"] and one["problems"] == two["problems"]
    assert one["problems"]["missing_prediction"]["images"] == ["s4"]


def test_launch_script_foreground_writes_both_evaluations(tmp_path):
    out = tmp_path / "out"
    base = out / "pascal_voc" / "e1" / "r1" / "val"
    data = make_tree(str(tmp_path), masks_sub="out/pascal_voc/e1/r1/val")
    make_tree(str(tmp_path), masks_sub="out/pascal_voc/e1/r1/val/crf")
    env = dict(os.environ, OUTPUT_DIR=str(out), EXP="e1", RUN_ID="r1", DATA_ROOT=data["data"],
               FILELIST=data["filelist"], WORKERS="1", FOREGROUND="1")
    proc = subprocess.run(["bash", os.path.join(ROOT, "launch", "eval_seg.sh")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for d in (base, base / "crf"):
        with open(f"{d}.eval") as f:
            assert f.read().splitlines()[-len(HAND_SUMMARY):] == HAND_SUMMARY
        assert os.path.isfile(f"{d}.scores.log") and os.path.isfile(d / "eval.json")

    env["RUN_ID"] = "nope"
    proc = subprocess.run(["bash", os.path.join(ROOT, "launch", "eval_seg.sh")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no masks" in proc.stderr


def test_synthetic_dataset_gt_as_prediction_scores_100(synthetic_root, tmp_path):
    """The GT masks as predictions, once as they are (their 255 pixels lie on GT 255: ignored) and once with 255
    replaced by background (a prediction never has 255 there): every class present scores 100%."""
    filelist = os.path.join(synthetic_root, "val_voc.txt")
    with open(filelist) as f:
        gt_paths = [line.split()[1] for line in f if line.strip()]
    classes, ignored = set(), 0
    for rel in gt_paths:
        gt = np.asarray(Image.open(os.path.join(synthetic_root, rel)))
        classes |= set(np.unique(gt).tolist()) - {255}
        ignored += int((gt == 255).sum())
        for sub, pred in (("as_is", gt), ("filled", np.where(gt == 255, 0, gt))):
            os.makedirs(tmp_path / sub, exist_ok=True)
            Image.fromarray(pred.astype(np.uint8), mode="L").save(tmp_path / sub / os.path.basename(rel))
    assert ignored > 0
    share = 100 * len(classes) / 21
    for sub, no_class in (("as_is", ignored), ("filled", 0)):
        proc = subprocess.run([sys.executable, "eval_seg.py", "--data", synthetic_root, "--filelist", filelist,
                               "--masks", str(tmp_path / sub), "--log-scores", str(tmp_path / "s.log")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert out[0] == f"# of images: {len(gt_paths)}"
        assert out[-4:-2] == ["With background: ", f"mIoU: {share:.2f}\t  Pr: {share:.2f}\t  Re: {share:.2f}"]
        assert out[-2] == "Over classes present in GT or prediction: mIoU: 100.00  Pr: 100.00  Re: 100.00"
        assert out[-1] == (f"Prediction pixels without a class (255): {no_class} "
                           "(0 on labelled GT pixels, scored as misses)")
    masks = tmp_path / "filled"
    # test.txt has no mask column: every line is reported, nothing can be scored
    proc = subprocess.run([sys.executable, "eval_seg.py", "--data", synthetic_root, "--filelist",
                           os.path.join(synthetic_root, "test.txt"), "--masks", str(masks),
                           "--log-scores", str(tmp_path / "t.log")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert_user_error(proc, "malformed list line: 3")
