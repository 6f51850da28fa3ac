"""A full disk, signals and killed runs, as a user meets them.

A write that fails (ENOSPC simulated in-process, or a real small tmpfs / the simulated full disk of
tests/fulldisk under the real CLI) is one line naming the file and the cause, leaves no temporary file and no
partial snapshot set; SIGTERM and kill -9 of inference and evaluation leave no worker process behind; a second
Ctrl-C stops training without a traceback; config values and list files are checked the same way everywhere.
"""
from __future__ import annotations

import builtins
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (CONFIG, EXIT_USER_ERROR, ROOT, SNAPSHOT_SUFFIX, TINY_INFER_SET, SmallDisk, alive, copy_tree,
                     describe, descendants, files_under, run_script, save_model_snapshot, stderr_lines, temporaries)
from train_helpers import env as train_env
from train_helpers import train_args
from utils.checkpoints import Checkpointer
from utils.config import INFER_RANGES, TRAIN_RANGES, load_cfg, range_problems
from utils.errors import UserError
from utils.fileio import save_image, save_torch, write_json

ORPHAN_GRACE_S = 10  # no process of a killed run may be alive this long after the kill
START_TIMEOUT_S = 240


# ------------------------------------------------------------------------------------ in-process: failing writes

class _FailingFile:
    """A file whose writes fail with ``err`` once ``budget[0]`` bytes are used up (a disk filling up)."""

    def __init__(self, f, budget: list[int], err: int):
        self._f, self._budget, self._err = f, budget, err

    def write(self, data):
        if len(data) > self._budget[0]:
            raise OSError(self._err, os.strerror(self._err))
        self._budget[0] -= len(data)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


@pytest.fixture
def failing_disk(tmp_path, monkeypatch):
    """``set(bytes, errno)``: writes below tmp_path/disk fail once that many bytes are written."""
    disk = tmp_path / "disk"
    disk.mkdir()
    real_open = builtins.open
    state = {"budget": [1 << 40], "err": errno.ENOSPC}

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and "w" in mode and str(file).startswith(str(disk)):
            return _FailingFile(f, state["budget"], state["err"])
        return f

    monkeypatch.setattr(builtins, "open", fake_open)

    def set_budget(n: int, err: int = errno.ENOSPC) -> str:
        state["budget"][0], state["err"] = n, err
        return str(disk)

    return set_budget


@pytest.mark.parametrize("err, cause", [(errno.ENOSPC, "no space left on the device"),
                                        (errno.EDQUOT, "disk quota exceeded"), (errno.EIO, "input/output error")])
def test_a_failed_write_names_the_file_and_cause_and_keeps_the_old_file(failing_disk, err, cause):
    disk = failing_disk(1 << 40)
    old = os.path.join(disk, "r.json")
    write_json(old, {"old": True})
    failing_disk(100, err)  # part-way through each of the writes below
    for write, path in ((lambda p: save_torch({"w": torch.zeros(1000)}, p), "model.pth"),
                        (lambda p: write_json(p, {"values": list(range(200))}), "r.json"),
                        (lambda p: save_image(Image.new("RGB", (64, 64), (1, 2, 3)), p), "vis.png")):
        target = os.path.join(disk, path)
        with pytest.raises(UserError) as e:
            write(target)
        message = str(e.value)
        assert len(message.splitlines()) == 1 and target in message and cause in message, message
    assert temporaries(disk) == []
    with open(old) as f:
        assert json.load(f) == {"old": True}
    assert sorted(os.listdir(disk)) == ["r.json"]


def test_a_snapshot_that_cannot_be_written_leaves_none_of_its_files(failing_disk):
    model = torch.nn.Linear(200, 100)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 200)).sum().backward()
    opt.step()  # momentum buffers: the optimiser file is as large as the model's
    disk = failing_disk(1 << 40)
    ckpt = Checkpointer(disk, model, opt)
    assert ckpt.save("e001Xs0.500", {"epoch": 1})
    first = sorted(os.listdir(disk))
    failing_disk(120_000)  # the optimiser and state files fit, the model file does not
    with pytest.raises(UserError, match="model_enc_e002Xs0.600.pth: no space left"):
        ckpt.save("e002Xs0.600", {"epoch": 2})
    assert sorted(os.listdir(disk)) == first  # no opt/state pair without its model, no temporary file
    assert ckpt.last_good() == "e001Xs0.500"


# -------------------------------------------------------------------------------------------- config values

def test_config_values_out_of_range_are_all_reported_at_once(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("NET:\n  LR: .nan\n  MOMENTUM: 1.0\nTEST:\n  FP_CUT_SCORE: 1.5\n")
    cfg = load_cfg(str(cfg_file), ["NET.WEIGHT_DECAY", "-1e-4", "NET.BETA1", "-0.1", "TEST.SCALES", "[1, 0]"])
    train = range_problems(cfg, TRAIN_RANGES)
    infer = range_problems(cfg, INFER_RANGES)
    assert [p.split(" is ")[0] for p in train] == ["config key NET.LR", "config key NET.WEIGHT_DECAY",
                                                  "config key NET.MOMENTUM", "config key NET.BETA1"]
    assert "not a finite number" in train[0]
    assert [p.split(" is ")[0] for p in infer] == ["config key TEST.SCALES", "config key TEST.FP_CUT_SCORE"]
    for shipped in glob.glob(os.path.join(ROOT, "configs", "*.yaml")):
        cfg = load_cfg(shipped)
        assert range_problems(cfg, TRAIN_RANGES) + range_problems(cfg, INFER_RANGES) == [], shipped


def test_train_reports_every_bad_value_before_building_anything(tmp_path, synthetic_root):
    args = train_args(synthetic_root, str(tmp_path), "r", sets=["NET.LR", "1e999", "NET.WEIGHT_DECAY", "-1.0"])
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=train_env(), capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 2 and "NET.LR is inf" in lines[0] and "NET.WEIGHT_DECAY is -1.0" in lines[1], describe(proc)
    assert files_under(str(tmp_path)) == {}


# ------------------------------------------------------------------------------------------ train.py, full disk

def _disk_env(disk: SmallDisk) -> dict[str, str]:
    e = train_env()
    if "PYTHONPATH" in disk.env:
        e.update(disk.env)
        e["PYTHONPATH"] = disk.env["PYTHONPATH"] + os.pathsep + ROOT
    return e


@pytest.fixture
def small_disk(tmp_path):
    made: list[SmallDisk] = []

    def make(size: int, simulate: bool = False) -> SmallDisk:
        made.append(SmallDisk(str(tmp_path), size, simulate))
        return made[-1]

    yield make
    for disk in made:
        disk.close()


def _assert_one_write_error(proc: subprocess.CompletedProcess, disk: SmallDisk) -> str:
    assert proc.returncode == EXIT_USER_ERROR, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors == lines[-1:], describe(proc)
    assert f"cannot write {disk.path}" in errors[0] and "no space left on the device" in errors[0], errors[0]
    assert temporaries(disk.path) == []
    return errors[0]


@pytest.mark.parametrize("where, size", [("snapshots", 4 << 20), ("logs", 64 << 10)])
def test_train_on_a_full_disk_ends_in_one_line_and_no_partial_snapshot(tmp_path, synthetic_root, small_disk,
                                                                      where, size):
    """snapshots: the optimiser and state files of the first snapshot fit, its model file does not; logs: the
    fixed visualisation batch does not fit."""
    disk = small_disk(size)
    out = str(tmp_path / "out")
    args = train_args(synthetic_root, out, "r", epochs=0, iters=1, sets=["TRAIN.PRETRAIN", "0"])
    args[args.index({"snapshots": "--snapshot-dir", "logs": "--logdir"}[where]) + 1] = disk.path
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=_disk_env(disk), capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    error = _assert_one_write_error(proc, disk)
    if where == "snapshots":
        assert "model_enc_e000Xs" in error, error
        assert files_under(disk.path) == {}
    else:
        assert "fixed_batch.pt" in error, error


def _train_until_first_loss(args: list[str], env: dict[str, str], act: Callable[[subprocess.Popen], None]
                            ) -> tuple[subprocess.Popen, str, str]:
    """Start train.py, call `act` on the process once "Loss [0000]" is printed (the first snapshot is on
    disk and training has started), and wait for it to end; returns the process, the rest of stdout and stderr."""
    p = subprocess.Popen([sys.executable, "-u", "train.py", *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("Loss [0000]"):
                act(p)
                break
        out_rest, err = p.communicate(timeout=START_TIMEOUT_S)
    finally:
        p.kill()
    return p, out_rest, err


def test_sigterm_on_a_full_disk_names_the_last_good_snapshot(tmp_path, synthetic_root, small_disk):
    disk = small_disk(256 << 20)
    out = str(tmp_path / "out")
    args = train_args(synthetic_root, out, "r", epochs=1, iters=3, sets=["TRAIN.PRETRAIN", "0"])
    args[args.index("--snapshot-dir") + 1] = disk.path

    def fill_and_stop(p: subprocess.Popen) -> None:
        disk.fill()
        p.send_signal(signal.SIGTERM)

    p, out_rest, err = _train_until_first_loss(args, _disk_env(disk), fill_and_stop)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err + out_rest, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    best = sorted(os.path.basename(f) for f in glob.glob(os.path.join(disk.path, "**", "model_enc_*"),
                                                         recursive=True))
    assert len(best) == 1 and "Xs" in best[0], best
    suffix = best[0][len("model_enc_"):-len(".pth")]
    assert last.startswith("error: stopped by SIGTERM") and "could not be written" in last, last
    assert "no space left on the device" in last and f"last good snapshot is {suffix}" in last, last
    names = sorted(os.listdir(os.path.join(disk.path, "pascal_voc", "t", "r")))
    assert names == sorted(f"{k}_enc_{suffix}.pth" for k in ("model", "opt", "state")), names


def test_a_second_ctrl_c_stops_training_at_once_without_a_traceback(tmp_path, synthetic_root):
    out = str(tmp_path / "out")
    args = train_args(synthetic_root, out, "r", epochs=1, iters=3)

    def interrupt_twice(p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
        p.send_signal(signal.SIGINT)

    p, out_rest, err = _train_until_first_loss(args, train_env(), interrupt_twice)
    assert p.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err + out_rest, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "stopped at once by a second SIGINT" in last and "starts again from the beginning" in last, last
    assert temporaries(out) == []


# ------------------------------------------------------------------------------ infer_val.py and eval_seg.py

@pytest.fixture(scope="module")
def snapshot_root(tmp_path_factory) -> str:
    """A snapshot directory with the light model as run main/r1 (what --resume SNAPSHOT_SUFFIX loads)."""
    root = str(tmp_path_factory.mktemp("snapshots"))
    save_model_snapshot(os.path.join(root, "pascal_voc", "main", "r1", f"model_enc_{SNAPSHOT_SUFFIX}.pth"),
                        "resnet18", "ae")
    return root


def _infer_args(data: str, snapshots: str, logs: str, out: str, infer_list: str, workers: int = 0,
                *extra: str) -> list[str]:
    return ["--cfg", CONFIG, "--dataset", "pascal_voc", "--exp", "main", "--run", "r1", "--workers", str(workers),
            "--logdir", logs, "--snapshot-dir", snapshots, "--resume", SNAPSHOT_SUFFIX, "--infer-list", infer_list,
            "--mask-output-dir", out, *extra, "--set", *TINY_INFER_SET, "TEST.DATA_ROOT", data]


def test_infer_on_a_full_disk_ends_in_one_line_and_leaves_only_whole_masks(tmp_path, synthetic_root, snapshot_root,
                                                                           small_disk):
    disk = small_disk(32 << 10)  # a few images' masks and visualisations
    args = _infer_args(synthetic_root, snapshot_root, str(tmp_path / "logs"), disk.path,
                       os.path.join(synthetic_root, "val_voc.txt"), 1)
    proc = run_script("infer_val.py", *args, env=disk.env)
    error = _assert_one_write_error(proc, disk)
    assert "CRF/writer failed on val_" in error, error
    for path in files_under(disk.path):
        with Image.open(path) as im:
            im.load()  # every file that is there is whole


def _image_folder(synthetic_root: str, folder: str, n: int) -> str:
    """``n`` images (links to one synthetic image) under distinct names: a run that lasts a while."""
    os.makedirs(folder)
    source = sorted(glob.glob(os.path.join(synthetic_root, "voc", "**", "val_*.jpg"), recursive=True))[0]
    for i in range(n):
        os.link(source, os.path.join(folder, f"img_{i:04d}.jpg"))
    return folder


def _start_and_wait_for_workers(cmd: list[str], workers: int, env: dict[str, str] | None = None
                                ) -> tuple[subprocess.Popen, list[int]]:
    """Start ``cmd`` from the repository root and return once ``workers`` processes run below it."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    p = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline and p.poll() is None:
        children = descendants(p.pid)
        if len(children) >= workers:
            return p, children
        time.sleep(0.1)
    p.kill()
    out, err = p.communicate()
    raise AssertionError(f"{workers} workers never ran (exit {p.returncode}):\n{out[-2000:]}\n{err[-2000:]}")


def _assert_no_process_left(p: subprocess.Popen, children: list[int], signum: int, killed_at: float) -> str:
    try:
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    time.sleep(max(0.0, killed_at + ORPHAN_GRACE_S - time.time()))
    assert alive(children) == [], f"alive {ORPHAN_GRACE_S} s after {signal.Signals(signum).name}: {alive(children)}"
    assert p.returncode in (128 + signum, -signum), err
    assert "Traceback" not in err, err
    return err


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_inference_leaves_no_process_behind(tmp_path, synthetic_root, snapshot_root, signum):
    folder = _image_folder(synthetic_root, str(tmp_path / "images"), 400)
    out = str(tmp_path / "masks")
    args = _infer_args(synthetic_root, snapshot_root, str(tmp_path / "logs"), out, folder, 2)
    # 2 CRF/writer processes and 2 DataLoader workers
    p, children = _start_and_wait_for_workers([sys.executable, "infer_val.py", *args], 4)
    time.sleep(1.0)  # into the loop: images in flight in every worker
    killed_at = time.time()
    p.send_signal(signum)
    err = _assert_no_process_left(p, children, signum, killed_at)
    if signum == signal.SIGTERM:
        lines = stderr_lines(subprocess.CompletedProcess([], p.returncode, "", err))
        assert lines[-1].startswith("stopped by SIGTERM"), err
    assert temporaries(out) == []


_SLOW_EVAL = ("import time; import eval_seg; from utils import mask_eval; from utils.errors import run_main; "
              "real = mask_eval.evaluate_image; "
              "mask_eval.evaluate_image = lambda entry, oracle: (time.sleep(0.5), real(entry, oracle))[1]; "
              "run_main(eval_seg.main)")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_evaluation_leaves_no_process_behind(tmp_path, synthetic_root, signum):
    """eval_seg.py with each image slowed down (so that the kill lands mid-run) and 2 decoding processes."""
    data, masks = _predictions_of_gt(synthetic_root, str(tmp_path))
    with open(os.path.join(data, "val_voc.txt")) as f:
        lines = f.read().splitlines()
    long_list = tmp_path / "long.txt"
    long_list.write_text("\n".join(lines * 20) + "\n")
    cmd = [sys.executable, "-c", _SLOW_EVAL, "--data", data, "--filelist", str(long_list), "--masks", masks,
           "--log-scores", str(tmp_path / "scores.log"), "--workers", "2"]
    p, children = _start_and_wait_for_workers(cmd, 2)
    time.sleep(1.0)
    killed_at = time.time()
    p.send_signal(signum)
    _assert_no_process_left(p, children, signum, killed_at)
    assert not os.path.exists(tmp_path / "scores.log") and not os.path.exists(os.path.join(masks, "eval.json"))


def _predictions_of_gt(synthetic_root: str, tmp: str) -> tuple[str, str]:
    """A copy of the data and a prediction directory holding every val GT mask (255 as 0): a 100 % score."""
    data = copy_tree(synthetic_root, os.path.join(tmp, "data"))
    pred = os.path.join(tmp, "pred")
    os.makedirs(pred)
    with open(os.path.join(data, "val_voc.txt")) as f:
        for line in f.read().splitlines():
            gt = os.path.join(data, line.split()[1])
            labels = np.asarray(Image.open(gt)).copy()
            labels[labels == 255] = 0
            Image.fromarray(labels).save(os.path.join(pred, os.path.basename(gt)))
    return data, pred


@pytest.mark.parametrize("simulate", [False, True], ids=["small-disk", "simulated-full-disk"])
def test_eval_on_a_full_disk_ends_in_one_line(tmp_path, synthetic_root, small_disk, simulate):
    """The JSON and the figures next to it on a disk too small for them."""
    data, pred = _predictions_of_gt(synthetic_root, str(tmp_path))
    disk = small_disk(16 << 10, simulate)
    proc = run_script("eval_seg.py", "--data", data, "--filelist", os.path.join(data, "val_voc.txt"), "--masks",
                      pred, "--log-scores", str(tmp_path / "scores.log"), "--json-out",
                      os.path.join(disk.path, "eval.json"), "--workers", "1", env=disk.env)
    error = _assert_one_write_error(proc, disk)
    assert "eval.json" not in os.listdir(disk.path), error


def test_eval_reads_lists_as_the_data_layer_and_names_repeated_lines(tmp_path, synthetic_root):
    data, pred = _predictions_of_gt(synthetic_root, str(tmp_path))
    with open(os.path.join(data, "val_voc.txt")) as f:
        lines = f.read().splitlines()
    spaced = [line.replace(" ", "  \t") for line in lines]  # any whitespace between the columns
    listed = tmp_path / "spaced.txt"
    listed.write_text("\n".join(spaced + spaced[:1]) + "\n")  # the first line again at the end
    proc = run_script("eval_seg.py", "--data", data, "--filelist", str(listed), "--masks", pred, "--log-scores",
                      str(tmp_path / "scores.log"), "--workers", "1")
    assert proc.returncode == 0, describe(proc)
    assert f"# of images: {len(lines) + 1}" in proc.stdout
    warnings = [line for line in stderr_lines(proc) if line.startswith("Warning:")]
    assert len(warnings) == 1 and str(listed) in warnings[0] and f"lines 1, {len(lines) + 1}" in warnings[0], \
        describe(proc)
    # the same malformed line gets the same message from every entry point
    bad = tmp_path / "bad.txt"
    bad.write_text(lines[0] + " extra.png\n" + "\n".join(lines[1:]) + "\n")
    proc = run_script("eval_seg.py", "--data", data, "--filelist", str(bad), "--masks", pred, "--log-scores",
                      str(tmp_path / "scores2.log"), "--workers", "1")
    assert proc.returncode == EXIT_USER_ERROR, describe(proc)
    assert f"file list {bad} line 1: expected '<image> [<mask>]', got 3 columns" in proc.stdout, describe(proc)
    with pytest.raises(UserError, match=f"file list {bad} line 1: expected '<image> \\[<mask>\\]', got 3 columns"):
        from datasets.filelists import read_file_list
        read_file_list(str(bad), data, need_masks=True)


def test_infer_reports_every_problem_at_once_and_check_creates_nothing(tmp_path, synthetic_root):
    out = str(tmp_path / "masks")
    logs = str(tmp_path / "logs")
    missing_list = str(tmp_path / "no_list.txt")
    for extra in ((), ("--check",)):
        proc = run_script("infer_val.py", *_infer_args(synthetic_root, str(tmp_path / "snapshots"), logs, out,
                                                       missing_list, 0, *extra))
        assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stderr, describe(proc)
        lines = stderr_lines(proc)
        assert len(lines) == 2 and missing_list in lines[0] and f"model_enc_{SNAPSHOT_SUFFIX}.pth" in lines[1], \
            describe(proc)
        assert not os.path.exists(out) and not os.path.exists(logs)
