"""Helpers of the training tests: the tiny training command on the synthetic dataset, and reading its outputs."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the light backbone from scratch, 48-px crops, batches of 4, PRETRAIN 1 so the mask loss joins from epoch 1
TINY_SETS = ["NET.BACKBONE", "resnet18", "NET.FROM_SCRATCH", "True", "DATASET.CROP_SIZE", "48",
             "TRAIN.BATCH_SIZE", "4", "TRAIN.PRETRAIN", "1", "NET.LR", "0.01"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"  # the machine's cores are shared by parallel runs
    return e


def train_args(data: str, out: str, run: str, epochs: int = 3, iters: int = 2, model: str = "ae", seed: int = 1,
               workers: int = 0, extra: list[str] | None = None, sets: list[str] | None = None) -> list[str]:
    return (["--dataset", "pascal_voc", "--cfg", "configs/voc_resnet38.yaml", "--exp", "t", "--run", run,
             "--logdir", os.path.join(out, "logs"), "--snapshot-dir", os.path.join(out, "snapshots"),
             "--workers", str(workers), "--random-seed", str(seed), *(extra or []),
             "--set", *TINY_SETS, "DATASET.ROOT", data, "NET.MODEL", model, "TRAIN.NUM_EPOCHS", str(epochs),
             "TRAIN.MAX_ITERS", str(iters), *(sets or [])])


def run_train(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def run_dir(out: str, run: str, kind: str = "snapshots") -> str:
    return os.path.join(out, kind, "pascal_voc", "t", run)


def snapshot_files(out: str, run: str) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(run_dir(out, run), "*")))


def scalars(out: str, run: str) -> dict[str, dict[int, float]]:
    """{"<writer>/<tag>": {step: value}} of a run's TensorBoard scalars (the visualisation image left out)."""
    from utils.visualize import read_events

    found = {}
    for writer in ("train", "val"):
        for tag, values in read_events(os.path.join(run_dir(out, run, "logs"), writer)).items():
            if tag != "visualisation":
                found[f"{writer}/{tag}"] = values
    return found
