"""Snapshots on disk (SPEC 7.7): its file names and formats, written so that nothing is ever half there.

A snapshot with suffix S is ``model_enc_S.pth`` (the unwrapped model's state_dict, tensors on the CPU) and
``opt_enc_S.pth`` (the optimiser's state_dict), plus ``state_enc_S.pth`` with what an exact
resume needs (epoch, position in the epoch, best score, RNG states, the epoch's running sums). Each file is written
to a temporary name and renamed; the optimiser and state files first, the model file last, so a snapshot whose
model file exists is complete, and rotation deletes the model file first. A save that fails (a full disk) removes
the files it had written: a snapshot is all there or not at all.

Suffixes:
* ``e%03dXs%4.3f`` (epoch, checkpoint score): the "best" snapshots, taken in validation before the epoch's
  training. Resuming one without a state file (the original's snapshots) starts at epoch + 1 with best score =
  the score (SPEC 7.1); resuming one with a state file continues exactly where the run was (the epoch's training).
* ``e%03dXi%05d`` (epoch, completed iterations of the epoch): the snapshot SIGINT/SIGTERM writes. The "best"
  suffix pattern does not match it on purpose: it is not a "best" snapshot and tools that pick the best by the
  ``Xs`` score skip it. Without its state file it cannot be resumed (it is still a normal model file for
  inference). Only the newest one of a run is kept.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from utils.errors import UserError
from utils.fileio import save_torch

NAME = "enc"  # snapshots are registered as ("enc", model, optimiser), SPEC 7.1
MAX_KEEP = 5  # best snapshots kept (SPEC 7.7)
BEST_PATTERN = re.compile(r"^e(\d+)Xs([\.\d+\-]+)$")  # the "best" suffix (SPEC 7.1)
INTERRUPT_PATTERN = re.compile(r"^e(\d+)Xi(\d+)$")
PREFIX_STRIP = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def best_suffix(epoch: int, score: float) -> str:
    return "e%03dXs%4.3f" % (epoch, score)


def interrupt_suffix(epoch: int, iteration: int) -> str:
    return "e%03dXi%05d" % (epoch, iteration)


def snapshot_paths(snapshot_dir: str, suffix: str, name: str = NAME) -> dict[str, str]:
    """{"model", "opt", "state"} -> file paths of the snapshot ``suffix``."""
    return {kind: os.path.join(snapshot_dir, f"{kind}_{name}_{suffix}.pth") for kind in ("model", "opt", "state")}


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model keys without wrapper prefixes, tensors on the CPU (loadable anywhere, as with map_location)."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIX_STRIP:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v.detach().cpu() if isinstance(v, torch.Tensor) else v
    return out


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def parse_suffix(suffix: str) -> tuple[str, int, float | int] | None:
    """("best", epoch, score) or ("interrupt", epoch, iteration), or None for a suffix of neither form."""
    m = BEST_PATTERN.match(suffix)
    if m:
        try:
            return "best", int(m.group(1)), float(m.group(2))
        except ValueError:
            return None
    m = INTERRUPT_PATTERN.match(suffix)
    if m:
        return "interrupt", int(m.group(1)), int(m.group(2))
    return None


def list_snapshots(snapshot_dir: str, name: str = NAME) -> list[str]:
    """Suffixes of the complete snapshots in ``snapshot_dir``, oldest first (model file last written).

    Complete: model and optimiser files exist, and an interrupt snapshot also has its state file.
    """
    found = []
    for path in glob.glob(os.path.join(glob.escape(snapshot_dir), f"model_{name}_*.pth")):
        suffix = os.path.basename(path)[len(f"model_{name}_"):-len(".pth")]
        paths = snapshot_paths(snapshot_dir, suffix, name)
        kind = parse_suffix(suffix)
        if not os.path.isfile(paths["opt"]):
            continue
        if kind is not None and kind[0] == "interrupt" and not os.path.isfile(paths["state"]):
            continue
        try:
            found.append((os.stat(path).st_mtime_ns, suffix))
        except FileNotFoundError:  # rotated away meanwhile
            continue
    return [s for _, s in sorted(found)]


def resolve_suffix(snapshot_dir: str, suffix: str, name: str = NAME) -> str:
    """``last`` -> the newest complete snapshot of ``snapshot_dir``; other suffixes unchanged. Reads only the
    directory, so it can run before any model is built."""
    if suffix != "last":
        return suffix
    found = list_snapshots(snapshot_dir, name)
    if not found:
        raise UserError(f"--resume last: no complete snapshot in {snapshot_dir}; start without --resume "
                        "or check --snapshot-dir/--dataset/--exp/--run")
    return found[-1]


def remove_stale_temporaries(snapshot_dir: str) -> list[str]:
    """Delete the temporary files a killed process left behind (``.<file>.<random>.tmp``)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(snapshot_dir), ".*_*.pth.*.tmp")):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


@dataclass
class ResumePoint:
    """Where a resumed run continues."""

    suffix: str
    start_epoch: int
    best_score: float
    state: dict[str, Any] | None = None  # our state file, when present (exact resume)


@dataclass
class Checkpointer:
    """Saves and loads the ("enc", model, optimiser) snapshots of one run directory.

    ``model`` must be the unwrapped module. Rotation (SPEC 7.7): the best snapshots saved by this process
    (plus the one resumed from) are tracked and the oldest is deleted once more than ``max_keep`` are tracked.
    """

    snapshot_dir: str
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    name: str = NAME
    max_keep: int = MAX_KEEP
    tracked: list[str] = field(default_factory=list)

    def paths(self, suffix: str) -> dict[str, str]:
        return snapshot_paths(self.snapshot_dir, suffix, self.name)

    def exists(self, suffix: str) -> bool:
        return os.path.isfile(self.paths(suffix)["model"])

    def save(self, suffix: str, state: dict[str, Any] | None = None) -> bool:
        """Write the snapshot (optimiser, state, then model); False if its model file already exists (a snapshot
        is never overwritten, SPEC 7.7)."""
        if "_" in suffix:
            raise ValueError(f"snapshot suffix {suffix!r} may not contain '_'")
        paths = self.paths(suffix)
        if os.path.exists(paths["model"]):
            return False
        written = []
        try:
            if self.optimizer is not None:
                written.append(paths["opt"])
                save_torch(_to_cpu(self.optimizer.state_dict()), paths["opt"])
            if state is not None:
                written.append(paths["state"])
                save_torch(_to_cpu(state), paths["state"])
            save_torch(clean_state_dict(self.model.state_dict()), paths["model"])
        except BaseException:
            # all files of a snapshot or none: a full disk (or a second signal) must not leave an opt/state pair
            for path in written:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        kind = parse_suffix(suffix)
        if kind is not None and kind[0] == "interrupt":
            for old in list_snapshots(self.snapshot_dir, self.name):
                old_kind = parse_suffix(old)
                if old != suffix and old_kind is not None and old_kind[0] == "interrupt":
                    self.delete(old)
        else:
            self.tracked.append(suffix)
            while len(self.tracked) > self.max_keep:
                self.delete(self.tracked.pop(0))
        return True

    def last_good(self) -> str | None:
        """The newest complete snapshot of the run directory (what ``--resume last`` takes), or None."""
        found = list_snapshots(self.snapshot_dir, self.name)
        return found[-1] if found else None

    def delete(self, suffix: str) -> None:
        """Remove a snapshot: the model file first, so it never looks complete while half deleted."""
        for kind in ("model", "opt", "state"):
            try:
                os.unlink(self.paths(suffix)[kind])
            except FileNotFoundError:
                pass

    def resolve(self, suffix: str) -> str:
        """``last`` -> the newest complete snapshot of the run directory; other suffixes unchanged."""
        return resolve_suffix(self.snapshot_dir, suffix, self.name)

    def load(self, suffix: str, load_model: Callable[[nn.Module, str], None]) -> ResumePoint:
        """Load model and optimiser states of ``suffix`` (or ``last``); where the run continues.

        ``load_model(model, path)`` reads the model file into the model (``models.weights.load_snapshot``: strict,
        and a mismatch names the file's backbone); the caller passes it, so that snapshots on disk do not depend
        on the models."""
        suffix = self.resolve(suffix)
        paths = self.paths(suffix)
        if not os.path.isfile(paths["model"]):
            raise UserError(f"snapshot {paths['model']} not found; check --resume and the run directory "
                            f"{self.snapshot_dir} (--resume last takes the newest)")
        if self.optimizer is not None and not os.path.isfile(paths["opt"]):
            raise UserError(f"snapshot {suffix}: the optimiser file {paths['opt']} is missing, so training cannot "
                            "resume from it; resume from another snapshot (--resume last)")
        kind = parse_suffix(suffix)
        state = None
        if os.path.isfile(paths["state"]):
            try:
                state = torch.load(paths["state"], map_location="cpu", weights_only=True)
            except Exception as e:  # truncated or foreign file
                raise UserError(f"resume state {paths['state']} cannot be read ({type(e).__name__}); delete it to "
                                "resume from the model and optimiser files alone, or resume from another "
                                "snapshot") from None
        elif kind is not None and kind[0] == "interrupt":
            raise UserError(f"snapshot {suffix} was written on an interrupt and needs {paths['state']}, which is "
                            "missing; resume from another snapshot (--resume last)")
        load_model(self.model, paths["model"])
        if self.optimizer is not None:
            try:
                opt_state = torch.load(paths["opt"], map_location="cpu", weights_only=True)
                self.optimizer.load_state_dict(opt_state)
            except (ValueError, KeyError, RuntimeError) as e:
                raise UserError(f"optimiser file {paths['opt']} does not fit the configured model and NET.OPT "
                                f"({str(e).splitlines()[0][:100]}); resume with the run's own config") from None
        if kind is not None and kind[0] == "best":
            self.tracked.append(suffix)
        if state is not None:
            return ResumePoint(suffix, int(state["epoch"]), float(state["best_score"]), state)
        if kind is None:
            print(f"Warning: snapshot suffix {suffix!r} does not match {BEST_PATTERN.pattern}; "
                  "starting at epoch 0 with no best score")
            return ResumePoint(suffix, 0, -1e16)
        return ResumePoint(suffix, kind[1] + 1, float(kind[2]))
