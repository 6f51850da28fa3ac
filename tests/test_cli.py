"""The command line of every entry point and tool: -h, the original's flags and defaults (SPEC 2.4, 9.1), one line
of help per option, the directory conventions, --check on good and bad data, and atomic writes under SIGKILL."""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import signal
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (CONFIG, EXIT_USER_ERROR, PYTHON, ROOT, SNAPSHOT_SUFFIX, TINY_INFER_SET, TINY_TRAIN_SET,
                           copy_tree, describe, files_under, run_script, save_model_snapshot, stderr_lines, truncate)
from utils.errors import UserError
from utils.run_setup import get_arg_parser, resolve_dirs

# SPEC 2.4: flag -> (dest, default) of the parser shared by train.py and infer_val.py (--cfg is required)
ORIGINAL_FLAGS = {
    "--dataset": ("dataset", None),
    "--exp": ("exp", "main"),
    "--resume": ("resume", None),
    "--run": ("run", None),
    "--workers": ("workers", 8),
    "--snapshot-dir": ("snapshot_dir", "./snapshots"),
    "--logdir": ("logdir", "./logs"),
    "--infer-list": ("infer_list", "data/val_augvoc.txt"),
    "--mask-output-dir": ("mask_output_dir", "results/"),
    "--cfg": ("cfg_file", None),
    "--set": ("set_cfgs", []),
    "--random-seed": ("random_seed", 64),
}
NEW_FLAGS = {"--device": ("device", "auto"), "--check": ("check", False)}
# SPEC 9.1
EVAL_FLAGS = {
    "--data": ("data", "./data/annotation"),
    "--filelist": ("filelist", "./data/val.txt"),
    "--masks": ("masks", "./masks"),
    "--oracle-from": ("oracle_from", ""),
    "--log-scores": ("log_scores", "./scores.log"),
}
TRAIN_INFER_FLAGS = {**ORIGINAL_FLAGS, **NEW_FLAGS}
# inference reads every original flag but the seed, which it accepts without listing it
UNREAD_BY_INFERENCE = ("--random-seed",)
# every script a user runs -> (module, the flags its -h must list)
SCRIPTS = {
    "train.py": ("train", TRAIN_INFER_FLAGS),
    "infer_val.py": ("infer_val", {k: v for k, v in TRAIN_INFER_FLAGS.items() if k not in UNREAD_BY_INFERENCE}),
    "eval_seg.py": ("eval_seg", {**EVAL_FLAGS, "--dataset": ("dataset", "pascal_voc")}),
    "tools/check_data.py": ("tools.check_data", {"--root": None, "--list": None, "--no-masks": None, "--limit": None,
                                                 "--dataset": ("dataset", "pascal_voc")}),
    "tools/make_filelists.py": ("tools.make_filelists", {"--voc": None, "--sbd": None, "--voc-test": None,
                                                         "--out": None}),
    "tools/convert_sbd.py": ("tools.convert_sbd", {"--inp": ("inp", "./dataset/cls/"),
                                                   "--out": ("out", "./dataset/cls_png/")}),
    "tools/make_synthetic.py": ("tools.make_synthetic", {"--out": None, "--num-train": None, "--num-val": None,
                                                         "--num-test": None, "--size": None, "--seed": None,
                                                         "--difficulty": None}),
    "tools/eval_pseudo.py": ("tools.eval_pseudo", {"--cfg": None, "--snapshot": None, "--root": None,
                                                   "--list": None, "--out": None,
                                                   "--dataset": ("dataset", "pascal_voc")}),
    "tools/eval_cam.py": ("tools.eval_cam", {"--cfg": None, "--snapshot": None, "--root": None, "--list": None,
                                             "--out": None, "--thresholds": None,
                                             "--dataset": ("dataset", "pascal_voc")}),
    "tools/convert_coco.py": ("tools.convert_coco", {"--root": None, "--splits": None, "--annotations": None,
                                                     "--workers": None, "--overwrite": None}),
    "tools/make_synthetic_coco.py": ("tools.make_synthetic_coco", {"--out": None, "--num-train": None,
                                                                   "--num-val": None, "--size": None, "--seed": None}),
    "tools/demo_report.py": ("tools.demo_report", {"--data": None, "--out": None, "--list": None}),
}


class _Captured(Exception):
    pass


def script_parser(module_name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's main() builds, caught when it parses (nothing else of main runs)."""
    seen: list[argparse.ArgumentParser] = []

    def capture(self, *args, **kwargs):
        seen.append(self)
        raise _Captured

    module = importlib.import_module(module_name)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Captured):
        module.main([])
    return seen[0]


# ---------------------------------------------------------------------------------------------------------------- -h

@pytest.mark.parametrize("script", list(SCRIPTS))
def test_help_lists_every_flag_and_exits_0(script):
    proc = run_script(script, "-h")
    assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    assert proc.stdout.startswith("usage:")
    for flag in SCRIPTS[script][1]:
        assert f"{flag} " in proc.stdout or f"{flag}\n" in proc.stdout, f"{script} -h does not list {flag}"


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_every_option_has_one_line_of_help_and_the_originals_defaults(script, monkeypatch):
    module_name, flags = SCRIPTS[script]
    parser = script_parser(module_name, monkeypatch)
    actions = {s: a for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            text = (action.help or "").strip()
            assert text and "\n" not in text, f"{script} {action.option_strings[0]}: help {action.help!r}"
    for flag, expected in flags.items():
        assert flag in actions, f"{script} has no {flag}"
        if expected is not None:
            dest, default = expected
            assert (actions[flag].dest, actions[flag].default) == (dest, default), flag


def test_train_and_infer_share_the_original_parser(monkeypatch):
    """train.py and infer_val.py accept the same original flags; --cfg is required, --set takes KEY VALUE lists."""
    for module_name in ("train", "infer_val"):
        parser = script_parser(module_name, monkeypatch)
        monkeypatch.undo()
        args = parser.parse_args(["--cfg", "c.yaml", "--set", "NET.LR", "0.1", "TRAIN.BATCH_SIZE", "4"])
        assert args.set_cfgs == ["NET.LR", "0.1", "TRAIN.BATCH_SIZE", "4"] and args.cfg_file == "c.yaml"
        with pytest.raises(SystemExit):
            parser.parse_args(["--dataset", "pascal_voc"])  # no --cfg
        # inference does not read the seed but accepts it, as the original's shared parser
        assert parser.parse_args(["--cfg", "c.yaml", "--random-seed", "3"]).random_seed == 3


def test_infer_help_lists_only_what_inference_reads():
    proc = run_script("infer_val.py", "-h")
    assert proc.returncode == 0, describe(proc)
    for flag in UNREAD_BY_INFERENCE:
        assert flag not in proc.stdout


# ------------------------------------------------------------------------------------------ directory conventions

def test_resolve_dirs_makes_the_originals_run_directories(tmp_path):
    args = get_arg_parser().parse_args(["--cfg", "x.yaml", "--dataset", "pascal_voc", "--exp", "v01", "--run", "r07",
                                        "--logdir", str(tmp_path / "logs"), "--snapshot-dir", str(tmp_path / "snaps")])
    dirs = resolve_dirs(args)
    assert dirs.logdir == str(tmp_path / "logs" / "pascal_voc" / "v01" / "r07")
    assert dirs.snapshot_dir == str(tmp_path / "snaps" / "pascal_voc" / "v01" / "r07")
    # shared by every run of the experiment (computed from the base --logdir)
    assert dirs.fixed_batch_path == str(tmp_path / "logs" / "pascal_voc" / "v01" / "fixed_batch.pt")
    assert args.logdir == str(tmp_path / "logs")  # the parsed arguments stay as given
    assert os.listdir(tmp_path) == []  # nothing is created until the run's checks passed
    dirs.make()
    assert os.path.isdir(dirs.logdir) and os.path.isdir(dirs.snapshot_dir)
    defaults = resolve_dirs(get_arg_parser().parse_args(["--cfg", "x", "--dataset", "d", "--run", "r"]))
    assert (defaults.logdir, defaults.snapshot_dir) == ("./logs/d/main/r", "./snapshots/d/main/r")


@pytest.mark.parametrize("argv, word", [
    ([], "--dataset"),
    (["--dataset", "pascal_voc"], "--run"),
    (["--dataset", "pascal_voc", "--run", "a/b"], "--run"),
    (["--dataset", "pascal_voc", "--run", "r", "--exp", ".."], "--exp"),
])
def test_resolve_dirs_rejects_names_that_are_not_one_directory(argv, word, tmp_path):
    args = get_arg_parser().parse_args(["--cfg", "x.yaml", "--logdir", str(tmp_path), *argv])
    with pytest.raises(UserError, match=word):
        resolve_dirs(args)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------- --check

@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> str:
    return save_model_snapshot(str(tmp_path_factory.mktemp("cli_snapshot") / "resnet18_ae.pth"), "resnet18", "ae")


def _train_check(tmp: str, data: str, *extra: str, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_script("train.py", "--dataset", "pascal_voc", "--cfg", CONFIG, "--exp", "cli", "--run", "chk",
                      "--workers", "0", "--logdir", os.path.join(tmp, "logs"),
                      "--snapshot-dir", os.path.join(tmp, "snapshots"), "--check", *extra,
                      "--set", *TINY_TRAIN_SET, "DATASET.ROOT", data, *sets)


def _place_snapshot(tmp: str, snapshot: str) -> None:
    run_dir = os.path.join(tmp, "snapshots", "pascal_voc", "cli", "chk")
    os.makedirs(run_dir, exist_ok=True)
    os.link(snapshot, os.path.join(run_dir, f"model_enc_{SNAPSHOT_SUFFIX}.pth"))


def _infer_check(tmp: str, data: str, *extra: str, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_script("infer_val.py", "--dataset", "pascal_voc", "--cfg", CONFIG, "--exp", "cli", "--run", "chk",
                      "--workers", "0", "--logdir", os.path.join(tmp, "logs"),
                      "--snapshot-dir", os.path.join(tmp, "snapshots"), "--resume", SNAPSHOT_SUFFIX,
                      "--infer-list", os.path.join(data, "val_voc.txt"),
                      "--mask-output-dir", os.path.join(tmp, "masks"), "--check", *extra,
                      "--set", *TINY_INFER_SET, "TEST.DATA_ROOT", data, *sets)


def test_train_check_on_good_data_passes_writes_nothing_and_makes_the_run_dirs(tmp_path, synthetic_root):
    before = files_under(str(tmp_path), synthetic_root)
    proc = _train_check(str(tmp_path), synthetic_root)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    assert files_under(str(tmp_path), synthetic_root) == before  # no snapshot, no config.yaml, no fixed batch
    assert os.path.isdir(tmp_path / "logs" / "pascal_voc" / "cli" / "chk")
    assert os.path.isdir(tmp_path / "snapshots" / "pascal_voc" / "cli" / "chk")


def test_infer_check_on_good_data_passes_and_writes_no_mask(tmp_path, synthetic_root, snapshot):
    _place_snapshot(str(tmp_path), snapshot)
    before = files_under(str(tmp_path), synthetic_root)
    proc = _infer_check(str(tmp_path), synthetic_root)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    assert files_under(str(tmp_path), synthetic_root) == before
    assert glob.glob(str(tmp_path / "masks" / "**" / "*.png"), recursive=True) == []


def _break_three_files(data: str) -> list[str]:
    """A truncated training JPEG, a val mask with a value outside the classes, a val image that is missing."""
    with open(os.path.join(data, "train_augvoc.txt")) as f:
        train = [line.split() for line in f.read().splitlines()]
    with open(os.path.join(data, "val_voc.txt")) as f:
        val = [line.split() for line in f.read().splitlines()]
    corrupt = os.path.join(data, train[4][0])
    truncate(corrupt)
    bad_mask = os.path.join(data, val[1][1])
    m = np.asarray(Image.open(bad_mask)).copy()
    m[0, 0] = 77
    Image.fromarray(m, "L").save(bad_mask)
    missing = os.path.join(data, val[3][0])
    os.unlink(missing)
    return [corrupt, bad_mask, missing]


def test_train_check_lists_every_problem_one_per_line(tmp_path, synthetic_root):
    data = copy_tree(synthetic_root, str(tmp_path / "data"))
    broken = _break_three_files(data)
    before = files_under(str(tmp_path))
    proc = _train_check(str(tmp_path), data, "--resume", "e009Xs0.100", sets=("NET.MODEL", "unet"))
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    assert all(line.startswith("error: ") for line in lines), describe(proc)
    for word in ["NET.MODEL", *broken, "model_enc_e009Xs0.100.pth"]:
        assert sum(word in line for line in lines) == 1, f"{word} not on exactly one line:\n{proc.stderr}"
    assert len(lines) == 5, describe(proc)
    assert files_under(str(tmp_path)) == before


def test_infer_check_lists_every_problem_one_per_line(tmp_path, synthetic_root):
    data = copy_tree(synthetic_root, str(tmp_path / "data"))
    _, bad_mask, missing = _break_three_files(data)  # the val list: the training JPEG is not inferred
    corrupt = os.path.join(data, "voc/VOCdevkit/VOC2012/JPEGImages/val_000005.jpg")
    truncate(corrupt, keep=0.6)  # the header survives: only decoding the whole file finds it
    before = files_under(str(tmp_path))
    # no snapshot, and a batch size that does not fit the scales
    proc = _infer_check(str(tmp_path), data, sets=("TEST.BATCH_SIZE", "6"))
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    assert all(line.startswith("error: ") for line in lines), describe(proc)
    for word in ["TEST.BATCH_SIZE", missing, corrupt, f"model_enc_{SNAPSHOT_SUFFIX}.pth"]:
        assert sum(word in line for line in lines) == 1, f"{word} not on exactly one line:\n{proc.stderr}"
    # the GT mask only matters where a GT is needed (labels, the visualisation): reported, if at all, once
    assert sum(bad_mask in line for line in lines) <= 1
    assert files_under(str(tmp_path)) == before


# ---------------------------------------------------------------------------------------------- atomic writes

WRITER = textwrap.dedent("""
    import sys
    from utils.fileio import atomic_path
    target, chunk = sys.argv[1], b"n" * (1 << 20)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            for i in range(int(sys.argv[2])):
                f.write(chunk)
                f.flush()
                if i == 0:
                    print("writing", flush=True)
                    sys.stdin.readline()  # the parent kills us here, mid-file
""")
KILL_AFTER_MB = 1


def _write_and_kill(target: str) -> None:
    """A writer of a 64 MB file through atomic_path, killed with SIGKILL after its first megabyte."""
    proc = subprocess.Popen([PYTHON, "-c", WRITER, target, "64"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("old", [b"the old snapshot\n", None], ids=["over-an-old-file", "new-file"])
def test_a_writer_killed_mid_write_leaves_the_old_file_or_nothing(tmp_path, old):
    target = tmp_path / "model_enc_e005Xs0.400.pth"
    if old is not None:
        target.write_bytes(old)
    _write_and_kill(str(target))
    if old is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == old
    # what the killed writer left is a hidden temporary that no output pattern matches
    leftovers = [p for p in os.listdir(tmp_path) if p != target.name]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{target.name}.") and leftovers[0].endswith(".tmp")
    assert os.path.getsize(tmp_path / leftovers[0]) >= KILL_AFTER_MB << 20
    assert glob.glob(str(tmp_path / "*.pth")) == ([str(target)] if old is not None else [])


def test_a_finished_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "scores.json"
    target.write_bytes(b"old")
    proc = subprocess.run([PYTHON, "-c", WRITER, str(target), "3"], cwd=ROOT, input="\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b"n" * (3 << 20) and os.listdir(tmp_path) == [target.name]
