"""Training (SPEC 7): the epoch loop, validation cadence, checkpoint score, snapshots and logs.

    python train.py --dataset pascal_voc --cfg configs/voc_resnet38.yaml --exp v01 --run r01
    torchrun --nproc_per_node=4 train.py --dataset pascal_voc --cfg configs/voc_resnet38.yaml --exp v01 --run-id r01
    (--run-id is --run; torchrun's own parser rejects --run as an ambiguous abbreviation of its --run-path)

As SPEC 7: epochs start..NUM_EPOCHS inclusive; every VAL_EVERY (2) epochs, before that
epoch's training, validation on train_voc (train writer, no checkpoint) and on val (val writer, checkpoint); the
checkpoint score 1 - mean validation loss from epoch PRETRAIN on, a snapshot when it improves; constant learning
rates; the console lines and TensorBoard tags. Added: --random-seed seeds everything (seed + rank) before the model
is built; every sample's augmentation comes from (seed, epoch, position), so runs repeat exactly and resume
exactly (also mid-epoch); SIGINT/SIGTERM save a resumable snapshot; a non-finite loss stops the run; torchrun/DDP,
mixed precision, channels_last and torch.compile behind config keys; every validation also scores the masks
against the GT masks (TensorBoard masks/*, TRAIN.SNAPSHOT_SCORE miou selects snapshots by it); an ETA line after
each epoch; TRAIN.LOG_ITER_LOSSES; DATASET.MASK_DIR (fully supervised training on other masks).

This file reads as the run: check, build, train (the Trainer of utils/trainer.py, whose steps are in
utils/training.py and utils/validation.py), report; the set-up every entry point shares is utils/run_setup.py.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn

from datasets.info import DatasetInfo, get_dataset
from models import MODELS, build_model
from models.weights import load_snapshot
from utils.checkpoints import Checkpointer, ResumePoint, remove_stale_temporaries
from utils.config import AttrDict, cfg_to_yaml
from utils.dist import DistContext, all_gather_objects, broadcast_object, init_distributed, shutdown
from utils.errors import run_main
from utils.run_setup import (Problems, RunDirs, get_arg_parser, load_run_cfg, main_prints_only, resolve_dirs,
                             select_device, set_seed, write_run_record)
from utils.trainer import Trainer, fit_until_stopped
from utils.training import (build_optimizer, check_data, check_split_size, check_train_cfg, check_world_size,
                            load_fixed_batch, make_loaders, resume_suffix)


def preflight(args: argparse.Namespace, dirs: RunDirs, cfg: AttrDict, ctx: DistContext, info: DatasetInfo
              ) -> tuple[Problems, bool, str | None]:
    """Config, workers, data, output directories and the resume snapshot's files, checked before anything is
    built or written; rank 0 checks, the others learn the outcome.

    Returns the problems, whether the config is sound enough to build the model (then the model is built and the
    snapshot loaded to find more problems before anything is reported) and the suffix --resume names (``last``
    resolved), the same on every process.
    """
    problems, config_ok, resume = Problems(), True, None
    if ctx.is_main:
        if cfg.NET.MODEL not in MODELS:
            problems.add(f"config key NET.MODEL is {cfg.NET.MODEL!r}; set it to one of {', '.join(MODELS)}")
        problems.extend(check_train_cfg(cfg))
        problems.collect(info.check_num_classes, cfg)
        config_ok = not problems
        if args.workers < 0:
            problems.add(f"--workers {args.workers}: give the number of data loading processes per training "
                         "process, 0 (load in the main process) or more")
        problems.extend(dirs.problems())
        problems.add(check_world_size(cfg.TRAIN.BATCH_SIZE, ctx.world_size))
        problems.extend(check_data(cfg, info.num_classes))
        problems.add(check_split_size(cfg))
        if args.resume:
            resume = problems.collect(resume_suffix, dirs.snapshot_dir, args.resume)
    lines, config_ok, resume = broadcast_object((problems.lines, config_ok, resume), ctx)
    return Problems(lines), config_ok, resume


def build_and_load(seed: int, dirs: RunDirs, cfg: AttrDict, ctx: DistContext, resume: str | None
                   ) -> tuple[nn.Module, torch.optim.Optimizer, Checkpointer, ResumePoint | None]:
    """The model on its device, the optimiser, the run's checkpointer and the resumed snapshot (if any) loaded
    into them; a problem is a UserError (an unknown backbone, missing weights, a snapshot of another model)."""
    set_seed(seed + ctx.rank)  # before the model is built: the head's initialisation is seeded
    model = build_model(cfg.NET, num_classes=cfg.TEST.NUM_CLASSES)  # the dataset's (checked by preflight)
    print(f"Model: {cfg.NET.MODEL}, backbone {cfg.NET.BACKBONE}; {ctx.world_size} process(es) on {ctx.device}")
    model.to(ctx.device)
    if cfg.TRAIN.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.NET, model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY))
    checkpoints = Checkpointer(dirs.snapshot_dir, model, optimizer)
    point = checkpoints.load(resume, load_snapshot) if resume else None
    return model, optimizer, checkpoints, point


def check_and_build(args: argparse.Namespace, dirs: RunDirs, cfg: AttrDict, ctx: DistContext, info: DatasetInfo
                    ) -> tuple[nn.Module, torch.optim.Optimizer, Checkpointer, ResumePoint | None]:
    """Every check, then the model, the optimiser and the resumed snapshot: their problems (a backbone without its
    weights, a snapshot of another model) are reported together with the ones found before."""
    problems, config_ok, resume = preflight(args, dirs, cfg, ctx, info)
    if not config_ok:
        problems.raise_if_any()
    if ctx.is_main and not problems:
        print("Config:")
        print(cfg_to_yaml(cfg), flush=True)
    own = Problems()
    built = own.collect(build_and_load, args.random_seed, dirs, cfg, ctx, resume)
    problems.extend(line for lines in all_gather_objects(own.lines, ctx) for line in lines)
    problems.raise_if_any()
    return built


def run(args: argparse.Namespace, argv: list[str], cfg: AttrDict, ctx: DistContext) -> int:
    """Every check first (nothing is written until all pass: no run directory, config.yaml, git.txt, event file
    or snapshot), then the run."""
    torch.backends.cudnn.benchmark = True  # SPEC 7.1
    if args.workers > 0:
        torch.set_num_threads(args.workers)
    dirs = resolve_dirs(args)
    info = get_dataset(args.dataset)
    model, optimizer, checkpoints, point = check_and_build(args, dirs, cfg, ctx, info)
    if args.check:
        if ctx.is_main:
            dirs.make()
        print(f"OK: config, data lists, weights, resume snapshot and output directories checked ({args.cfg_file})")
        return 0

    trainer = Trainer(cfg, ctx, info, dirs, args.random_seed, model, optimizer, checkpoints)
    start_epoch = trainer.resume(point) if point is not None else 0
    loaders = make_loaders(cfg, ctx, trainer.seed, args.workers, info.num_classes)
    # set-up done: from here on the run writes
    if ctx.is_main:
        dirs.make()
        write_run_record(dirs.logdir, cfg, ["train.py", *argv])
        for path in remove_stale_temporaries(dirs.snapshot_dir):
            print(f"Removed the unfinished file {path} of an interrupted run")
    trainer.open_writers()
    fixed = load_fixed_batch(dirs.fixed_batch_path, *loaders["train"], cfg.TRAIN.BATCH_SIZE) if ctx.is_main else None
    return fit_until_stopped(trainer, start_epoch, loaders, fixed)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_arg_parser("Single-stage semantic segmentation: training").parse_args(argv)
    device = select_device(args.device)
    cfg = load_run_cfg(args, device)  # TRAIN.FAST resolved for the device
    ctx = init_distributed(device)
    try:
        with main_prints_only(ctx):
            return run(args, argv, cfg, ctx)
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    run_main(main)
