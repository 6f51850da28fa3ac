"""What every entry point shares around its work: the command line, the config, the run's directories, the input
problems found before anything is written, the record of a run, the signals that stop it and its random state.

train.py and infer_val.py parse the flags of SPEC 2.4 with ``get_arg_parser``; the tools that load a
trained model take ``--cfg``/``--set`` through ``add_cfg_args`` the same way. ``load_run_cfg`` merges defaults,
YAML and ``--set`` and freezes the result, so the config is a value from then on. The parsed arguments are never
rewritten: the run's directories are derived from them (``resolve_dirs``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from utils.config import AttrDict, cfg_to_yaml, load_cfg
from utils.dist import DistContext
from utils.errors import UserError
from utils.fastpath import apply_train_fast_path
from utils.fileio import check_writable_dir, dir_problem, write_text
from utils.procs import StopSignal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = TypeVar("T")

# --------------------------------------------------------------------------------------------------------------
# the command line


def add_cfg_args(p: argparse.ArgumentParser, cfg_help: str = "YAML config file") -> None:
    """``--cfg FILE`` (required) and ``--set KEY VALUE [KEY VALUE ...]`` (SPEC 2.4): --set takes every token up to
    the next option, so several pairs follow one --set."""
    p.add_argument("--cfg", dest="cfg_file", type=str, required=True, help=cfg_help)
    p.add_argument("--set", dest="set_cfgs", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides: KEY VALUE [KEY VALUE ...]")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (``select_device``), the same for the entry points and the tools."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run: cuda if available (auto), or forced")


def get_arg_parser(description: str = "Model Evaluation", hidden: Iterable[str] = ()) -> argparse.ArgumentParser:
    """The flags train.py and infer_val.py share, with their defaults (SPEC 2.4), plus --device and --check.

    Both entry points accept every one of them (SPEC 2.4), so that launch scripts may pass any; the flags in
    ``hidden``, which the script does not read, are left out of its -h.
    """
    p = argparse.ArgumentParser(description=description)
    hide = set(hidden)

    def add(flag: str, *more: str, help: str, **kwargs: Any) -> None:
        p.add_argument(flag, *more, help=argparse.SUPPRESS if flag in hide else help, **kwargs)

    add("--dataset", type=str, default=None,
        help="dataset: pascal_voc or coco (datasets/info.py: classes, palette); used in directory names")
    add("--exp", type=str, default="main", help="experiment id (groups runs)")
    add("--resume", type=str, default=None,
        help="snapshot suffix to load, e.g. e020Xs0.928 (train.py also accepts 'last')")
    # --run-id: the spelling to use after torchrun, whose own parser rejects --run as ambiguous (--run-path)
    add("--run", "--run-id", dest="run", type=str, default=None,
        help="run id; used in directory names (write --run-id under torchrun)")
    add("--workers", type=int, default=8,
        help="DataLoader workers, torch threads and size of the CRF/writer process pool")
    add("--snapshot-dir", type=str, default="./snapshots", help="base directory of snapshots")
    add("--logdir", type=str, default="./logs", help="base directory of logs")
    add("--infer-list", type=str, default="data/val_augvoc.txt", help="file list for inference")
    add("--mask-output-dir", type=str, default="results/", help="output directory of inference")
    add_cfg_args(p)
    add("--random-seed", type=int, default=64, help="seed of torch, numpy, random and the loader workers")
    add_device_arg(p)
    add("--check", action="store_true", help="only check the config, data, weights and output directories, then exit")
    return p


def load_run_cfg(args: argparse.Namespace, device: torch.device | None = None) -> AttrDict:
    """Defaults, then ``--cfg``, then ``--set``; for a training run on ``device``, TRAIN.FAST resolved into
    TRAIN.AMP, TRAIN.CHANNELS_LAST and TRAIN.COMPILE (utils/fastpath.py), so that the run record says what ran.
    Frozen: nothing changes the config of a run after this."""
    cfg = load_cfg(args.cfg_file, args.set_cfgs)
    if device is not None:
        apply_train_fast_path(cfg, device)
    return cfg.freeze()


def select_device(name: str) -> torch.device:
    """--device: "cpu", "cuda" (an error without a GPU) or "auto" (cuda when available)."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------------------------
# the run's directories (SPEC 2.4)

@dataclass(frozen=True)
class RunDirs:
    """Where a run writes: ``<logdir>/<dataset>/<exp>/<run>`` and ``<snapshot-dir>/<dataset>/<exp>/<run>``, and
    the visualisation batch shared by every run of the experiment (from the base --logdir)."""

    logdir: str
    snapshot_dir: str
    fixed_batch_path: str

    def problems(self) -> list[str]:
        """Why a run directory could not be created or written, without creating anything; one line each."""
        found = (dir_problem(self.logdir, "run directory (--logdir)"),
                 dir_problem(self.snapshot_dir, "run directory (--snapshot-dir)"))
        return [p for p in found if p]

    def make(self) -> None:
        """Create both run directories (inference too, SPEC 2.4) and check that files can be written there."""
        check_writable_dir(self.logdir, "run directory (--logdir)")
        check_writable_dir(self.snapshot_dir, "run directory (--snapshot-dir)")


def resolve_dirs(args: argparse.Namespace) -> RunDirs:
    """The directory conventions of SPEC 2.4, from --logdir, --snapshot-dir, --dataset, --exp and --run."""
    if args.dataset is None:
        raise UserError("--dataset is required (use --dataset pascal_voc or --dataset coco)")
    if args.run is None:
        raise UserError("--run is required: it names the run's log and snapshot directories")
    for name, value in (("--dataset", args.dataset), ("--exp", args.exp), ("--run", args.run)):
        if not value or "/" in value or value in (".", ".."):
            raise UserError(f"{name} {value!r} must be a plain directory name")
    return RunDirs(logdir=os.path.join(args.logdir, args.dataset, args.exp, args.run),
                   snapshot_dir=os.path.join(args.snapshot_dir, args.dataset, args.exp, args.run),
                   fixed_batch_path=os.path.join(args.logdir, args.dataset, args.exp, "fixed_batch.pt"))


# --------------------------------------------------------------------------------------------------------------
# input problems

class Problems:
    """The input problems found before anything is written, one line each.

    Every check of an entry point adds to one collector, which --check and the run share, so that a user sees all
    problems at once and a check is written once.
    """

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self.lines: list[str] = list(lines)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def add(self, *problems: str | None) -> None:
        """Keep each problem that is not None."""
        self.lines += [p for p in problems if p]

    def extend(self, problems: Iterable[str]) -> None:
        self.lines += list(problems)

    def collect(self, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)``'s result, or None with the lines of the UserError it raised kept."""
        try:
            return check(*args)
        except UserError as e:
            self.lines += str(e).splitlines()
            return None

    def raise_if_any(self) -> None:
        if self.lines:
            raise UserError("\n".join(self.lines))


# --------------------------------------------------------------------------------------------------------------
# the record of a run: the resolved config and the commit

def git_description(command: list[str]) -> str:
    """Commit, whether the tree has uncommitted changes, and the command: what the launch scripts record next to
    the outputs (SPEC 10), kept with the run's logs."""
    def git(*cmd: str) -> str | None:
        try:
            r = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    lines = [f"commit: {sha or 'unknown (not a git checkout or git missing)'}"]
    if sha:
        changed = git("status", "--porcelain", "--untracked-files=no")
        changed_files = [ln[3:] for ln in (changed or "").splitlines() if ln.strip()]
        lines.append(f"dirty: {'yes' if changed_files else 'no'}")
        lines += [f"changed: {f}" for f in changed_files]
    lines.append("command: " + " ".join([sys.executable, *command]))
    return "\n".join(lines) + "\n"


def write_run_record(logdir: str, cfg: AttrDict, command: list[str]) -> None:
    """``config.yaml`` (the resolved config, which --cfg reads back) and ``git.txt`` in the run's log directory."""
    write_text(os.path.join(logdir, "config.yaml"), cfg_to_yaml(cfg))
    write_text(os.path.join(logdir, "git.txt"), git_description(command))


@contextlib.contextmanager
def main_prints_only(ctx: DistContext) -> Iterator[None]:
    """The other processes of a torchrun job keep quiet: rank 0 prints (errors still reach stderr)."""
    if ctx.is_main:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# --------------------------------------------------------------------------------------------------------------
# signals

class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stops at ``(epoch, phase, iteration)`` and saves a snapshot there."""

    def __init__(self, signum: int, epoch: int, phase: str, iteration: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.epoch, self.phase, self.iteration = signum, epoch, phase, iteration


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current iteration; a second one aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._handle)

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            raise StopSignal(signum)
        self.signum = signum
        sys.stderr.write(f"{signal.Signals(signum).name}: finishing the current iteration, then saving a resumable "
                         "snapshot (send it again to stop at once without saving)\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------------------------------------------
# random state: seeds, and the state of an exact resume (tensors and plain lists: it loads with weights_only=True)

def set_seed(seed: int) -> None:
    """Seed torch, numpy and random (called before the model is built; seed + rank under torchrun)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The state of every generator the run draws from (torch CPU and CUDA, numpy, random)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "random": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back a ``capture_rng`` state; the CUDA generators only where the same number of GPUs is visible."""
    torch.random.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    r = state["random"]
    random.setstate((r["version"], tuple(r["state"]), r["gauss"]))
