"""Training (SPEC 7): the original's epoch loop, validation cadence, checkpoint score, snapshots and logs.

    python train.py --dataset pascal_voc --cfg configs/voc_resnet38.yaml --exp v01 --run r01
    torchrun --nproc_per_node=4 train.py --dataset pascal_voc --cfg configs/voc_resnet38.yaml --exp v01 --run-id r01
    (--run-id is --run; torchrun's own parser rejects --run as an ambiguous abbreviation of its --run-path)

Behaviour kept from the original: epochs start..NUM_EPOCHS inclusive; every VAL_EVERY (2) epochs, before that
epoch's training, validation on train_voc (train writer, no checkpoint) and on val (val writer, checkpoint); the
checkpoint score 1 - mean validation loss from epoch PRETRAIN on, a snapshot when it improves; constant learning
rates; the console lines and TensorBoard tags. Added: --random-seed seeds everything (seed + rank) before the model
is built; every sample's augmentation comes from (seed, epoch, position), so runs repeat exactly and resume
exactly (also mid-epoch); SIGINT/SIGTERM save a resumable snapshot; a non-finite loss stops the run; torchrun/DDP,
mixed precision, channels_last and torch.compile behind config keys; every validation also scores the masks
against the GT masks (TensorBoard masks/*, TRAIN.SNAPSHOT_SCORE miou selects snapshots by it); an ETA line after
each epoch; TRAIN.LOG_ITER_LOSSES; DATASET.MASK_DIR (fully supervised training on other masks).
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datasets.filelists import read_file_list
from datasets.pascal_voc import SPLIT_LISTS, VOCSegmentation, collate_skip_none
from datasets.transforms import dataset_cfg_problems
from datasets.info import DatasetInfo, get_dataset
from datasets.voc import IGNORE_INDEX, denorm
from losses import get_criterion
from models import build_model
from models.weights import load_snapshot
from utils.checkpoints import (Checkpointer, ResumePoint, best_suffix, interrupt_suffix, remove_stale_temporaries,
                               resolve_suffix, snapshot_paths)
from utils.config import TRAIN_RANGES, AttrDict, cfg_to_yaml, load_cfg, range_problems
from utils.dist import (DistContext, EpochSampler, SeededSamples, all_gather_objects, all_reduce_sum, barrier,
                        broadcast_object, init_distributed, per_rank_batch, shutdown, worker_init, wrap_model)
from utils.errors import UserError, run_main
from utils.fileio import check_writable_dir, save_torch, unwritable_ancestor, write_text
from utils.inference_tools import label_maps
from utils.metrics import MaskScores
from utils.opts import get_arg_parser, resolve_dirs, select_device, set_seed
from utils.procs import StopSignal, exit_status, signal_name

ROOT = os.path.dirname(os.path.abspath(__file__))
LOG_EVERY = 10  # per-iteration console line every 10 iterations, as the original
STREAMS = {"train": 0, "train_voc": 1, "val": 2}  # independent augmentation streams of the three loaders
MODELS = ("ae", "bsl")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
INITIAL_BEST = -1e16  # the original's best_score before any checkpoint
ON_CORRUPT = ("stop", "skip")  # TRAIN.ON_CORRUPT: a corrupt image stops the run, or is left out
SNAPSHOT_SCORES = ("loss", "miou")  # TRAIN.SNAPSHOT_SCORE: 1 - mean validation loss (the original's), or mIoU
SCORED_PRED = "miou_pred"  # the mask score TRAIN.SNAPSHOT_SCORE "miou" selects by: the final prediction's mIoU
MASK_NAMES = {"cam": "raw masks", "dec": "PAMR-refined masks", "pseudo": "pseudo labels", "pred": "prediction"}


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stops at ``(epoch, phase, iteration)`` and saves a snapshot there."""

    def __init__(self, signum: int, epoch: int, phase: str, iteration: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.epoch, self.phase, self.iteration = signum, epoch, phase, iteration


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current iteration; a second one aborts."""

    def __init__(self):
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
# set-up

def check_train_cfg(cfg: AttrDict) -> list[str]:
    """Problems of the training keys, one line each (the merge already checked names and types)."""
    problems = []
    if cfg.NET.MODEL not in MODELS:
        problems.append(f"config key NET.MODEL is {cfg.NET.MODEL!r}; set it to one of {', '.join(MODELS)}")
    if cfg.TRAIN.AMP not in ("",) + tuple(AMP_DTYPES):
        problems.append(f"config key TRAIN.AMP is {cfg.TRAIN.AMP!r}; use '' (off), 'bf16' or 'fp16'")
    if cfg.TRAIN.VAL_EVERY < 1:
        problems.append(f"config key TRAIN.VAL_EVERY is {cfg.TRAIN.VAL_EVERY}; it must be at least 1")
    if cfg.TRAIN.MAX_ITERS < 0:
        problems.append(f"config key TRAIN.MAX_ITERS is {cfg.TRAIN.MAX_ITERS}; use 0 (whole epochs) or more")
    if cfg.TRAIN.BATCH_SIZE < 1:
        problems.append(f"config key TRAIN.BATCH_SIZE is {cfg.TRAIN.BATCH_SIZE}; it must be at least 1")
    if cfg.TRAIN.FULLY_SUPERVISED and cfg.NET.MODEL != "ae":
        problems.append("config key TRAIN.FULLY_SUPERVISED needs NET.MODEL ae (the segmentation head); "
                        f"it is {cfg.NET.MODEL!r}")
    opt = getattr(torch.optim, cfg.NET.OPT, None)
    if not (isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer)):
        problems.append(f"config key NET.OPT is {cfg.NET.OPT!r}, not an optimiser of torch.optim; use SGD "
                        "(the original's) or e.g. Adam")
    try:
        get_criterion(cfg.NET.LOSS)
    except UserError as e:
        problems.append(str(e))
    problems += dataset_cfg_problems(cfg.DATASET)
    if cfg.TRAIN.ON_CORRUPT not in ON_CORRUPT:
        problems.append(f"config key TRAIN.ON_CORRUPT is {cfg.TRAIN.ON_CORRUPT!r}; use 'stop' (a corrupt image "
                        "stops the run) or 'skip' (it is left out with a warning)")
    if cfg.TRAIN.SNAPSHOT_SCORE not in SNAPSHOT_SCORES:
        problems.append(f"config key TRAIN.SNAPSHOT_SCORE is {cfg.TRAIN.SNAPSHOT_SCORE!r}; use 'loss' (1 - mean "
                        "validation loss, the original's) or 'miou' (mIoU of the validation's final prediction)")
    if cfg.DATASET.MASK_DIR and not cfg.TRAIN.FULLY_SUPERVISED:
        problems.append(f"config key DATASET.MASK_DIR ({cfg.DATASET.MASK_DIR}) gives masks to train on, which only "
                        "TRAIN.FULLY_SUPERVISED True uses; set it, or set DATASET.MASK_DIR ''")
    problems += range_problems(cfg, TRAIN_RANGES)
    return problems


def check_data(cfg: AttrDict, num_classes: int) -> list[str]:
    """Every problem of the training lists and the files they name (decodes each image and mask once), and of the
    masks of DATASET.MASK_DIR; mask values lie in 0..num_classes-1 and 255."""
    from datasets.checks import check_file_list, check_mask_dir

    keys = ["TRAIN_LIST", "VAL_LIST"] + (["TRAIN_VOC_LIST"] if cfg.TRAIN.VAL_TRAIN_VOC else [])
    problems = []
    for key in keys:
        problems += check_file_list(os.path.join(cfg.DATASET.ROOT, cfg.DATASET[key]), cfg.DATASET.ROOT,
                                    need_masks=True, num_classes=num_classes)
    if cfg.DATASET.MASK_DIR:
        problems += check_mask_dir(os.path.join(cfg.DATASET.ROOT, cfg.DATASET.TRAIN_LIST), cfg.DATASET.ROOT,
                                   cfg.DATASET.MASK_DIR, num_classes=num_classes)
    return problems


def check_split_sizes(cfg: AttrDict) -> list[str]:
    """The training split must fill at least one batch (it drops the last, short one); a list that cannot be
    read is left to ``check_data``."""
    list_path = os.path.join(cfg.DATASET.ROOT, cfg.DATASET[SPLIT_LISTS["train"]])
    try:
        n = len(read_file_list(list_path, cfg.DATASET.ROOT, need_masks=True, check_exists=False))
    except UserError:
        return []
    if cfg.TRAIN.BATCH_SIZE >= 1 and n < cfg.TRAIN.BATCH_SIZE:
        return [f"split train ({list_path}) has {n} images, fewer than the batch size {cfg.TRAIN.BATCH_SIZE}, so no "
                "batch would be left; lower TRAIN.BATCH_SIZE or add images"]
    return []


def run_dir_problem(path: str, option: str) -> str | None:
    """Why the run directory ``path`` could not be created or written, without creating anything."""
    found = unwritable_ancestor(path)
    if found is None:
        return None
    existing, is_dir = found
    if not is_dir:
        return f"cannot create the run directory {path}: {existing} is not a directory; choose another {option}"
    return f"cannot create or write the run directory {path}: {existing} is not writable; choose another {option}"


def make_run_dirs(args) -> None:
    """Create the log and snapshot directories of the run (once every check passed) and check that files can be
    written there."""
    for d, option in ((args.logdir, "--logdir"), (args.snapshot_dir, "--snapshot-dir")):
        check_writable_dir(d, f"run directory ({option})")


def preflight(args, cfg: AttrDict, ctx: DistContext, info: DatasetInfo) -> tuple[list[str], bool]:
    """Config, workers, data, output directories and the resume snapshot's files, checked before anything is
    built or written; every problem at once, one line each (rank 0 checks, the others learn the outcome).

    Returns the problems and whether the config is sound enough to build the model (when it is, the model is
    built and the snapshot loaded to find more problems before anything is reported). ``args.resume`` ``last``
    is replaced by the suffix it names, the same on every process.
    """
    problems: list[str] = []
    config_ok = True
    if ctx.is_main:
        problems += check_train_cfg(cfg)
        try:
            info.check_num_classes(cfg)
        except UserError as e:
            problems.append(str(e))
        config_ok = not problems
        if args.workers < 0:
            problems.append(f"--workers {args.workers}: give the number of data loading processes per training "
                            "process, 0 (load in the main process) or more")
        for d, option in ((args.logdir, "--logdir"), (args.snapshot_dir, "--snapshot-dir")):
            problem = run_dir_problem(d, option)
            if problem:
                problems.append(problem)
        if ctx.world_size > 1 and cfg.TRAIN.BATCH_SIZE % ctx.world_size:
            problems.append(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} does not split evenly over {ctx.world_size} "
                            "processes; set it to a multiple of the process count")
        problems += check_data(cfg, info.num_classes)
        problems += check_split_sizes(cfg)
        if args.resume:
            try:
                args.resume = resolve_suffix(args.snapshot_dir, args.resume)
            except UserError as e:
                problems.append(str(e))
                args.resume = None
            if args.resume:
                model_file = snapshot_paths(args.snapshot_dir, args.resume)["model"]
                if not os.path.isfile(model_file):
                    problems.append(f"snapshot {model_file} not found; check --resume (e.g. e020Xs0.928, or last) "
                                    "and --snapshot-dir/--dataset/--exp/--run")
                    args.resume = None
    problems, config_ok, args.resume = broadcast_object((problems, config_ok, args.resume), ctx)
    return problems, config_ok


def build_and_load(args, cfg: AttrDict, ctx: DistContext
                   ) -> tuple[nn.Module, torch.optim.Optimizer, Checkpointer, ResumePoint | None]:
    """The model on its device, the optimiser, the run's checkpointer and the resumed snapshot (if any) loaded
    into them; a problem is a UserError (an unknown backbone, missing weights, a snapshot of another model)."""
    set_seed(args.random_seed + ctx.rank)  # before the model is built: the head's initialisation is seeded
    model = build_model(cfg.NET, num_classes=cfg.TEST.NUM_CLASSES)  # the dataset's (checked by preflight)
    print(f"Model: {cfg.NET.MODEL}, backbone {cfg.NET.BACKBONE}; {ctx.world_size} process(es) on {ctx.device}")
    model.to(ctx.device)
    if cfg.TRAIN.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.NET, model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY))
    checkpoints = Checkpointer(args.snapshot_dir, model, optimizer)
    point = checkpoints.load(args.resume, load_snapshot) if args.resume else None
    return model, optimizer, checkpoints, point


def git_description(argv: list[str]) -> str:
    """Commit, whether the tree has uncommitted changes, and the command (the original's launch scripts record
    the sha, the diff and the command next to the outputs)."""
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
    lines.append("command: " + " ".join([sys.executable, *argv]))
    return "\n".join(lines) + "\n"


def build_optimizer(net_cfg: AttrDict, groups: list[dict]) -> torch.optim.Optimizer:
    """SPEC 7.4: per-group lr and weight decay override the defaults; constant rates."""
    for i, g in enumerate(groups):
        print(f"Group {i}: #{len(g['params'])}, LR={g['lr']:.2e}")
    if net_cfg.OPT == "SGD":
        print(f"Using SGD >>> learning rate = {net_cfg.LR:.2e}, momentum = {net_cfg.MOMENTUM}, "
              f"weight decay = {net_cfg.WEIGHT_DECAY:.2e}")
        return torch.optim.SGD(groups, lr=net_cfg.LR, momentum=net_cfg.MOMENTUM, weight_decay=net_cfg.WEIGHT_DECAY)
    if net_cfg.OPT == "Adam":
        print(f"Using Adam >>> learning rate = {net_cfg.LR:.2e}, beta1 = {net_cfg.BETA1}, "
              f"weight decay = {net_cfg.WEIGHT_DECAY:.2e}")
        return torch.optim.Adam(groups, lr=net_cfg.LR, betas=(net_cfg.BETA1, 0.999), weight_decay=net_cfg.WEIGHT_DECAY)
    print(f"Using {net_cfg.OPT} >>> learning rate = {net_cfg.LR:.2e}")
    return getattr(torch.optim, net_cfg.OPT)(groups, lr=net_cfg.LR)


def make_loader(cfg: AttrDict, split: str, ctx: DistContext, seed: int, workers: int,
                augment: bool, num_classes: int) -> tuple[DataLoader, EpochSampler]:
    """Loader of one split and its sampler (train: shuffled, drop_last; train_voc/val: in list order, with their
    GT masks, which score the masks; the training split's masks come from DATASET.MASK_DIR when it is set)."""
    train = split == "train"
    dataset = VOCSegmentation(cfg, split, augment=augment, with_mask=cfg.TRAIN.FULLY_SUPERVISED or not train,
                              mask_dir=cfg.DATASET.MASK_DIR if train else "", num_classes=num_classes)
    batch = cfg.TRAIN.BATCH_SIZE
    if train and len(dataset) < batch:
        raise UserError(f"split {split} ({dataset.list_path}) has {len(dataset)} images, fewer than the batch size "
                        f"{batch}, so no batch would be left; lower TRAIN.BATCH_SIZE or add images")
    sampler = EpochSampler(len(dataset), batch, seed, ctx.rank, ctx.world_size, shuffle=train, drop_last=train,
                           stream=STREAMS[split])
    loader = DataLoader(SeededSamples(dataset), batch_size=per_rank_batch(batch, ctx.world_size), sampler=sampler,
                        num_workers=workers, pin_memory=ctx.device.type == "cuda", drop_last=False,
                        collate_fn=collate_skip_none, worker_init_fn=worker_init if workers > 0 else None,
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def load_fixed_batch(path: str, loader: DataLoader, sampler: EpochSampler, batch_size: int) -> dict[str, torch.Tensor]:
    """The visualisation batch shared by the runs of an experiment (SPEC 7.1): loaded if its file exists, else
    the first training batch of epoch 0 (all TRAIN.BATCH_SIZE images), saved there."""
    if os.path.isfile(path):
        try:
            fixed = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(fixed, dict) and {"image", "labels"} <= set(fixed):
                return fixed
        except Exception as e:  # only a picture in the logs depends on it: make a new one
            print(f"Warning: cannot read {path} ({type(e).__name__}); taking a new fixed batch")
    dataset = loader.dataset
    order = EpochSampler(sampler.n, batch_size, sampler.seed, shuffle=True, drop_last=True, stream=sampler.stream)
    samples = [dataset[item] for _, item in zip(range(batch_size), iter(order))]
    batch = collate_skip_none(samples)
    if batch is None:
        raise UserError("every image of the first training batch is unreadable; fix the training list")
    fixed = {"image": batch[0], "labels": batch[1]}
    save_torch(fixed, path)
    return fixed


# --------------------------------------------------------------------------------------------------------------
# RNG state for exact resumes (stored as tensors and plain lists: the state file loads with weights_only=True)

def capture_rng() -> dict[str, Any]:
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
    torch.random.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    r = state["random"]
    random.setstate((r["version"], tuple(r["state"]), r["gauss"]))


# --------------------------------------------------------------------------------------------------------------
# one step (SPEC 7.3)

def forward_losses(net: nn.Module, criterion: Callable, image: torch.Tensor, labels: torch.Tensor, epoch: int,
                   cfg: AttrDict, gt_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward a batch; (loss to minimise, logged values, model outputs).

    image [B,3,S,S] normalised, labels [B,20]. The mask loss joins from epoch TRAIN.PRETRAIN on (SPEC 5.12); it is
    computed and logged before that too. With TRAIN.FULLY_SUPERVISED, ``gt_mask`` [B,S,S] (255 = ignore; GT masks or
    those of DATASET.MASK_DIR) replaces the pseudo labels: plain cross-entropy of the upsampled logits from the
    first epoch (a reference, or a second stage trained on exported pseudo labels; not the paper's method).
    """
    image_raw = denorm(image)  # [B,3,S,S] RGB in [0,1]
    amp = AMP_DTYPES.get(cfg.TRAIN.AMP)
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None):
        out = net(image, image_raw, labels)
    loss_cls = criterion(out["cls"].float(), labels).mean()
    logs = {"loss_cls": loss_cls, "loss_fg": out["cls_fg"].float().mean()}
    loss = loss_cls
    if gt_mask is not None:
        logits = F.interpolate(out["logits"].float(), size=gt_mask.shape[-2:], mode="bilinear", align_corners=True)
        if bool((gt_mask != IGNORE_INDEX).any()):
            logs["loss_mask"] = F.cross_entropy(logits, gt_mask, ignore_index=IGNORE_INDEX)
        else:  # a batch without a labelled pixel (pseudo labels may leave whole crops 255): no mask loss, not NaN
            logs["loss_mask"] = logits.sum() * 0.0
        loss = loss + cfg.NET.MASK_LOSS_BCE * logs["loss_mask"]
    elif "loss_mask" in out:
        logs["loss_mask"] = out["loss_mask"].float().mean()
        if epoch >= cfg.TRAIN.PRETRAIN:
            loss = loss + cfg.NET.MASK_LOSS_BCE * logs["loss_mask"]
    logs["loss"] = loss
    return loss, logs, out


def train_iteration(net: nn.Module, criterion: Callable, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, image: torch.Tensor, labels: torch.Tensor, epoch: int,
                    iteration: int, cfg: AttrDict, ctx: DistContext, stop: bool = False,
                    gt_mask: torch.Tensor | None = None) -> tuple[dict[str, float], bool]:
    """One training step: forward, losses averaged over all processes, the NaN guard, backward, optimiser step.

    Returns the logged values (means over the global batch) and whether any process asked to stop. A non-finite
    loss stops the run before the step, so the weights stay the last finite ones.
    """
    loss, logs, _ = forward_losses(net, criterion, image, labels, epoch, cfg, gt_mask)
    keys = list(logs)
    values = torch.stack([v.detach().float() for v in logs.values()] + [torch.tensor(float(stop), device=loss.device)])
    values = all_reduce_sum(values, ctx).cpu()
    means = {k: values[i].item() / ctx.world_size for i, k in enumerate(keys)}
    if not all(math.isfinite(v) for v in means.values()):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in means.items())
        raise UserError(f"non-finite loss at epoch {epoch}, iteration {iteration} ({shown}); the last good snapshot "
                        "stays on disk: lower NET.LR, or try TRAIN.AMP '' if mixed precision is on, and resume")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return means, values[-1].item() > 0


def eta_line(elapsed: float, done: int, remaining: int) -> str:
    """When the run will end: the seconds per training iteration so far (validations included, so the epochs to
    come are charged theirs) times the iterations left."""
    if done <= 0:
        return f"ETA: unknown ({remaining} iterations left)"
    left = elapsed / done * remaining
    finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
    return f"ETA: {datetime.timedelta(seconds=round(left))} ({remaining} iterations left, done about {finish})"


def log_mask_scores(writer: Any, scores: dict[str, float], epoch: int, num_classes: int) -> None:
    """The masks' scores of a validation (``MaskScores.summary``) as TensorBoard scalars ``masks/<key>`` and console
    lines after the original's: mIoU over the classes present and over all C classes (21 for VOC), in %."""
    for k, v in scores.items():
        writer.add_scalar(f"masks/{k}", v, epoch)
    for kind, name in MASK_NAMES.items():
        if f"miou_{kind}" in scores:
            print("mIoU {}: {:.2f} (classes present), {:.2f} (all {} classes)".format(
                name, 100 * scores[f"miou_{kind}"], 100 * scores[f"miou{num_classes}_{kind}"], num_classes))
    if "pseudo_coverage" in scores:
        print("pseudo labels label {:.1f}% of the GT pixels".format(100 * scores["pseudo_coverage"]))


# --------------------------------------------------------------------------------------------------------------
# the trainer

class Trainer:
    """State and phases of one run: validation, a training epoch, snapshots, logs."""

    def __init__(self, args, cfg: AttrDict, ctx: DistContext, model: nn.Module, optimizer: torch.optim.Optimizer,
                 info: DatasetInfo, checkpoints: Checkpointer | None = None):
        self.args, self.cfg, self.ctx, self.info = args, cfg, ctx, info
        self.model, self.optimizer = model, optimizer
        self.criterion = get_criterion(cfg.NET.LOSS)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.TRAIN.AMP == "fp16")
        self.seed = args.random_seed
        self.best_score = INITIAL_BEST
        self.stop = StopRequest()
        self.checkpoints = checkpoints or Checkpointer(args.snapshot_dir, model, optimizer)
        self.writers: dict[str, Any] = {}  # TensorBoard event files, made by open_writers once the run starts
        self.tty = sys.stdout.isatty()
        self.net = wrap_model(model, ctx)
        if cfg.TRAIN.COMPILE:
            self.net = torch.compile(self.net)
        # validation and visualisation need no collectives: the plain model (DataParallel still splits batches)
        self.eval_net = self.net if isinstance(self.net, nn.DataParallel) else model
        self.position = ("val", 0)  # where the first epoch starts: with its validation (if due), or mid-training
        self.epoch_sums: dict[str, float] = {}

    def open_writers(self) -> None:
        """The train and val TensorBoard event files (rank 0)."""
        from utils.visualize import EventWriter

        if self.ctx.is_main:
            self.writers = {k: EventWriter(os.path.join(self.args.logdir, k)) for k in ("train", "val")}

    def print(self, *a: Any) -> None:
        if self.ctx.is_main:
            print(*a, flush=True)

    def _to_device(self, image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if self.cfg.TRAIN.CHANNELS_LAST else torch.contiguous_format
        image = image.to(self.ctx.device, non_blocking=True).contiguous(memory_format=fmt)
        return image, labels.to(self.ctx.device, non_blocking=True)

    def _gt_mask(self, batch: tuple) -> torch.Tensor | None:
        """The batch's GT masks [B,S,S] on the device in a fully supervised run, else None."""
        return batch[3].to(self.ctx.device, non_blocking=True) if self.cfg.TRAIN.FULLY_SUPERVISED else None

    # --- snapshots ---
    def state(self, epoch: int, phase: str, iteration: int) -> dict[str, Any]:
        """What an exact resume needs besides model and optimiser (collective: every process contributes RNG)."""
        return {"epoch": epoch, "phase": phase, "iteration": iteration, "best_score": self.best_score,
                "seed": self.seed, "world_size": self.ctx.world_size, "epoch_sums": dict(self.epoch_sums),
                "scaler": self.scaler.state_dict(), "rng": all_gather_objects(capture_rng(), self.ctx)}

    def save(self, suffix: str, state: dict[str, Any]) -> bool:
        try:
            return self.checkpoints.save(suffix, state) if self.ctx.is_main else True
        finally:
            barrier(self.ctx)  # also when rank 0 could not write: the others must not wait for it forever

    def resume(self, point: ResumePoint) -> int:
        """Apply a loaded snapshot; returns the first epoch."""
        self.best_score = point.best_score
        if point.state is None:  # the original's snapshot: its rule (the epoch after the suffix's)
            self.print(f"Resumed from {point.suffix}: epoch {point.start_epoch}, best score {self.best_score:.3f}")
            return point.start_epoch
        st = point.state
        if st["seed"] != self.seed:
            self.print(f"Note: the run used --random-seed {st['seed']}; continuing with it (given: {self.seed})")
            self.seed = st["seed"]
        self.position = (st["phase"], st["iteration"])
        self.epoch_sums = dict(st["epoch_sums"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if st["world_size"] == self.ctx.world_size:
            restore_rng(st["rng"][self.ctx.rank])
        else:
            self.print(f"Note: the snapshot was written by {st['world_size']} processes, this run has "
                       f"{self.ctx.world_size}; the random stream of dropout and the gate starts afresh")
        self.print(f"Resumed from {point.suffix}: epoch {st['epoch']}, "
                   + (f"training from iteration {st['iteration']}" if st["phase"] == "train" else "with validation")
                   + f", best score {self.best_score:.3f}")
        return st["epoch"]

    # --- validation (SPEC 7.5) ---
    def validation(self, epoch: int, writer_key: str, loader: DataLoader, sampler: EpochSampler,
                   checkpoint: bool) -> dict[str, float]:
        from sklearn.metrics import average_precision_score

        self.model.eval()
        sampler.set_epoch(epoch)
        batches: list[tuple[int, dict[str, float], int]] = []
        scores, targets = [], []
        masks = MaskScores(self.info.num_classes)
        test = self.cfg.TEST
        with torch.no_grad():
            for b, batch in enumerate(loader):
                if batch is None:
                    continue
                image, labels = self._to_device(batch[0], batch[1])
                _, logs, out = forward_losses(self.eval_net, self.criterion, image, labels, epoch, self.cfg,
                                              self._gt_mask(batch))
                n = image.shape[0]
                batches.append((b, {k: v.item() * n for k, v in logs.items()}, n))
                scores.append(torch.sigmoid(out["cls"].float()).cpu())
                targets.append(labels.cpu())
                # the masks against the GT masks of the (validation-transformed) images
                masks.update(label_maps(out, test.FP_CUT_SCORE, test.BG_POW,
                                        labels if test.USE_GT_LABELS else None), batch[3])
        parts = all_gather_objects((batches, torch.cat(scores) if scores else None,
                                    torch.cat(targets) if targets else None, masks), self.ctx)
        # per global batch: its mean loss (the shards of one batch have the same index on every process)
        merged: dict[int, tuple[dict[str, float], int]] = {}
        for part_batches, _, _, _ in parts:
            for b, sums, n in part_batches:
                acc, m = merged.get(b, ({}, 0))
                merged[b] = ({k: acc.get(k, 0.0) + v for k, v in sums.items()}, m + n)
        if not merged:
            raise UserError(f"validation at epoch {epoch}: no readable image in the {writer_key} split")
        means = {k: float(np.mean([s[k] / n for s, n in merged.values()])) for k in next(iter(merged.values()))[0]}
        y_score = torch.cat([p[1] for p in parts if p[1] is not None]).numpy()
        y_true = torch.cat([p[2] for p in parts if p[2] is not None]).numpy().astype(np.int64)
        present = y_true.sum(0) > 0
        ap = np.full(self.info.num_fg, np.nan)
        if present.any():
            ap[present] = average_precision_score(y_true[:, present], y_score[:, present], average=None)
        for p in parts[1:]:
            masks.merge(p[3])
        mask_scores = masks.summary()
        if self.ctx.is_main:
            writer = self.writers[writer_key]
            names = self.info.class_names
            for k in range(self.info.num_fg):
                name = names[k + 1]
                if present[k]:
                    # COCO's names have spaces ("traffic light"), which tags avoid; VOC's names have none
                    writer.add_scalar("%02d_%s/AP" % (k + 1, name.replace(" ", "_")), ap[k], epoch)
                    print("AP_{}: {:4.3f}".format(name, ap[k]))
            absent = [names[k + 1] for k in range(self.info.num_fg) if not present[k]]
            if absent:
                print(f"No AP for {len(absent)} classes absent from this split (left out of the mAP): "
                      + ", ".join(absent))
            if present.any():
                writer.add_scalar("all_wo_BG/mAP", float(np.nanmean(ap)), epoch)
                print("mAP: {:4.3f}".format(float(np.nanmean(ap))))
            for k, v in means.items():
                writer.add_scalar(f"all/{k}", v, epoch)
                print("{}: {:4.3f}".format(k, v))
            log_mask_scores(writer, mask_scores, epoch, self.info.num_classes)
        if checkpoint and epoch >= self.cfg.TRAIN.PRETRAIN:
            score = 1.0 - means["loss"] if self.cfg.TRAIN.SNAPSHOT_SCORE == "loss" else mask_scores.get(SCORED_PRED, 0.0)
            if self.ctx.is_main:
                self.writers[writer_key].add_scalar("all/checkpoint_score", score, epoch)
            if score > self.best_score:
                self.best_score = score
                suffix = best_suffix(epoch, score)
                self.print(">>> Saving checkpoint with score {:3.2e}, epoch {}".format(score, epoch))
                # validation of this epoch is done: a resume continues with its training
                if not self.save(suffix, self.state(epoch, "train", 0)):
                    self.print(f"Snapshot {suffix} exists already; it is kept as it is")
        return {**means, **mask_scores}

    # --- training (SPEC 7.3) ---
    def train_epoch(self, epoch: int, loader: DataLoader, sampler: EpochSampler, start: int) -> int:
        """Iterations ``start``.. of the epoch; returns the epoch's length in iterations."""
        cfg, ctx = self.cfg, self.ctx
        self.model.train()
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        total = sampler.num_batches()
        if cfg.TRAIN.MAX_ITERS:
            total = min(total, cfg.TRAIN.MAX_ITERS)
        if start == 0:
            self.epoch_sums = {}
        t0, images = time.time(), 0
        bar = None
        if self.tty and ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start, desc=f"Epoch {epoch}", dynamic_ncols=True, leave=False)
        try:
            i = start
            for batch in loader:
                if i >= total:
                    break
                if batch is None:  # every image of the batch was skipped (TRAIN.ON_CORRUPT skip)
                    print(f"Warning: epoch {epoch}, iteration {i}: no readable image in the batch; skipped")
                    i += 1
                    continue
                image, labels = self._to_device(batch[0], batch[1])
                means, stop = train_iteration(self.net, self.criterion, self.optimizer, self.scaler, image, labels,
                                              epoch, i, cfg, ctx, stop=self.stop.signum is not None,
                                              gt_mask=self._gt_mask(batch))
                # one process stops right after the iteration the signal arrived in; under torchrun all processes
                # stop together, after the iteration whose reduced flag first shows it
                stop = stop or (not ctx.distributed and self.stop.signum is not None)
                for k, v in means.items():
                    self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                if cfg.TRAIN.LOG_ITER_LOSSES and ctx.is_main:
                    for k, v in means.items():
                        self.writers["train"].add_scalar(f"train_iter/{k}", v, epoch * total + i)
                self.epoch_sums["_n"] = self.epoch_sums.get("_n", 0.0) + 1
                images += cfg.TRAIN.BATCH_SIZE
                rate = images / max(time.time() - t0, 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{rate:.1f}")
                    bar.update(1)
                elif i % LOG_EVERY == 0:
                    msg = "Loss [{:04d}]: ".format(i)
                    msg += "".join("{}: {:.4f} | ".format(k, v) for k, v in means.items())
                    self.print(msg + " | Im/Sec: {:.1f}".format(rate))
                i += 1
                if stop:
                    raise Interrupted(self.stop.signum or signal.SIGTERM, epoch, "train", i)
        finally:
            if bar is not None:
                bar.close()
        n = self.epoch_sums.pop("_n", 0.0)
        epoch_means = {k: v / max(n, 1.0) for k, v in self.epoch_sums.items()}
        self.epoch_sums = {}
        for k, v in epoch_means.items():
            self.print("{}: {:4.3f}".format(k, v))
        for g, group in enumerate(self.optimizer.param_groups):
            self.print("Learning rate [{}]: {:4.3e}".format(g, group["lr"]))
        if ctx.is_main:
            writer = self.writers["train"]
            for g, group in enumerate(self.optimizer.param_groups):
                writer.add_scalar("lr/enc_group_%02d" % g, group["lr"], epoch)
            for k, v in epoch_means.items():
                writer.add_scalar(f"train_epoch/{k}", v, epoch)
        return total

    def visualise(self, epoch: int, fixed: dict[str, torch.Tensor]) -> None:
        """The ``visualisation`` image of the fixed batch, in eval mode (SPEC 7.6)."""
        from utils.visualize import visualisation_grid

        self.model.eval()
        image, labels = self._to_device(fixed["image"], fixed["labels"])
        with torch.no_grad():
            _, _, out = forward_losses(self.eval_net, self.criterion, image, labels, epoch, self.cfg)
        self.writers["train"].add_image("visualisation",
                                        visualisation_grid(image, labels, out, self.info.class_names), epoch)

    def check_stop(self, epoch: int, phase: str, iteration: int) -> None:
        """Between phases: stop if any process got a signal."""
        flag = all_reduce_sum(torch.tensor([float(self.stop.signum is not None)], device=self.ctx.device), self.ctx)
        if flag.item() > 0:
            raise Interrupted(self.stop.signum or signal.SIGTERM, epoch, phase, iteration)

    def fit(self, start_epoch: int, loaders: dict[str, tuple[DataLoader, EpochSampler]],
            fixed: dict[str, torch.Tensor] | None) -> None:
        cfg = self.cfg
        phase, start_iter = self.position
        started, iterations = time.time(), 0
        for epoch in range(start_epoch, cfg.TRAIN.NUM_EPOCHS + 1):
            self.print("Epoch >>> {}".format(epoch))
            if phase == "val" and epoch % cfg.TRAIN.VAL_EVERY == 0:
                if cfg.TRAIN.VAL_TRAIN_VOC:
                    t = time.time()
                    self.validation(epoch, "train", *loaders["train_voc"], checkpoint=False)
                    self.print("Validation / Train: {:.2g}m".format((time.time() - t) / 60))
                    self.check_stop(epoch, "val", 0)
                t = time.time()
                self.validation(epoch, "val", *loaders["val"], checkpoint=True)
                self.print("Validation /   Val: {:.2g}m".format((time.time() - t) / 60))
                self.check_stop(epoch, "train", 0)
            t = time.time()
            total = self.train_epoch(epoch, *loaders["train"], start=start_iter)
            self.print("Train epoch: {:.2g}m".format((time.time() - t) / 60))
            iterations += max(total - start_iter, 0)
            if epoch < cfg.TRAIN.NUM_EPOCHS:
                self.print(eta_line(time.time() - started, iterations, (cfg.TRAIN.NUM_EPOCHS - epoch) * total))
            if fixed is not None and self.ctx.is_main:
                self.visualise(epoch, fixed)
            phase, start_iter = "val", 0
            if epoch < cfg.TRAIN.NUM_EPOCHS:
                self.check_stop(epoch + 1, "val", 0)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


# --------------------------------------------------------------------------------------------------------------

def last_good_text(trainer: Trainer) -> str:
    """Where a stopped run can resume from: the newest complete snapshot of its directory, if any."""
    last = trainer.checkpoints.last_good()
    if last is None:
        return (f"no complete snapshot of this run is in {trainer.args.snapshot_dir}, so it starts again from the "
                "beginning")
    return (f"the last good snapshot is {last} in {trainer.args.snapshot_dir}; resume with the same command and "
            f"--resume {last} (or --resume last)")


def save_on_interrupt(trainer: Trainer, e: Interrupted) -> int:
    """The resumable snapshot of the first SIGINT/SIGTERM; the exit status of the signal, also when it could not
    be written (a full disk), then with one line saying what was lost and what is left."""
    suffix = interrupt_suffix(e.epoch, e.iteration)
    try:
        trainer.save(suffix, trainer.state(e.epoch, e.phase, e.iteration))
    except UserError as err:
        if trainer.ctx.is_main:
            sys.stderr.write(f"error: stopped by {e} at epoch {e.epoch}, {e.phase} iteration {e.iteration}, but the "
                             f"interrupt snapshot {suffix} could not be written ({err}); nothing of it was kept; "
                             f"{last_good_text(trainer)}\n")
        return exit_status(e.signum)
    if trainer.ctx.is_main:
        sys.stderr.write(f"stopped by {e}: epoch {e.epoch}, {e.phase} iteration {e.iteration}; saved snapshot "
                         f"{suffix} in {trainer.args.snapshot_dir}; resume with the same command and --resume "
                         f"{suffix} (or --resume last)\n")
    return exit_status(e.signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_arg_parser("Single-stage semantic segmentation: training").parse_args(argv)
    cfg = load_cfg(args.cfg_file, args.set_cfgs)
    ctx = init_distributed(select_device(args.device))
    try:
        if ctx.is_main:
            return run(args, argv, cfg, ctx)
        # the other processes of a torchrun job keep quiet: rank 0 prints (errors still reach stderr)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            return run(args, argv, cfg, ctx)
    finally:
        shutdown(ctx)


def run(args, argv: list[str], cfg: AttrDict, ctx: DistContext) -> int:
    """Every check first (nothing is written until all pass: no run directory, config.yaml, git.txt, event file
    or snapshot), then the run."""
    torch.backends.cudnn.benchmark = True  # as the original's training
    if args.workers > 0:
        torch.set_num_threads(args.workers)
    resolve_dirs(args, create=False)
    info = get_dataset(args.dataset)
    problems, config_ok = preflight(args, cfg, ctx, info)
    if not config_ok:
        raise UserError("\n".join(problems))
    if ctx.is_main and not problems:
        print("Config:")
        print(cfg_to_yaml(cfg), flush=True)
    # the model, the optimiser and the resumed snapshot: more problems (a backbone without its weights, a
    # snapshot of another model), reported together with the ones found so far
    built, own = None, []
    try:
        built = build_and_load(args, cfg, ctx)
    except UserError as e:
        own.append(str(e))
    problems += [p for part in all_gather_objects(own, ctx) for p in part]
    if problems or built is None:
        raise UserError("\n".join(problems))
    model, optimizer, checkpoints, point = built
    if args.check:
        if ctx.is_main:
            make_run_dirs(args)
        print(f"OK: config, data lists, weights, resume snapshot and output directories checked ({args.cfg_file})")
        return 0

    trainer = Trainer(args, cfg, ctx, model, optimizer, info, checkpoints)
    start_epoch = trainer.resume(point) if point is not None else 0
    seed = trainer.seed
    augment_val = not cfg.TRAIN.DETERMINISTIC_VAL
    n = info.num_classes
    loaders = {"train": make_loader(cfg, "train", ctx, seed, args.workers, augment=True, num_classes=n),
               "val": make_loader(cfg, "val", ctx, seed, args.workers, augment=augment_val, num_classes=n)}
    if cfg.TRAIN.VAL_TRAIN_VOC:
        loaders["train_voc"] = make_loader(cfg, "train_voc", ctx, seed, args.workers, augment=augment_val,
                                           num_classes=n)

    # set-up done: from here on the run writes
    if ctx.is_main:
        make_run_dirs(args)
        write_text(os.path.join(args.logdir, "config.yaml"), cfg_to_yaml(cfg))
        write_text(os.path.join(args.logdir, "git.txt"), git_description(["train.py", *argv]))
        for path in remove_stale_temporaries(args.snapshot_dir):
            print(f"Removed the unfinished file {path} of an interrupted run")
    trainer.open_writers()
    fixed = load_fixed_batch(args.fixed_batch_path, *loaders["train"], cfg.TRAIN.BATCH_SIZE) if ctx.is_main else None

    trainer.stop.install()
    try:
        try:
            trainer.fit(start_epoch, loaders, fixed)
        except Interrupted as e:
            return save_on_interrupt(trainer, e)
    except StopSignal as e:  # the second SIGINT/SIGTERM: stop at once, without saving
        if ctx.is_main:
            sys.stderr.write(f"stopped at once by a second {signal_name(e.signum)}, without saving; "
                             f"{last_good_text(trainer)}\n")
        return exit_status(e.signum)
    finally:
        trainer.stop.uninstall()
        trainer.close()
    trainer.print(f"Done: {cfg.TRAIN.NUM_EPOCHS + 1 - start_epoch} epochs; best score {trainer.best_score:.3f}; "
                  f"snapshots in {args.snapshot_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
