"""The Trainer of train.py: one run's state (model, optimiser, best score, where it stands, writers) and its phases
in the order of SPEC 7.2; the work of each phase is done by utils/training.py and utils/validation.py.
Also the end of a run by signal: the first SIGINT/SIGTERM saves a resumable snapshot, a second stops at once."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from datasets.info import DatasetInfo
from losses import get_criterion
from utils.checkpoints import Checkpointer, ResumePoint, best_suffix, interrupt_suffix
from utils.config import AttrDict
from utils.dist import DistContext, EpochSampler, all_gather_objects, all_reduce_sum, barrier, wrap_model
from utils.errors import UserError
from utils.metrics import checkpoint_score
from utils.procs import StopSignal, exit_status, signal_name
from utils.run_setup import Interrupted, RunDirs, StopRequest, capture_rng, restore_rng
from utils.training import (Loaders, Progress, batch_to_device, eta_line, forward_losses, log_epoch, say, to_device,
                            train_iteration)
from utils.validation import forward_split, log_validation, score_split

INITIAL_BEST = -1e16  # best_score before any checkpoint (SPEC 7.1)


class Trainer:
    """One run's state and its phases: validation when due, a training epoch, the checkpoint policy, snapshots for
    an exact resume. It orchestrates; the steps are plain functions."""

    def __init__(self, cfg: AttrDict, ctx: DistContext, info: DatasetInfo, dirs: RunDirs, seed: int,
                 model: nn.Module, optimizer: torch.optim.Optimizer, checkpoints: Checkpointer):
        self.cfg, self.ctx, self.info, self.dirs, self.seed = cfg, ctx, info, dirs, seed
        self.model, self.optimizer, self.checkpoints = model, optimizer, checkpoints
        self.criterion = get_criterion(cfg.NET.LOSS)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.TRAIN.AMP == "fp16")
        self.best_score = INITIAL_BEST
        self.stop = StopRequest()
        self.writers: dict[str, Any] = {}  # TensorBoard event files, made by open_writers once the run starts
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
            self.writers = {k: EventWriter(os.path.join(self.dirs.logdir, k)) for k in ("train", "val")}

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
        if point.state is None:  # a snapshot without a state file: the epoch after the suffix's (SPEC 7.1)
            say(f"Resumed from {point.suffix}: epoch {point.start_epoch}, best score {self.best_score:.3f}")
            return point.start_epoch
        st = point.state
        if st["seed"] != self.seed:
            say(f"Note: the run used --random-seed {st['seed']}; continuing with it (given: {self.seed})")
            self.seed = st["seed"]
        self.position = (st["phase"], st["iteration"])
        self.epoch_sums = dict(st["epoch_sums"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if st["world_size"] == self.ctx.world_size:
            restore_rng(st["rng"][self.ctx.rank])
        else:
            say(f"Note: the snapshot was written by {st['world_size']} processes, this run has "
                f"{self.ctx.world_size}; the random stream of dropout and the gate starts afresh")
        say(f"Resumed from {point.suffix}: epoch {st['epoch']}, "
            + (f"training from iteration {st['iteration']}" if st["phase"] == "train" else "with validation")
            + f", best score {self.best_score:.3f}")
        return st["epoch"]

    # --- validation (SPEC 7.5) ---
    def validation(self, epoch: int, writer_key: str, loader: DataLoader, sampler: EpochSampler,
                   checkpoint: bool) -> None:
        """Forward over the split, gather the processes' shares, score, log (rank 0), then the checkpoint policy."""
        self.model.eval()
        sampler.set_epoch(epoch)
        part = forward_split(self.eval_net, self.criterion, loader, epoch, self.cfg, self.info.num_classes,
                             self.ctx.device)
        result = score_split(all_gather_objects(part, self.ctx), epoch, writer_key, self.info.num_classes)
        if self.ctx.is_main:
            log_validation(self.writers[writer_key], result, epoch, self.info.class_names)
        if checkpoint and epoch >= self.cfg.TRAIN.PRETRAIN:
            self.keep_if_best(epoch, checkpoint_score(result.means["loss"], result.mask_scores,
                                                      self.cfg.TRAIN.SNAPSHOT_SCORE), writer_key)

    def keep_if_best(self, epoch: int, score: float, writer_key: str) -> None:
        """A snapshot when the score beats the best so far (SPEC 7.5)."""
        if self.ctx.is_main:
            self.writers[writer_key].add_scalar("all/checkpoint_score", score, epoch)
        if score > self.best_score:
            self.best_score = score
            suffix = best_suffix(epoch, score)
            say(">>> Saving checkpoint with score {:3.2e}, epoch {}".format(score, epoch))
            # validation of this epoch is done: a resume continues with its training
            if not self.save(suffix, self.state(epoch, "train", 0)):
                say(f"Snapshot {suffix} exists already; it is kept as it is")

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
        progress = Progress(epoch, start, total, cfg.TRAIN.BATCH_SIZE, bar=sys.stdout.isatty() and ctx.is_main)
        try:
            i = start
            for batch in loader:
                if i >= total:
                    break
                if batch is None:  # every image of the batch was skipped (TRAIN.ON_CORRUPT skip)
                    print(f"Warning: epoch {epoch}, iteration {i}: no readable image in the batch; skipped")
                    i += 1
                    continue
                image, labels, gt_mask = batch_to_device(batch, cfg, ctx.device)
                means, stop = train_iteration(self.net, self.criterion, self.optimizer, self.scaler, image, labels,
                                              epoch, i, cfg, ctx, stop=self.stop.signum is not None, gt_mask=gt_mask)
                # one process stops right after the iteration the signal arrived in; under torchrun all processes
                # stop together, after the iteration whose reduced flag first shows it
                stop = stop or (not ctx.distributed and self.stop.signum is not None)
                self.record(means, epoch * total + i)
                progress.step(i, means)
                i += 1
                if stop:
                    raise Interrupted(self.stop.signum or signal.SIGTERM, epoch, "train", i)
        finally:
            progress.close()
        n = self.epoch_sums.pop("_n", 0.0)
        epoch_means = {k: v / max(n, 1.0) for k, v in self.epoch_sums.items()}
        self.epoch_sums = {}
        log_epoch(self.writers.get("train"), self.optimizer, epoch_means, epoch)
        return total

    def record(self, means: dict[str, float], step: int) -> None:
        """Add an iteration's values to the epoch's sums (kept in resume snapshots); TRAIN.LOG_ITER_LOSSES also
        writes them as ``train_iter/<key>``."""
        for k, v in means.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        if self.cfg.TRAIN.LOG_ITER_LOSSES and self.ctx.is_main:
            for k, v in means.items():
                self.writers["train"].add_scalar(f"train_iter/{k}", v, step)
        self.epoch_sums["_n"] = self.epoch_sums.get("_n", 0.0) + 1

    def visualise(self, epoch: int, fixed: dict[str, torch.Tensor]) -> None:
        """The ``visualisation`` image of the fixed batch, in eval mode (SPEC 7.6)."""
        from utils.visualize import visualisation_grid

        self.model.eval()
        image, labels = to_device(fixed["image"], fixed["labels"], self.cfg, self.ctx.device)
        with torch.no_grad():
            _, _, out = forward_losses(self.eval_net, self.criterion, image, labels, epoch, self.cfg)
        self.writers["train"].add_image("visualisation",
                                        visualisation_grid(image, labels, out, self.info.class_names), epoch)

    def check_stop(self, epoch: int, phase: str, iteration: int) -> None:
        """Between phases: stop if any process got a signal."""
        flag = all_reduce_sum(torch.tensor([float(self.stop.signum is not None)], device=self.ctx.device), self.ctx)
        if flag.item() > 0:
            raise Interrupted(self.stop.signum or signal.SIGTERM, epoch, phase, iteration)

    def fit(self, start_epoch: int, loaders: Loaders, fixed: dict[str, torch.Tensor] | None) -> None:
        """Epochs start_epoch..NUM_EPOCHS (SPEC 7.2): validation when due, before the epoch's training."""
        cfg = self.cfg
        phase, start_iter = self.position
        started, iterations = time.time(), 0
        for epoch in range(start_epoch, cfg.TRAIN.NUM_EPOCHS + 1):
            say("Epoch >>> {}".format(epoch))
            if phase == "val" and epoch % cfg.TRAIN.VAL_EVERY == 0:
                if cfg.TRAIN.VAL_TRAIN_VOC:
                    t = time.time()
                    self.validation(epoch, "train", *loaders["train_voc"], checkpoint=False)
                    say("Validation / Train: {:.2g}m".format((time.time() - t) / 60))
                    self.check_stop(epoch, "val", 0)
                t = time.time()
                self.validation(epoch, "val", *loaders["val"], checkpoint=True)
                say("Validation /   Val: {:.2g}m".format((time.time() - t) / 60))
                self.check_stop(epoch, "train", 0)
            t = time.time()
            total = self.train_epoch(epoch, *loaders["train"], start=start_iter)
            say("Train epoch: {:.2g}m".format((time.time() - t) / 60))
            iterations += max(total - start_iter, 0)
            if epoch < cfg.TRAIN.NUM_EPOCHS:
                say(eta_line(time.time() - started, iterations, (cfg.TRAIN.NUM_EPOCHS - epoch) * total))
            if fixed is not None and self.ctx.is_main:
                self.visualise(epoch, fixed)
            phase, start_iter = "val", 0
            if epoch < cfg.TRAIN.NUM_EPOCHS:
                self.check_stop(epoch + 1, "val", 0)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def last_good_text(trainer: Trainer) -> str:
    """Where a stopped run can resume from: the newest complete snapshot of its directory, if any."""
    last = trainer.checkpoints.last_good()
    snapshot_dir = trainer.dirs.snapshot_dir
    if last is None:
        return f"no complete snapshot of this run is in {snapshot_dir}, so it starts again from the beginning"
    return (f"the last good snapshot is {last} in {snapshot_dir}; resume with the same command and "
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
                         f"{suffix} in {trainer.dirs.snapshot_dir}; resume with the same command and --resume "
                         f"{suffix} (or --resume last)\n")
    return exit_status(e.signum)


def fit_until_stopped(trainer: Trainer, start_epoch: int, loaders: Loaders,
                      fixed: dict[str, torch.Tensor] | None) -> int:
    """The epochs, with the first SIGINT/SIGTERM turned into a resumable snapshot and a second into a stop at
    once; the exit status."""
    trainer.stop.install()
    try:
        try:
            trainer.fit(start_epoch, loaders, fixed)
        except Interrupted as e:
            return save_on_interrupt(trainer, e)
    except StopSignal as e:  # the second SIGINT/SIGTERM: stop at once, without saving
        if trainer.ctx.is_main:
            sys.stderr.write(f"stopped at once by a second {signal_name(e.signum)}, without saving; "
                             f"{last_good_text(trainer)}\n")
        return exit_status(e.signum)
    finally:
        trainer.stop.uninstall()
        trainer.close()
    say(f"Done: {trainer.cfg.TRAIN.NUM_EPOCHS + 1 - start_epoch} epochs; best score {trainer.best_score:.3f}; "
        f"snapshots in {trainer.dirs.snapshot_dir}")
    return 0
