"""Devices and scale: one process (CPU or one GPU), DataParallel over all visible GPUs (SPEC 7.1), or
DistributedDataParallel under torchrun.

SPEC 7.1 wraps model and criterion in ``nn.DataParallel`` on the GPUs and splits a batch of TRAIN.BATCH_SIZE
over them. Under torchrun every process gets TRAIN.BATCH_SIZE // world_size images, so the effective batch is
the same; logged losses and validation inputs are reduced across processes, and only rank 0 writes.
"""
from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from utils.errors import UserError
from utils.procs import die_with_parent


@dataclass
class DistContext:
    """Where this process runs and which part of the work is its own."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False  # launched by torchrun (DDP)

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, snapshots and the fixed batch."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> DistContext:
    """Join the torchrun process group (env:// rendezvous) when launched by torchrun; otherwise one process.

    nccl on CUDA (each process on the GPU of its LOCAL_RANK), gloo on CPU.
    """
    if not launched_by_torchrun():
        return DistContext(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                            "lower torchrun's --nproc_per_node")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(device=device, rank=rank, world_size=world, local_rank=local_rank, distributed=world > 1)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The share of one process: the global batch TRAIN.BATCH_SIZE must split evenly."""
    if batch_size % world_size:
        raise UserError(f"TRAIN.BATCH_SIZE {batch_size} does not split evenly over {world_size} processes; "
                        f"set it to a multiple of {world_size} (it is the global batch, as the original's)")
    return batch_size // world_size


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP under torchrun; DataParallel over all visible GPUs when there are several; else the model itself.

    The caller keeps the unwrapped model for snapshots (no ``module.`` prefix, SPEC 7.1).
    """
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # frozen backbone parameters never get gradients; DDP must not wait for them
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)
    if ctx.device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model)
    return model


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum over processes (a copy; the input is unchanged). One process: the input."""
    if not ctx.distributed:
        return values
    out = values.detach().clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]; one process: [obj]."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class EpochSampler(Sampler):
    """The sample order of one epoch, sharded over processes so that global batch i is the same for every
    world size, each sample paired with its own augmentation seed.

    Order: a permutation drawn from (seed, epoch) when ``shuffle`` (the train loader, SPEC 3.5), else the list
    order. Batch i of the single-process run holds positions [i·B, (i+1)·B); under torchrun, process r takes the
    positions of that range congruent to r modulo the world size, so the union over processes is that batch.
    Each position yields ``(index, sample_seed)``: the seed is a function of (seed, epoch, position), which makes
    the augmentation independent of the number of DataLoader workers and lets a run resume mid-epoch exactly.
    Set the epoch with ``set_epoch`` and the first batch with ``set_start`` (plays the role of torch's
    DistributedSampler, which pads shards with repeated samples and cannot start mid-epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True, stream: int = 0):
        self.n, self.batch_size, self.seed, self.stream = num_samples, batch_size, seed, stream
        self.rank, self.world_size, self.shuffle, self.drop_last = rank, world_size, shuffle, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch: int) -> None:
        """Skip the first ``batch`` global batches of the epoch (resuming mid-epoch)."""
        self.start = batch

    def num_batches(self) -> int:
        """Global batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(_mix(self.seed, self.stream, self.epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        end = self.num_batches() * self.batch_size if self.drop_last else self.n
        for pos in range(self.start * self.batch_size, end):
            if (pos % self.batch_size) % self.world_size == self.rank:
                yield order[pos], _mix(self.seed, self.stream, self.epoch, pos)

    def __len__(self) -> int:
        end = self.num_batches() * self.batch_size if self.drop_last else self.n
        return sum(1 for pos in range(self.start * self.batch_size, end)
                   if (pos % self.batch_size) % self.world_size == self.rank)


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (a stable hash: the same numbers in every process and Python run)."""
    h = 1469598103934665603
    for p in pickle.dumps(tuple(int(x) for x in parts)):
        h = ((h ^ p) * 1099511628211) % 2**64
    return h % 2**63


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that ``dataset[(index, seed)]`` draws its augmentation from ``seed`` alone.

    torch's CPU generator, numpy and random are seeded with the sample's seed for the call and restored after it,
    so loading in the main process (--workers 0) leaves the model's random stream (dropout, Stochastic Gate)
    untouched, and loading in worker processes gives the same images.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        gen = torch.random.default_generator
        saved = gen.get_state(), np.random.get_state(), random.getstate()
        gen.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            gen.set_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


def worker_init(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes the iteration and saves a snapshot, and
    end with it if it is killed."""
    die_with_parent()
