"""Running the entry points as a user does (a subprocess from the repository root) and watching what they leave.

Used by the command-line and bad-input tests: ``run_script`` starts ``python <script> ...`` with the test's
interpreter, ``files_under`` lists every regular file of the output directories so that a failed run can be
checked to have written nothing, and the small file breakers make the bad inputs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
EXIT_USER_ERROR = 2  # utils.errors.EXIT_USER_ERROR, spelled out: the tests check the contract, not the constant
RUN_TIMEOUT_S = 300

# the light model of the tests (SPEC: a dilated ResNet-18 from scratch) on 64 px crops
TINY_TRAIN_SET = ["NET.BACKBONE", "resnet18", "NET.FROM_SCRATCH", "True", "DATASET.CROP_SIZE", "64",
                  "TRAIN.BATCH_SIZE", "2", "TRAIN.NUM_EPOCHS", "0", "TRAIN.MAX_ITERS", "1"]
# two scales with flips on a canvas that holds the 64 px synthetic images at scale 1
TINY_INFER_SET = ["NET.BACKBONE", "resnet18", "TEST.SCALES", "[1, 0.5]", "TEST.PAD_SIZE", "[96, 96]",
                  "TEST.BATCH_SIZE", "4"]
CONFIG = "configs/voc_resnet38.yaml"
SNAPSHOT_SUFFIX = "e000Xs0.500"


def run_script(script: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository root, as the README runs it; stdout/stderr captured."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")  # the test machine's cores are shared
    full_env.update(env or {})
    return subprocess.run([PYTHON, script, *args], cwd=ROOT, capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def describe(proc: subprocess.CompletedProcess) -> str:
    """The process's exit status and output, for assertion messages."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"


def files_under(*dirs: str) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every regular file below ``dirs`` (temporary files included)."""
    found = {}
    for top in dirs:
        for dirpath, _, names in os.walk(top):
            for name in names:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


def copy_tree(src: str, dst: str) -> str:
    """A writable copy of a (small) data tree."""
    shutil.copytree(src, dst)
    return dst


def truncate(path: str, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes: a JPEG/PNG that fails to decode, like an interrupted download."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:max(1, int(len(data) * keep))])


def save_model_snapshot(path: str, backbone: str, model: str) -> str:
    """A model_enc_*.pth of a freshly initialised model (what an inference run loads)."""
    import torch

    from models import build_model
    from utils.config import get_cfg_defaults

    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL, cfg.NET.FROM_SCRATCH = backbone, model, True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(build_model(cfg.NET).state_dict(), path)
    return path


def link_or_copy(src: str, dst: str) -> str:
    """Put a (large, read-only) file at ``dst`` without copying it where a hard link is possible."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst
