"""The command line shared by train.py and infer_val.py: the original's flags, plus --device and --check."""
from __future__ import annotations

import argparse
import os
import random

import numpy as np

from utils.errors import UserError


def get_arg_parser(description: str = "Model Evaluation") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", type=str, default=None, help="dataset: pascal_voc or coco (datasets/info.py: classes, palette); used in directory names")
    p.add_argument("--exp", type=str, default="main", help="experiment id (groups runs)")
    p.add_argument("--resume", type=str, default=None,
                   help="snapshot suffix to load, e.g. e020Xs0.928 (train.py also accepts 'last')")
    # --run-id: the spelling to use after torchrun, whose own parser rejects --run as ambiguous (--run-path)
    p.add_argument("--run", "--run-id", dest="run", type=str, default=None,
                   help="run id; used in directory names (write --run-id under torchrun)")
    p.add_argument("--workers", type=int, default=8,
                   help="DataLoader workers, torch threads and size of the CRF/writer process pool")
    p.add_argument("--snapshot-dir", type=str, default="./snapshots", help="base directory of snapshots")
    p.add_argument("--logdir", type=str, default="./logs", help="base directory of logs")
    p.add_argument("--infer-list", type=str, default="data/val_augvoc.txt", help="file list for inference")
    p.add_argument("--mask-output-dir", type=str, default="results/", help="output directory of inference")
    p.add_argument("--cfg", dest="cfg_file", type=str, required=True, help="YAML config file")
    p.add_argument("--set", dest="set_cfgs", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides: KEY VALUE [KEY VALUE ...]")
    p.add_argument("--random-seed", type=int, default=64, help="seed of torch, numpy, random and the loader workers")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run: cuda if available (auto), or forced")
    p.add_argument("--check", action="store_true",
                   help="only check the config, data, weights and output directories, then exit")
    return p


def resolve_dirs(args: argparse.Namespace, create: bool = True) -> argparse.Namespace:
    """The original's directory conventions: <base>/<dataset>/<exp>/<run>."""
    if args.dataset is None:
        raise UserError("--dataset is required (use --dataset pascal_voc or --dataset coco)")
    if args.run is None:
        raise UserError("--run is required: it names the run's log and snapshot directories")
    for name, value in (("--dataset", args.dataset), ("--exp", args.exp), ("--run", args.run)):
        if not value or "/" in value or value in (".", ".."):
            raise UserError(f"{name} {value!r} must be a plain directory name")
    args.fixed_batch_path = os.path.join(args.logdir, args.dataset, args.exp, "fixed_batch.pt")
    args.logdir = os.path.join(args.logdir, args.dataset, args.exp, args.run)
    args.snapshot_dir = os.path.join(args.snapshot_dir, args.dataset, args.exp, args.run)
    if create:
        for d in (args.logdir, args.snapshot_dir):
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create directory {d} ({e.strerror}); choose a writable --logdir/--snapshot-dir") from None
    return args


def set_seed(seed: int) -> None:
    """Seed torch, numpy and random (called before the model is built; seed + rank under torchrun)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> "torch.device":  # noqa: F821
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
