"""The parts of a training run (SPEC 7) that train.py and utils/trainer.py put together: the checks before anything
is built or written, the optimiser, the loaders, the fixed visualisation batch, one training step and what an epoch
prints. Building the model is train.py's: utils/ sits below the models."""
from __future__ import annotations

import datetime
import math
import os
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datasets.filelists import on_corrupt_problem, read_file_list
from datasets.pascal_voc import SPLIT_LISTS, VOCSegmentation, collate_skip_none
from datasets.transforms import dataset_cfg_problems
from datasets.voc import IGNORE_INDEX, denorm
from losses import get_criterion
from losses.functional import total_loss
from utils.checkpoints import resolve_suffix, snapshot_paths
from utils.config import TRAIN_RANGES, AttrDict, range_problems
from utils.dist import DistContext, EpochSampler, SeededSamples, all_reduce_sum, per_rank_batch, worker_init
from utils.errors import UserError
from utils.fastpath import AMP_DTYPES
from utils.fileio import save_torch
from utils.metrics import SNAPSHOT_SCORES

LOG_EVERY = 10  # per-iteration console line every 10 iterations (SPEC 7.3)
STREAMS = {"train": 0, "train_voc": 1, "val": 2}  # independent augmentation streams of the three loaders
Loaders = dict[str, tuple[DataLoader, EpochSampler]]  # split -> its loader and sampler

# --------------------------------------------------------------------------------------------------------------
# checks, before anything is built or written


def check_train_cfg(cfg: AttrDict) -> list[str]:
    """Problems of the training keys but NET.MODEL (train.py checks it against models.MODELS), one line each; the
    merge already checked names and types."""
    problems = []
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
    corrupt = on_corrupt_problem(cfg.TRAIN.ON_CORRUPT)
    if corrupt:
        problems.append(corrupt)
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


def check_split_size(cfg: AttrDict) -> str | None:
    """The training split must fill at least one batch (it drops the last, short one); a list that cannot be
    read is left to ``check_data``."""
    list_path = os.path.join(cfg.DATASET.ROOT, cfg.DATASET[SPLIT_LISTS["train"]])
    try:
        n = len(read_file_list(list_path, cfg.DATASET.ROOT, need_masks=True, check_exists=False))
    except UserError:
        return None
    if cfg.TRAIN.BATCH_SIZE < 1 or n >= cfg.TRAIN.BATCH_SIZE:  # a batch size below 1: check_train_cfg names it
        return None
    return (f"split train ({list_path}) has {n} images, fewer than the batch size {cfg.TRAIN.BATCH_SIZE}, so no "
            "batch would be left; lower TRAIN.BATCH_SIZE or add images")


def check_world_size(batch_size: int, world_size: int) -> str | None:
    """Under torchrun the global batch is split over the processes, evenly."""
    if world_size > 1 and batch_size % world_size:
        return (f"TRAIN.BATCH_SIZE {batch_size} does not split evenly over {world_size} processes; set it to a "
                "multiple of the process count")
    return None


def resume_suffix(snapshot_dir: str, resume: str) -> str:
    """--resume as a suffix whose model file exists (``last`` names the newest complete snapshot)."""
    suffix = resolve_suffix(snapshot_dir, resume)
    model_file = snapshot_paths(snapshot_dir, suffix)["model"]
    if not os.path.isfile(model_file):
        raise UserError(f"snapshot {model_file} not found; check --resume (e.g. e020Xs0.928, or last) and "
                        "--snapshot-dir/--dataset/--exp/--run")
    return suffix


# --------------------------------------------------------------------------------------------------------------
# what a run is built from

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
    sampler = EpochSampler(len(dataset), batch, seed, ctx.rank, ctx.world_size, shuffle=train, drop_last=train,
                           stream=STREAMS[split])
    loader = DataLoader(SeededSamples(dataset), batch_size=per_rank_batch(batch, ctx.world_size), sampler=sampler,
                        num_workers=workers, pin_memory=ctx.device.type == "cuda", drop_last=False,
                        collate_fn=collate_skip_none, worker_init_fn=worker_init if workers > 0 else None,
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def make_loaders(cfg: AttrDict, ctx: DistContext, seed: int, workers: int, num_classes: int) -> Loaders:
    """The training loader and the validation ones (SPEC 7.1): val, and train_voc when TRAIN.VAL_TRAIN_VOC; the
    validation splits are augmented as the training split unless TRAIN.DETERMINISTIC_VAL."""
    augment_val = not cfg.TRAIN.DETERMINISTIC_VAL
    splits = {"train": True, "val": augment_val, **({"train_voc": augment_val} if cfg.TRAIN.VAL_TRAIN_VOC else {})}
    return {split: make_loader(cfg, split, ctx, seed, workers, augment=augment, num_classes=num_classes)
            for split, augment in splits.items()}


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
# one step (SPEC 7.3)

def to_device(image: torch.Tensor, labels: torch.Tensor, cfg: AttrDict, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Image [B,3,S,S] (channels_last under TRAIN.CHANNELS_LAST) and labels [B,C-1] on ``device``."""
    fmt = torch.channels_last if cfg.TRAIN.CHANNELS_LAST else torch.contiguous_format
    return image.to(device, non_blocking=True).contiguous(memory_format=fmt), labels.to(device, non_blocking=True)


def batch_to_device(batch: tuple, cfg: AttrDict, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A loader batch's image and labels (``to_device``) and, in a fully supervised run, its GT masks [B,S,S] (the
    targets; else None) on ``device``."""
    image, labels = to_device(batch[0], batch[1], cfg, device)
    return image, labels, batch[3].to(device, non_blocking=True) if cfg.TRAIN.FULLY_SUPERVISED else None


def forward_losses(net: nn.Module, criterion: Callable, image: torch.Tensor, labels: torch.Tensor, epoch: int,
                   cfg: AttrDict, gt_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward a batch; (loss to minimise, logged values, model outputs).

    image [B,3,S,S] normalised, labels [B,20]. The mask loss joins from epoch TRAIN.PRETRAIN on (``total_loss``);
    it is computed and logged before that too. With TRAIN.FULLY_SUPERVISED, ``gt_mask`` [B,S,S] (255 = ignore; GT
    masks or those of DATASET.MASK_DIR) replaces the pseudo labels: plain cross-entropy of the upsampled logits from
    the first epoch (a reference, or a second stage trained on exported pseudo labels; not the paper's method).
    """
    image_raw = denorm(image)  # [B,3,S,S] RGB in [0,1]
    amp = AMP_DTYPES.get(cfg.TRAIN.AMP)
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None):
        out = net(image, image_raw, labels)
    loss_cls = criterion(out["cls"].float(), labels).mean()
    logs = {"loss_cls": loss_cls, "loss_fg": out["cls_fg"].float().mean()}
    pretrain = cfg.TRAIN.PRETRAIN
    if gt_mask is not None:
        logits = F.interpolate(out["logits"].float(), size=gt_mask.shape[-2:], mode="bilinear", align_corners=True)
        if bool((gt_mask != IGNORE_INDEX).any()):
            logs["loss_mask"] = F.cross_entropy(logits, gt_mask, ignore_index=IGNORE_INDEX)
        else:  # a batch without a labelled pixel (pseudo labels may leave whole crops 255): no mask loss, not NaN
            logs["loss_mask"] = logits.sum() * 0.0
        pretrain = 0  # the GT masks are good from the start
    elif "loss_mask" in out:
        logs["loss_mask"] = out["loss_mask"].float().mean()
    loss = total_loss(loss_cls, logs.get("loss_mask"), epoch, pretrain, cfg.NET.MASK_LOSS_BCE)
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


# --------------------------------------------------------------------------------------------------------------
# what an epoch prints

def say(*a: Any) -> None:
    """A console line, flushed (the log of a run in the background is read while it runs)."""
    print(*a, flush=True)


class Progress:
    """The progress of a training epoch: a tqdm bar on a terminal, else the line of SPEC 7.3 every LOG_EVERY
    iterations, ``Loss [iiii]: <key>: <value> | ... |  | Im/Sec: <images per second since the epoch start>``."""

    def __init__(self, epoch: int, start: int, total: int, batch_size: int, bar: bool):
        self.t0, self.images, self.batch_size = time.time(), 0, batch_size
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=f"Epoch {epoch}", dynamic_ncols=True, leave=False)

    def step(self, iteration: int, means: dict[str, float]) -> None:
        self.images += self.batch_size
        rate = self.images / max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{rate:.1f}")
            self.bar.update(1)
        elif iteration % LOG_EVERY == 0:
            msg = "Loss [{:04d}]: ".format(iteration)
            msg += "".join("{}: {:.4f} | ".format(k, v) for k, v in means.items())
            say(msg + " | Im/Sec: {:.1f}".format(rate))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_epoch(writer: Any | None, optimizer: torch.optim.Optimizer, epoch_means: dict[str, float],
              epoch: int) -> None:
    """After an epoch (SPEC 7.3): the mean of each logged value and the learning rates, on the console and as the
    train writer's ``train_epoch/<key>`` and ``lr/enc_group_<i>`` (``writer`` None on the other processes)."""
    for k, v in epoch_means.items():
        say("{}: {:4.3f}".format(k, v))
    for g, group in enumerate(optimizer.param_groups):
        say("Learning rate [{}]: {:4.3e}".format(g, group["lr"]))
    if writer is not None:
        for g, group in enumerate(optimizer.param_groups):
            writer.add_scalar("lr/enc_group_%02d" % g, group["lr"], epoch)
        for k, v in epoch_means.items():
            writer.add_scalar(f"train_epoch/{k}", v, epoch)


def eta_line(elapsed: float, done: int, remaining: int) -> str:
    """When the run will end: the seconds per training iteration so far (validations included, so the epochs to
    come are charged theirs) times the iterations left."""
    if done <= 0:
        return f"ETA: unknown ({remaining} iterations left)"
    left = elapsed / done * remaining
    finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left))
    return f"ETA: {datetime.timedelta(seconds=round(left))} ({remaining} iterations left, done about {finish})"
