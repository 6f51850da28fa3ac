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


# ---------------------------------------------------------------------------------------------- a full disk

FULL_DISK_SHIM = os.path.join(ROOT, "tests", "fulldisk")  # its sitecustomize.py simulates a full disk


class SmallDisk:
    """A directory on a small disk: a tmpfs of ``size`` bytes where this process may mount one (root on Linux),
    else a directory where the runs' writes fail with ENOSPC past ``size`` bytes (tests/fulldisk/sitecustomize.py).
    Pass ``env`` to the runs; ``fill()`` makes the disk full from now on."""

    def __init__(self, base: str, size: int, simulate: bool = False):
        self.path = os.path.join(base, "small_disk")
        self.flag = os.path.join(base, "small_disk.full")
        os.makedirs(self.path)
        self.mounted = not simulate and _mount_tmpfs(self.path, size)
        self.env = {} if self.mounted else {
            "PYTHONPATH": FULL_DISK_SHIM, "FULL_DISK_DIR": self.path, "FULL_DISK_BYTES": str(size),
            "FULL_DISK_FLAG": self.flag}

    def fill(self) -> None:
        if not self.mounted:
            open(self.flag, "w").close()
            return
        with open(os.path.join(self.path, "filler"), "wb", buffering=0) as f:  # unbuffered: nothing left to flush
            try:
                while True:  # a short write fills the last pages, the next one fails
                    f.write(b"\0" * (1 << 20))
            except OSError:
                pass

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)


def _mount_tmpfs(path: str, size: int) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def temporaries(*dirs: str) -> list[str]:
    """The unfinished files (``.<name>.<random>.tmp``) left below ``dirs``."""
    return [p for p in files_under(*dirs) if os.path.basename(p).startswith(".") and p.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------- processes

def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (zombies count as ended)."""
    running = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    running.append(pid)
        except OSError:
            pass
    return running
