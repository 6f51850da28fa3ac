"""Inference (SPEC 8): the merges against hand-built probabilities, the writers, and infer_val.py end to end through
launch/infer_val.sh on the synthetic dataset with a light ResNet-18 model, including its failure cases."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import infer_val
from bench.baselines.infer_pad import infer_image
from datasets.voc import PALETTE, PALETTE_FLAT
from models import build_model
from utils.config import get_cfg_defaults, load_cfg
from utils.dcrf import CRFParams, dense_crf
from utils.dist import DistContext
from utils.errors import UserError
from utils.inference_tools import (WriterOptions, class_presence, crf_image, image_01, merge_crops,
                                   merge_multiscale, write_outputs)
from utils.visualize import overlay, overlay_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 21
TINY_CFG = """\
NET:
  MODEL: {model}
  BACKBONE: resnet18
TEST:
  SCALES: [1, 0.5]
  PAD_SIZE: [96, 96]
  BATCH_SIZE: 4
"""


# ------------------------------------------------------------------------------------------------ merges

def _labels(*present: int) -> torch.Tensor:
    """[20] presence vector of the given class indices (1..20)."""
    ell = torch.zeros(C - 1)
    ell[[c - 1 for c in present]] = 1
    return ell


def test_merge_multiscale_crops_padding_flips_back_filters_and_raises_background():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(C, 2, 3, generator=gen), torch.rand(C, 2, 3, generator=gen)
    probs = torch.full((2, C, 4, 6), 100.0)  # padding full of garbage: must be cropped away
    probs[0, :, 1:3, 2:5] = a  # variant 0 at pad_top 1, pad_left 2
    probs[1, :, 0:2, 0:3] = b.flip(-1)  # variant 1 (flipped) at pad_top 0, pad_left 0
    pads = torch.tensor([[1, 2, 2, 3], [0, 0, 2, 3]], dtype=torch.float32)
    out = merge_multiscale(probs, pads, _labels(1, 3), flip=True, bg_pow=3, out_size=(2, 3))
    expected = (a + b) / 2
    keep = torch.zeros(C)
    keep[[0, 1, 3]] = 1
    expected = expected * keep[:, None, None]
    expected[0] = expected[0] ** 3
    torch.testing.assert_close(out, expected)
    # FLIP False: odd variants are not flipped back
    out = merge_multiscale(probs, pads, _labels(1, 3), flip=False, bg_pow=1, out_size=(2, 3))
    torch.testing.assert_close(out[1], (a[1] + b[1].flip(-1)) / 2)


def test_merge_resizes_bilinearly_without_aligned_corners():
    probs = torch.zeros(1, C, 1, 2)
    probs[0, 1] = torch.tensor([[0.0, 1.0]])
    out = merge_multiscale(probs, torch.tensor([[0, 0, 1, 2]]), _labels(1), flip=True, bg_pow=3, out_size=(1, 4))
    # align_corners=False: output pixel x samples input (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
    torch.testing.assert_close(out[1, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_merge_accepts_canvases_of_different_sizes():
    p1, p2 = torch.rand(C, 3, 4), torch.rand(C, 5, 5)
    pads = torch.tensor([[0, 0, 3, 4], [1, 0, 3, 4]])
    out = merge_multiscale([p1, p2], pads, _labels(*range(1, 21)), flip=False, bg_pow=1, out_size=(3, 4))
    torch.testing.assert_close(out, (p1 + p2[:, 1:4, 0:4]) / 2)


def test_merge_crops_offsets_counts_and_flip_parity():
    # image 4x4 centred at (2, 2) on an 8x8 canvas; crops 5x5, two of them starting inside the padding at 1
    windows = [(1, 6, 1, 6), (3, 8, 3, 8), (1, 6, 3, 8), (3, 8, 1, 6)]
    coords, probs = [], []
    for i, (s_h, e_h, s_w, e_w) in enumerate(windows):
        ys, xs = torch.meshgrid(torch.arange(s_h, e_h), torch.arange(s_w, e_w), indexing="ij")
        p = torch.zeros(C, 5, 5)
        p[0] = ys * 10 + xs  # each crop reports the canvas position of its pixels
        p[4] = i + 1.0  # and its own number
        p[7] = 1.0
        probs.append(p.flip(-1) if i % 2 == 0 else p)  # even variants come from flipped crops
        coords.append([s_h, e_h, s_w, e_w, 2, 2])
    out = merge_crops(torch.stack(probs), torch.tensor(coords), _labels(4), flip=True, out_size=(4, 4))
    ys, xs = torch.meshgrid(torch.arange(2, 6), torch.arange(2, 6), indexing="ij")
    torch.testing.assert_close(out[0], (ys * 10 + xs).float())  # every crop agrees where it covers a pixel
    # image rows/cols 0-3 = canvas 2-5; top/left crops cover canvas 1-5 (image 0-3), bottom/right ones 3-7 (1-3)
    torch.testing.assert_close(out[4, 0, 0], torch.tensor(1.0))  # only crop 1 (top-left)
    torch.testing.assert_close(out[4, 2, 2], torch.tensor(2.5))  # all four crops: (1 + 2 + 3 + 4) / 4
    torch.testing.assert_close(out[4, 0, 3], torch.tensor(2.0))  # top-left and top-right: (1 + 3) / 2
    assert torch.count_nonzero(out[7]) == 0  # absent class zeroed, no background exponent


def test_class_presence_is_the_max_over_variants_above_the_cut():
    cls = torch.full((3, 20), -10.0)
    cls[1, 4] = 0.0  # sigmoid 0.5
    cls[2, 7] = np.log(0.1 / 0.9)  # sigmoid exactly 0.1: not above the cut
    assert class_presence(cls, 0.1).nonzero().flatten().tolist() == [4]


def test_writer_formats_ties_and_panels(tmp_path):
    h, w = 4, 5
    probs = np.full((C, h, w), 0.01, dtype=np.float32)
    probs[3], probs[5] = 0.4, 0.4  # a tie: the first index wins
    probs[0, :, :2] = 0.9
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = np.full((h, w), 255, dtype=np.int64)
    gt[0, 0] = 3
    opts = WriterOptions(str(tmp_path), CRFParams(), palette=True, save_probs=True)
    for d in opts.dirs():
        os.makedirs(d, exist_ok=True)
    write_outputs("2007_000001", probs, image, gt, opts)
    pred = Image.open(tmp_path / "2007_000001.png")
    assert pred.mode == "L" and pred.getpalette() is None and pred.size == (w, h)
    expected = np.where(np.arange(w)[None, :] < 2, 0, 3).repeat(h, 0)
    assert np.array_equal(np.asarray(pred), expected)
    pal = Image.open(tmp_path / "palette" / "2007_000001.png")
    assert pal.mode == "P" and pal.getpalette()[:66] == PALETTE_FLAT[:66]
    assert np.array_equal(np.asarray(pal), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "probs" / "2007_000001.npy"), probs.astype(np.float16))
    crf = np.asarray(Image.open(tmp_path / "crf" / "2007_000001.png"))
    assert np.array_equal(crf, dense_crf(crf_image(image_01(image)), probs).argmax(0))
    vis = np.asarray(Image.open(tmp_path / "vis" / "2007_000001.png"))
    assert vis.shape == (h, 3 * w, 3)
    img01 = image_01(image)
    for panel, labels in enumerate([expected, crf, gt]):
        ref = np.round(255 * (0.3 * img01 + 0.7 * PALETTE[labels] / 255.0)).astype(np.uint8)
        assert np.array_equal(vis[:, panel * w:(panel + 1) * w], ref)
    ambiguous = np.array([224, 224, 192]) / 255  # GT 255 is drawn with palette colour 255
    assert np.array_equal(vis[1, 2 * w + 1], np.round(255 * (0.3 * img01[1, 1] + 0.7 * ambiguous)))
    assert np.abs(img01 - image / 255.0).max() < 1e-6  # the de-normalised image is the image


def test_every_overlay_weighs_image_0_3_and_colour_0_7():
    """One convention (utils/visualize.py): the inference panels, the demo report's examples and the TensorBoard
    panels all draw 0.3 x image + 0.7 x class colour; only 255 differs (its own colour, or the plain image)."""
    image01 = np.full((1, 2, 3), 0.5)
    labels = np.array([[1, 255]])
    colour = np.array([128, 0, 0]) / 255  # aeroplane
    out = overlay_labels(labels, image01)
    assert np.allclose(out[0, 0], 0.3 * 0.5 + 0.7 * colour)
    assert np.allclose(out[0, 1], 0.3 * 0.5 + 0.7 * np.array([224, 224, 192]) / 255)
    assert np.array_equal(overlay_labels(labels, image01, plain_ignored=True)[0, 1], image01[0, 1])
    masks = torch.zeros(21, 1, 2)
    masks[1] = 1.0  # certain aeroplane everywhere
    tb = overlay(torch.from_numpy(image01).permute(2, 0, 1).float(), masks).permute(1, 2, 0).numpy()
    assert np.allclose(tb[0, 0], out[0, 0], atol=1e-6)


# ------------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Configs and snapshots of the light "ae" and "bsl" models (ResNet-18 from scratch, fixed seed)."""
    base = tmp_path_factory.mktemp("infer")
    paths = {}
    for model in ("ae", "bsl"):
        cfg_path = base / f"tiny_{model}.yaml"
        cfg_path.write_text(TINY_CFG.format(model=model))
        cfg = load_cfg(str(cfg_path))
        cfg.NET.FROM_SCRATCH = True
        torch.manual_seed(0)
        net = build_model(cfg.NET, num_classes=21)
        snap_dir = base / "snapshots" / "pascal_voc" / "exp" / model
        snap_dir.mkdir(parents=True)
        torch.save(net.state_dict(), snap_dir / "model_enc_e001.pth")
        paths[model] = str(cfg_path)
    return base, paths


def _args(base, cfg: str, run: str, infer_list: str, out: str, root: str, *extra: str, sets=()) -> list[str]:
    return ["--dataset", "pascal_voc", "--cfg", cfg, "--exp", "exp", "--run", run, "--resume", "e001",
            "--snapshot-dir", str(base / "snapshots"), "--logdir", str(base / "logs"), "--infer-list", infer_list,
            "--mask-output-dir", out, "--workers", "0", "--device", "cpu", *extra,
            "--set", "TEST.DATA_ROOT", root, *sets]


def _ids(list_path: str) -> list[str]:
    return [os.path.splitext(os.path.basename(line.split()[0]))[0] for line in open(list_path) if line.strip()]


def _files(out) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


def _load_model(cfg_path: str, base, run: str):
    cfg = load_cfg(cfg_path)
    model = infer_val.build_inference_model(cfg, str(base / "snapshots" / "pascal_voc" / "exp" / run /
                                                     "model_enc_e001.pth"), torch.device("cpu"))
    return cfg, model


def test_launch_script_on_a_list_with_masks(setup, synthetic_root, tmp_path):
    base, cfgs = setup
    env = dict(os.environ, FOREGROUND="1", CONFIG=cfgs["ae"], FILELIST=os.path.join(synthetic_root, "val_voc.txt"),
               OUTPUT_DIR=str(tmp_path / "results"), EXP="exp", RUN_ID="ae", SNAPSHOT="e001", SAVE_ID="s1",
               NUM_THREADS="1", EXTRA_ARGS=f"--save-probs --snapshot-dir {base / 'snapshots'} --logdir "
                                           f"{base / 'logs'} --set TEST.DATA_ROOT {synthetic_root}")
    proc = subprocess.run(["bash", os.path.join(ROOT, "launch", "infer_val.sh")], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    save_dir = tmp_path / "results" / "pascal_voc" / "exp" / "s1" / "val_voc"
    for suffix in (".head", ".diff", ".cmd", ".log"):
        assert os.path.isfile(f"{save_dir}{suffix}")
    assert "infer_val.py --dataset pascal_voc" in open(f"{save_dir}.cmd").read()
    assert "Inference done: 6 images" in open(f"{save_dir}.log").read()
    ids = _ids(os.path.join(synthetic_root, "val_voc.txt"))
    assert _files(save_dir) == sorted(f"{sub}{i}.{ext}" for i in ids for sub, ext in
                                      [("", "png"), ("crf/", "png"), ("vis/", "png"), ("probs/", "npy")])

    cfg, model = _load_model(cfgs["ae"], base, "ae")
    cfg.TEST.DATA_ROOT = synthetic_root
    changed = 0
    for line in open(os.path.join(synthetic_root, "val_voc.txt")):
        img_rel, gt_rel = line.split()
        i = os.path.splitext(os.path.basename(img_rel))[0]
        image = np.asarray(Image.open(os.path.join(synthetic_root, img_rel)).convert("RGB"))
        gt = np.asarray(Image.open(os.path.join(synthetic_root, gt_rel)))
        h, w = image.shape[:2]
        # the SPEC formulation, transcribed independently, gives the same probabilities and masks
        ref = infer_image(model, image, cfg.TEST).numpy()
        np.testing.assert_allclose(np.load(save_dir / "probs" / f"{i}.npy"), ref, atol=1e-3, rtol=1e-3)
        pred_img = Image.open(save_dir / f"{i}.png")
        assert pred_img.mode == "L" and pred_img.size == (w, h)
        pred = np.asarray(pred_img)
        top2 = np.sort(ref, 0)[-2:]
        clear = top2[1] - top2[0] > 1e-4  # channels_last: equal up to float rounding
        assert np.array_equal(pred[clear], ref.argmax(0)[clear])
        crf = np.asarray(Image.open(save_dir / "crf" / f"{i}.png"))
        assert crf.shape == (h, w) and crf.max() <= 20
        changed += int((crf != pred).sum())
        vis = np.asarray(Image.open(save_dir / "vis" / f"{i}.png"))
        assert vis.shape == (h, 3 * w, 3)  # prediction, CRF prediction, GT
        gt_panel = np.round(255 * (0.3 * image_01(image) + 0.7 * PALETTE[gt] / 255.0)).astype(np.uint8)
        assert np.array_equal(vis[:, 2 * w:], gt_panel)
    assert changed > 0  # the CRF relabels pixels of these images (its own test builds a case where it must)


def test_list_without_masks_and_folder_and_options(setup, synthetic_root, tmp_path):
    base, cfgs = setup
    test_list = os.path.join(synthetic_root, "test.txt")
    out = str(tmp_path / "test")
    infer_val.main(_args(base, cfgs["ae"], "ae", test_list, out, synthetic_root, "--palette", "--no-crf"))
    ids = _ids(test_list)
    assert _files(out) == sorted(f"{sub}{i}.png" for i in ids for sub in ("", "vis/", "palette/"))
    for i in ids:
        image = Image.open(os.path.join(synthetic_root, "voc_test/VOCdevkit/VOC2012/JPEGImages", f"{i}.jpg"))
        vis = Image.open(os.path.join(out, "vis", f"{i}.png"))
        assert vis.size == (image.size[0], image.size[1])  # --no-crf and no GT: the prediction panel only
        pal = Image.open(os.path.join(out, "palette", f"{i}.png"))
        plain = np.asarray(Image.open(os.path.join(out, f"{i}.png")))
        assert pal.mode == "P" and np.array_equal(np.asarray(pal), plain)

    # a folder of images: the same masks as the list naming them
    folder = os.path.join(synthetic_root, "voc_test/VOCdevkit/VOC2012/JPEGImages")
    out2 = str(tmp_path / "folder")
    infer_val.main(_args(base, cfgs["ae"], "ae", folder, out2, "/unused", "--no-crf"))
    for i in ids:
        assert np.array_equal(np.asarray(Image.open(os.path.join(out2, f"{i}.png"))),
                              np.asarray(Image.open(os.path.join(out, f"{i}.png"))))


def test_baseline_model_and_gt_labels(setup, synthetic_root, tmp_path):
    base, cfgs = setup
    val = os.path.join(synthetic_root, "val_voc.txt")
    out = str(tmp_path / "bsl")
    infer_val.main(_args(base, cfgs["bsl"], "bsl", val, out, synthetic_root, "--no-crf",
                         sets=("TEST.USE_GT_LABELS", "True")))
    for line in open(val):
        img_rel, gt_rel = line.split()
        i = os.path.splitext(os.path.basename(img_rel))[0]
        pred = np.asarray(Image.open(os.path.join(out, f"{i}.png")))
        gt = np.asarray(Image.open(os.path.join(synthetic_root, gt_rel)))
        present = set(np.unique(gt)) - {255}
        assert set(np.unique(pred)) <= present | {0}  # classes absent from the GT labels are suppressed


def test_tight_canvas_runs_and_stays_close(setup, synthetic_root, tmp_path):
    base, cfgs = setup
    val = os.path.join(synthetic_root, "val_voc.txt")
    infer_val.main(_args(base, cfgs["ae"], "ae", val, str(tmp_path / "pad"), synthetic_root, "--no-crf",
                         "--save-probs"))
    infer_val.main(_args(base, cfgs["ae"], "ae", val, str(tmp_path / "tight"), synthetic_root, "--no-crf",
                         "--save-probs", "--tight-canvas"))
    i = _ids(val)[0]
    a = np.load(tmp_path / "pad" / "probs" / f"{i}.npy").astype(np.float32)
    b = np.load(tmp_path / "tight" / "probs" / f"{i}.npy").astype(np.float32)
    assert a.shape == b.shape and not np.array_equal(a, b)  # a different canvas: not the original's numbers


# ------------------------------------------------------------------------------------------------ failures

def _die_on_second_image(image_id, *args):
    """A writer job whose process is killed on one image (the worker of a pool dies)."""
    if image_id == "val_000001":
        os.kill(os.getpid(), signal.SIGKILL)
    return write_outputs(image_id, *args)


def test_killed_writer_process_names_the_image(setup, synthetic_root, tmp_path, monkeypatch):
    base, cfgs = setup
    monkeypatch.setattr(infer_val, "write_outputs", _die_on_second_image)
    args = _args(base, cfgs["ae"], "ae", os.path.join(synthetic_root, "val_voc.txt"), str(tmp_path / "o"),
                 synthetic_root, "--no-crf")
    args[args.index("--workers") + 1] = "1"
    with pytest.raises(UserError, match="CRF/writer failed on val_000001: a worker process died") as e:
        infer_val.main(args)
    assert len(str(e.value).splitlines()) == 1
    assert os.path.isfile(tmp_path / "o" / "val_000000.png")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_failing_writer_job_stops_the_run_with_the_image(setup, synthetic_root, tmp_path, workers):
    base, cfgs = setup
    out = tmp_path / "o"
    (out / "crf" / "val_000002.png").mkdir(parents=True)  # the CRF mask cannot be written over a folder
    args = _args(base, cfgs["ae"], "ae", os.path.join(synthetic_root, "val_voc.txt"), str(out), synthetic_root)
    args[args.index("--workers") + 1] = workers
    with pytest.raises(UserError, match="CRF/writer failed on val_000002: cannot write .*crf/val_000002.png: "
                                        "a directory is in the way") as e:
        infer_val.main(args)
    assert len(str(e.value).splitlines()) == 1
    assert not os.path.exists(out / "val_000005.png")  # the run stopped


def _error(argv: list[str]) -> str:
    with pytest.raises(UserError) as e:
        infer_val.main(argv)
    lines = str(e.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_up_front_errors_write_nothing(setup, synthetic_root, tmp_path, monkeypatch):
    base, cfgs = setup
    val = os.path.join(synthetic_root, "val_voc.txt")
    out = tmp_path / "out"
    args = _args(base, cfgs["ae"], "ae", val, str(out), synthetic_root)
    no_resume = args[:args.index("--resume")] + args[args.index("--resume") + 2:]
    assert "--resume is required" in _error(no_resume)
    missing = list(args)
    missing[missing.index("--resume") + 1] = "e999"
    assert "model_enc_e999.pth not found" in _error(missing)
    wrong = _args(base, cfgs["bsl"], "ae", val, str(out), synthetic_root)  # a bsl config, an ae snapshot
    assert "does not match the configured model" in _error(wrong)
    test_list = os.path.join(synthetic_root, "test.txt")
    assert "no GT masks" in _error(_args(base, cfgs["ae"], "ae", test_list, str(out), synthetic_root,
                                         sets=("TEST.USE_GT_LABELS", "True")))
    assert "TEST.BATCH_SIZE is 8" in _error(_args(base, cfgs["ae"], "ae", val, str(out), synthetic_root,
                                                  sets=("TEST.BATCH_SIZE", "8")))
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "is not writable" in _error(_args(base, cfgs["ae"], "ae", val, str(a_file / "sub"), synthetic_root))
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert "pip install pydensecrf2" in _error(args)
    assert not out.exists()
    # without the CRF, pydensecrf is not needed
    infer_val.main(_args(base, cfgs["ae"], "ae", val, str(out), synthetic_root, "--no-crf", "--check"))
    assert not os.path.exists(out / "crf")


def test_check_reports_every_problem_at_once(setup, synthetic_root, tmp_path, capsys):
    base, cfgs = setup
    bad_list = tmp_path / "list.txt"
    bad_list.write_text(open(os.path.join(synthetic_root, "val_voc.txt")).read() + "a b c\nmissing.jpg\n")
    args = _args(base, cfgs["ae"], "ae", str(bad_list), str(tmp_path / "o"), synthetic_root, "--check")
    args[args.index("--resume") + 1] = "e999"
    with pytest.raises(UserError) as e:
        infer_val.main(args)
    text = str(e.value)
    assert "line 7: expected '<image> [<mask>]'" in text and "model_enc_e999.pth not found" in text
    good = _args(base, cfgs["ae"], "ae", os.path.join(synthetic_root, "val_voc.txt"), str(tmp_path / "o"),
                 synthetic_root, "--check")
    infer_val.main(good)
    assert "check passed: 6 images" in capsys.readouterr().out
    assert _files(tmp_path / "o") == []


def test_cli_error_is_one_line_with_exit_status_2(setup, synthetic_root, tmp_path):
    base, cfgs = setup
    args = _args(base, cfgs["ae"], "ae", os.path.join(synthetic_root, "val_voc.txt"), str(tmp_path / "o"),
                 synthetic_root)
    args[args.index("--resume") + 1] = "e999"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "infer_val.py"), *args], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: snapshot {base}/snapshots/pascal_voc/exp/ae/model_enc_e999.pth "
                                        "not found; check --snapshot-dir, --dataset, --exp, --run and --resume "
                                        "(inference never runs with an untrained head)"]
    assert not os.path.exists(tmp_path / "o")


def test_torchrun_ranks_take_disjoint_parts_of_the_list(setup, synthetic_root, tmp_path, monkeypatch, capsys):
    base, cfgs = setup
    monkeypatch.setattr(infer_val, "all_reduce_sum", lambda counts, ctx: 3 * counts)  # 3 ranks alike
    out = tmp_path / "o"
    for rank in (1, 0):
        monkeypatch.setattr(infer_val, "init_distributed",
                            lambda device, rank=rank: DistContext(device, rank=rank, world_size=3, distributed=True))
        infer_val.main(_args(base, cfgs["ae"], "ae", os.path.join(synthetic_root, "val_voc.txt"), str(out / str(rank)),
                             synthetic_root, "--no-crf"))
    assert [f for f in _files(out / "1") if "/" not in f] == ["val_000001.png", "val_000004.png"]
    assert [f for f in _files(out / "0") if "/" not in f] == ["val_000000.png", "val_000003.png"]
    assert capsys.readouterr().out.count("Inference done: 6 images") == 1  # rank 0 reports the total


def test_image_corrupt_during_the_run_stops_or_is_skipped(setup, synthetic_root, tmp_path, recwarn):
    import shutil

    base, cfgs = setup
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    jpeg = root / "voc/VOCdevkit/VOC2012/JPEGImages/val_000002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])  # the header reads, the pixels do not
    args = _args(base, cfgs["ae"], "ae", str(root / "val_voc.txt"), str(tmp_path / "o"), str(root), "--no-crf")
    # TRAIN.ON_CORRUPT stop (the default): every listed image is decoded before the run, so nothing is written
    assert "val_000002.jpg is not a readable image (image file is truncated" in _error(args)
    assert not (tmp_path / "o").exists()
    infer_val.main(args + ["TRAIN.ON_CORRUPT", "skip"])
    assert [f for f in _files(tmp_path / "o") if "/" not in f] == [f"val_00000{i}.png" for i in (0, 1, 3, 4, 5)]
    assert any("skipping" in str(w.message) and "val_000002.jpg" in str(w.message) for w in recwarn)
