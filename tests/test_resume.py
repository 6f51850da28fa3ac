"""Resuming: from a best snapshot, after SIGTERM mid-epoch, after SIGKILL mid-epoch; each continues exactly as the
uninterrupted run with the same seed (same TensorBoard values, float for float)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from train_helpers import ROOT, env, run_dir, run_train, scalars, snapshot_files, train_args

EPOCHS = 4  # validation at 0, 2, 4; the best snapshot of epoch 2 is the one a resume starts from
ITERS = 3  # all 3 batches of the 12 training images
SETS = ["TRAIN.VAL_TRAIN_VOC", "False"]  # the train_voc pass is tested in test_train.py


@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref"))
    r = run_train(train_args(synthetic_root, out, "ref", epochs=EPOCHS, iters=ITERS, sets=SETS))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, scalars(out, "ref")


def _assert_same_from(found: dict, ref: dict, first_epoch: int) -> None:
    """Every value the reference logged from ``first_epoch`` on is there and identical."""
    compared = 0
    for tag, values in ref.items():
        for step, value in values.items():
            validation_tag = tag.split("/")[1] in ("all", "all_wo_BG", "masks")
            if step == first_epoch and step not in found.get(tag, {}) and validation_tag \
                    or step == first_epoch and tag.endswith("/AP"):
                continue  # the validation of the resumed epoch happened before its snapshot
            if step >= first_epoch:
                assert found[tag][step] == value, (tag, step)
                compared += 1
    assert compared > 20


def _start_and_signal(args: list[str], signum: int, after_epoch: int) -> subprocess.Popen:
    """Start train.py and send ``signum`` once the first iteration of epoch ``after_epoch`` is logged."""
    p = subprocess.Popen([sys.executable, "-u", "train.py", *args], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    epoch = -1
    for line in p.stdout:
        if line.startswith("Epoch >>> "):
            epoch = int(line.split()[-1])
        elif epoch == after_epoch and line.startswith("Loss [0000]"):
            p.send_signal(signum)
            break
    p.stdout.read()
    p.wait(timeout=120)
    return p


def _load_every_snapshot(directory: str) -> int:
    from models import build_model
    from models.weights import load_snapshot
    from utils.config import load_cfg

    cfg = load_cfg("configs/voc_resnet38.yaml", ["NET.BACKBONE", "resnet18", "NET.FROM_SCRATCH", "True"])
    model = build_model(cfg.NET)
    n = 0
    for name in os.listdir(directory):
        assert not name.startswith("."), f"unfinished temporary file {name} left"
        path = os.path.join(directory, name)
        if name.startswith("model_enc_"):
            load_snapshot(model, path)
            n += 1
        else:
            assert isinstance(torch.load(path, map_location="cpu", weights_only=True), dict)
    return n


def test_resume_from_a_best_snapshot_continues_the_run(reference, synthetic_root, tmp_path):
    ref_out, ref = reference
    snap = [f for f in snapshot_files(ref_out, "ref") if f.startswith("model_enc_e002Xs")][0]
    suffix = snap[len("model_enc_"):-len(".pth")]
    os.makedirs(run_dir(str(tmp_path), "b"))
    for kind in ("model", "opt", "state"):
        shutil.copy(os.path.join(run_dir(ref_out, "ref"), f"{kind}_enc_{suffix}.pth"), run_dir(str(tmp_path), "b"))
    r = run_train(train_args(synthetic_root, str(tmp_path), "b", epochs=EPOCHS, iters=ITERS, sets=SETS,
                             extra=["--resume", suffix]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resumed from {suffix}: epoch 2, training from iteration 0" in r.stdout
    _assert_same_from(scalars(str(tmp_path), "b"), ref, 2)


def test_resume_without_state_file_follows_the_original(reference, synthetic_root, tmp_path):
    """An original snapshot (model + opt only): start at epoch + 1, best score from the suffix."""
    ref_out, _ = reference
    snap = [f for f in snapshot_files(ref_out, "ref") if f.startswith("model_enc_e002Xs")][0]
    suffix = snap[len("model_enc_"):-len(".pth")]
    os.makedirs(run_dir(str(tmp_path), "o"))
    for kind in ("model", "opt"):
        shutil.copy(os.path.join(run_dir(ref_out, "ref"), f"{kind}_enc_{suffix}.pth"), run_dir(str(tmp_path), "o"))
    r = run_train(train_args(synthetic_root, str(tmp_path), "o", epochs=3, iters=1, extra=["--resume", suffix]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resumed from {suffix}: epoch 3, best score {float(suffix.split('Xs')[1]):.3f}" in r.stdout
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("Epoch >>> ")] == ["Epoch >>> 3"]


def test_sigterm_saves_a_resumable_snapshot(reference, synthetic_root, tmp_path):
    _, ref = reference
    args = train_args(synthetic_root, str(tmp_path), "s", epochs=EPOCHS, iters=ITERS, sets=SETS, workers=1)
    p = _start_and_signal(args, signal.SIGTERM, after_epoch=3)
    err = p.stderr.read()
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume e003Xi0000" in err and "Traceback" not in err
    interrupt = [f for f in snapshot_files(str(tmp_path), "s") if f.startswith("model_enc_e003Xi")]
    assert len(interrupt) == 1
    r = run_train(train_args(synthetic_root, str(tmp_path), "s", epochs=EPOCHS, iters=ITERS, sets=SETS,
                             extra=["--resume", "last"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resumed from e003Xi0000" in r.stdout
    _assert_same_from(scalars(str(tmp_path), "s"), ref, 0)
    assert _load_every_snapshot(run_dir(str(tmp_path), "s")) >= 2  # the best ones and the interrupt one
    assert interrupt[0] in snapshot_files(str(tmp_path), "s")


def test_sigkill_mid_epoch_resumes_from_the_last_snapshot(reference, synthetic_root, tmp_path):
    _, ref = reference
    args = train_args(synthetic_root, str(tmp_path), "k", epochs=EPOCHS, iters=ITERS, sets=SETS)
    p = _start_and_signal(args, signal.SIGKILL, after_epoch=3)
    assert p.returncode == -signal.SIGKILL
    assert _load_every_snapshot(run_dir(str(tmp_path), "k")) == 1
    r = run_train(train_args(synthetic_root, str(tmp_path), "k", epochs=EPOCHS, iters=ITERS, sets=SETS,
                             extra=["--resume", "last"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resumed from e002Xs" in r.stdout
    _assert_same_from(scalars(str(tmp_path), "k"), ref, 0)
    assert _load_every_snapshot(run_dir(str(tmp_path), "k")) >= 1
