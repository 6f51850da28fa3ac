"""train.py end to end on CPU: the tiny synthetic dataset, the light backbone, a few iterations per epoch."""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

from train_helpers import ROOT, env, run_dir, run_train, scalars, snapshot_files, train_args
from utils.visualize import read_events

ORIGINAL_TAGS = ["all/loss_cls", "all/loss_fg", "all/loss", "all_wo_BG/mAP", "lr/enc_group_00", "lr/enc_group_01",
                 "lr/enc_group_02", "lr/enc_group_03"]


@pytest.fixture(scope="module")
def ae_run(synthetic_root, tmp_path_factory):
    """Single-stage model, epochs 0..3 (validation at 0 and 2, checkpointing from epoch 1)."""
    out = str(tmp_path_factory.mktemp("ae"))
    r = run_train(train_args(synthetic_root, out, "ae", epochs=3))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_ae_run_writes_the_originals_outputs(ae_run):
    out, r = ae_run
    # snapshots: the original's names, model/opt pairs (plus our resume state)
    files = snapshot_files(out, "ae")
    assert files and all(f.split("_")[0] in ("model", "opt", "state") for f in files)
    models = [f for f in files if f.startswith("model_enc_")]
    assert models and all(f[len("model_enc_"):-4].startswith("e002Xs") for f in models), files
    assert {f.replace("model_", "opt_") for f in models} <= set(files)
    # console lines as the original
    lines = r.stdout.splitlines()
    loss_lines = [ln for ln in lines if ln.startswith("Loss [0000]: loss_cls: ")]
    assert len(loss_lines) == 4 and all("| loss_mask: " in ln and "|  | Im/Sec: " in ln for ln in loss_lines)
    for ln in loss_lines:
        values = [float(part.split(": ")[-1]) for part in ln.split(" | ")[:4]]
        assert all(math.isfinite(v) for v in values)
    assert [ln for ln in lines if ln.startswith("Epoch >>> ")] == [f"Epoch >>> {e}" for e in range(4)]
    assert any(ln.startswith(">>> Saving checkpoint with score ") for ln in lines)
    assert any(ln.startswith("Learning rate [3]: ") for ln in lines)
    # TensorBoard: the original's tags in the train and val writers, the visualisation image
    found = scalars(out, "ae")
    for tag in ORIGINAL_TAGS[:4]:
        assert set(found[f"val/{tag}"]) == {0, 2} and set(found[f"train/{tag}"]) == {0, 2}
    for tag in ORIGINAL_TAGS[4:]:
        assert set(found[f"train/{tag}"]) == {0, 1, 2, 3}
    assert found["val/all/loss_mask"] and set(found["val/all/checkpoint_score"]) == {2}
    assert any(t.startswith("val/") and t.endswith("/AP") and t[4:6].isdigit() for t in found)
    assert all(math.isfinite(v) for values in found.values() for v in values.values())
    assert found["train/lr/enc_group_02"][3] == pytest.approx(0.01)
    images = read_events(os.path.join(run_dir(out, "ae", "logs"), "train"))["visualisation"]
    assert set(images) == {0, 1, 2, 3}
    img = Image.open(io.BytesIO(images[3]))
    # 4 images in one column, each a row of image + cam + dec + pseudo under a 16-px header, 8-px padding
    assert img.size == (8 + 4 * 48 + 8, 8 + 4 * (16 + 48 + 8))
    # resolved config and the commit, written at the start; the fixed batch shared by the experiment
    logdir = run_dir(out, "ae", "logs")
    with open(os.path.join(logdir, "config.yaml")) as f:
        assert "BACKBONE: resnet18" in f.read()
    with open(os.path.join(logdir, "git.txt")) as f:
        text = f.read()
    assert text.startswith("commit: ") and "command: " in text
    assert os.path.isfile(os.path.join(out, "logs", "pascal_voc", "t", "fixed_batch.pt"))


def test_same_seed_same_losses_with_or_without_loader_workers(ae_run, synthetic_root, tmp_path):
    """Augmentation is seeded per sample, so loading in a worker process gives the same run (--workers also sets
    the thread count, as the original, and the float results depend on it: 1 thread in both runs)."""
    out, _ = ae_run
    r = run_train(train_args(synthetic_root, str(tmp_path), "ae", epochs=3, workers=1))
    assert r.returncode == 0, r.stderr[-3000:]
    assert scalars(str(tmp_path), "ae") == scalars(out, "ae")
    other = run_train(train_args(synthetic_root, str(tmp_path), "seed2", epochs=0, seed=2))
    assert other.returncode == 0, other.stderr[-3000:]
    assert scalars(str(tmp_path), "seed2")["train/train_epoch/loss"] != scalars(out, "ae")["train/train_epoch/loss"]


def test_baseline_through_the_launch_script(synthetic_root, tmp_path):
    """launch/run_bsl_resnet38.sh in the foreground, as a user runs it from another directory."""
    extra = ("--workers 0 --random-seed 3 --set " + " ".join(train_args(synthetic_root, "", "x", epochs=2)[
        train_args(synthetic_root, "", "x").index("--set") + 1:]))
    e = env()
    e.update(FOREGROUND="1", EXP="t", RUN_ID="bsl", LOGDIR=str(tmp_path / "logs"),
             SNAPSHOT_DIR=str(tmp_path / "snapshots"), EXTRA_ARGS=extra)
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "run_bsl_resnet38.sh")], cwd=str(tmp_path), env=e,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    # the baseline's pairs come first, the user's after them (NET.MODEL ae from the user's list wins over bsl)
    assert "--run-id bsl" in r.stdout.splitlines()[0]
    assert "--set NET.MODEL bsl TRAIN.NUM_EPOCHS 6 NET.BACKBONE resnet18" in r.stdout.splitlines()[0]
    log = tmp_path / "logs" / "pascal_voc" / "t" / "bsl.log"
    assert log.is_file() and "Epoch >>> 2" in log.read_text()
    assert any(f.startswith("model_enc_e002Xs") for f in snapshot_files(str(tmp_path), "bsl"))
    assert "visualisation" in read_events(str(tmp_path / "logs" / "pascal_voc" / "t" / "bsl" / "train"))


def test_bsl_model_trains(synthetic_root, tmp_path):
    r = run_train(train_args(synthetic_root, str(tmp_path), "bsl", epochs=2, model="bsl"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Model: bsl" in r.stdout and "loss_mask" not in r.stdout
    found = scalars(str(tmp_path), "bsl")
    assert "train/all/loss_mask" not in found and math.isfinite(found["val/all/loss"][2])
    assert any(f.startswith("model_enc_e002Xs") for f in snapshot_files(str(tmp_path), "bsl"))


def test_non_finite_loss_stops_with_epoch_and_iteration(synthetic_root, tmp_path):
    r = run_train(train_args(synthetic_root, str(tmp_path), "nan", epochs=3, sets=["NET.LR", "1e30"]))
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: non-finite loss at epoch ") and ", iteration " in err[0]
    assert "Traceback" not in r.stderr


def test_check_only(synthetic_root, tmp_path):
    ok = run_train(train_args(synthetic_root, str(tmp_path), "chk", extra=["--check"]))
    assert ok.returncode == 0 and "OK: " in ok.stdout, ok.stderr[-2000:]
    assert not os.path.exists(os.path.join(run_dir(str(tmp_path), "chk", "logs"), "config.yaml"))
    # several problems at once, each on its own line
    bad = run_train(train_args(str(tmp_path / "nowhere"), str(tmp_path), "chk", extra=["--check"],
                               sets=["TRAIN.AMP", "fp8", "NET.MODEL", "vgg16"]))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    assert any("TRAIN.AMP" in ln for ln in lines) and any("NET.MODEL" in ln for ln in lines)
    assert any("nowhere" in ln for ln in lines) and all(ln.startswith("error: ") for ln in lines)


def test_resume_of_a_missing_snapshot_is_an_error(synthetic_root, tmp_path):
    r = run_train(train_args(synthetic_root, str(tmp_path), "m", extra=["--resume", "e004Xs0.900"]))
    assert r.returncode == 2 and "model_enc_e004Xs0.900.pth not found" in r.stderr and "Traceback" not in r.stderr
    r = run_train(train_args(synthetic_root, str(tmp_path), "m", extra=["--resume", "last"]))
    assert r.returncode == 2 and "no complete snapshot" in r.stderr and "Traceback" not in r.stderr


MASK_TAGS = ["masks/miou_cam", "masks/miou21_cam", "masks/miou_dec", "masks/miou21_dec", "masks/miou_pred",
             "masks/miou21_pred", "masks/pseudo_coverage"]


def test_every_validation_scores_the_masks_and_the_log_has_an_eta(ae_run):
    """By default: the masks' mIoU in both writers at every validation, console lines after the original's, an ETA
    after every epoch but the last; snapshots still by 1 - validation loss and no per-iteration scalars."""
    out, r = ae_run
    found = scalars(out, "ae")
    for tag in MASK_TAGS:
        for writer in ("train", "val"):
            assert set(found[f"{writer}/{tag}"]) == {0, 2}, tag
            assert all(0 <= v <= 1 for v in found[f"{writer}/{tag}"].values())
    assert found["val/all/checkpoint_score"][2] == pytest.approx(1 - found["val/all/loss"][2], abs=1e-6)
    assert not any(t.startswith("train/train_iter/") for t in found)
    lines = r.stdout.splitlines()
    first = lines.index(next(ln for ln in lines if ln.startswith("mIoU raw masks: ")))
    assert lines[first - 1].startswith("loss: ")  # after the original's lines
    assert lines[first + 1].startswith("mIoU PAMR-refined masks: ") and "(all 21 classes)" in lines[first + 1]
    value = float(lines[first].split(": ")[1].split(" ")[0])
    assert value == pytest.approx(100 * found["train/masks/miou_cam"][0], abs=0.01)
    etas = [ln for ln in lines if ln.startswith("ETA: ")]
    assert len(etas) == 3 and etas[-1].split(" (")[1].startswith("2 iterations left")


def test_tensorboard_of_the_environment_reads_the_logs(ae_run):
    """`tensorboard --logdir logs` (README): the command is installed next to this interpreter and its reader finds
    the validation's mIoU scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = ae_run
    assert os.access(os.path.join(os.path.dirname(sys.executable), "tensorboard"), os.X_OK)
    events = EventAccumulator(os.path.join(run_dir(out, "ae", "logs"), "val"))
    events.Reload()
    assert set(MASK_TAGS) <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("masks/miou_pred")] == [0, 2]


def test_snapshots_by_miou_and_per_iteration_losses(synthetic_root, tmp_path):
    r = run_train(train_args(synthetic_root, str(tmp_path), "miou", epochs=2,
                             sets=["TRAIN.SNAPSHOT_SCORE", "miou", "TRAIN.LOG_ITER_LOSSES", "True"]))
    assert r.returncode == 0, r.stderr[-3000:]
    found = scalars(str(tmp_path), "miou")
    score = found["val/masks/miou_pred"][2]
    assert found["val/all/checkpoint_score"] == {2: pytest.approx(score)}
    assert snapshot_files(str(tmp_path), "miou")[0] == "model_enc_e002Xs%4.3f.pth" % score
    for k in ("loss", "loss_cls", "loss_mask"):
        assert set(found[f"train/train_iter/{k}"]) == set(range(6))  # 3 epochs of 2 iterations
    # the epoch mean is the mean of its iterations
    assert found["train/train_epoch/loss"][1] == pytest.approx(
        (found["train/train_iter/loss"][2] + found["train/train_iter/loss"][3]) / 2, rel=1e-5)


def test_unknown_snapshot_score_is_an_error(synthetic_root, tmp_path):
    r = run_train(train_args(synthetic_root, str(tmp_path), "bad", extra=["--check"],
                             sets=["TRAIN.SNAPSHOT_SCORE", "iou"]))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["error: config key TRAIN.SNAPSHOT_SCORE is 'iou'; use 'loss' (1 - mean validation "
                                     "loss, the original's) or 'miou' (mIoU of the validation's final prediction)"]
