"""Distributed training on CPU (gloo): torchrun end to end through the launch script, and one DDP step equal to a
single-process step on the same global batch when batch statistics play no part."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import ROOT, TINY_SETS, env, run_dir, scalars, snapshot_files, train_args
from utils.visualize import read_events

BATCH, SIZE, EPOCH = 4, 32, 5  # epoch >= TRAIN.PRETRAIN: the mask loss is part of the step


def _setup(model_name: str):
    from models import build_model
    from utils.config import load_cfg
    from utils.run_setup import set_seed

    cfg = load_cfg("configs/voc_resnet38.yaml", TINY_SETS + ["NET.MODEL", model_name, "TRAIN.PRETRAIN", "5"])
    set_seed(0)
    model = build_model(cfg.NET)
    # batch statistics play no part: BNs use running statistics, dropout is off, the Stochastic Gate is the fixed mix
    model.eval()
    optimizer = torch.optim.SGD(model.parameter_groups(cfg.NET.LR, cfg.NET.WEIGHT_DECAY), lr=cfg.NET.LR,
                                momentum=cfg.NET.MOMENTUM, weight_decay=cfg.NET.WEIGHT_DECAY)
    g = torch.Generator().manual_seed(1)
    image = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    labels = torch.zeros(BATCH, 20)
    labels[torch.arange(BATCH), torch.tensor([2, 6, 7, 11])] = 1
    return cfg, model, optimizer, image, labels


def _steps(model, optimizer, cfg, ctx, image, labels, net=None):
    from losses import get_criterion
    from utils.training import train_iteration

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    logs = []
    for it in range(2):  # the second step also uses the momentum buffers
        means, _ = train_iteration(net or model, get_criterion(cfg.NET.LOSS), optimizer, scaler, image, labels,
                                   EPOCH, it, cfg, ctx)
        logs.append(means)
    return logs


def _worker(rank: int, world: int, init_file: str, out: str, model_name: str) -> None:
    from utils.dist import DistContext, wrap_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg, model, optimizer, image, labels = _setup(model_name)
        ctx = DistContext(device=torch.device("cpu"), rank=rank, world_size=world, distributed=True)
        net = wrap_model(model, ctx)
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        # the shard EpochSampler gives this rank: positions congruent to the rank
        logs = _steps(model, optimizer, cfg, ctx, image[rank::world], labels[rank::world], net=net)
        if rank == 0:
            torch.save({"state": model.state_dict(), "logs": logs}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("model_name", ["ae", "bsl"])
def test_ddp_step_equals_single_process_step(tmp_path, model_name):
    from utils.dist import DistContext

    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "rdzv"), out, model_name), nprocs=2, join=True)
    cfg, model, optimizer, image, labels = _setup(model_name)
    logs = _steps(model, optimizer, cfg, DistContext(device=torch.device("cpu")), image, labels)
    ddp = torch.load(out, weights_only=True)
    for (k, a), b in zip(model.state_dict().items(), ddp["state"].values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), k
    # the weights did move, and the logged losses are the global batch's
    assert not torch.equal(_setup(model_name)[1].state_dict()["last_conv.8.weight" if model_name == "ae"
                                                              else "fc8.weight"], model.state_dict()[
        "last_conv.8.weight" if model_name == "ae" else "fc8.weight"])
    for single, dist_logs in zip(logs, ddp["logs"]):
        assert single.keys() == dist_logs.keys()
        for k in single:
            assert dist_logs[k] == pytest.approx(single[k], rel=1e-4, abs=1e-6), k


def test_torchrun_two_processes_through_the_launch_script(synthetic_root, tmp_path):
    """launch/run_torchrun.sh with NPROC=2 on CPU (gloo), as a user runs it, a few iterations end to end."""
    args = train_args(synthetic_root, "", "x", epochs=2)
    sets = args[args.index("--set") + 1:]
    e = env()
    with socket.socket() as probe:  # a free port: other test workers may run torchrun at the same time
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    e.update(FOREGROUND="1", NPROC="2", MASTER_PORT=port, EXP="t", RUN_ID="ddp", LOGDIR=str(tmp_path / "logs"),
             SNAPSHOT_DIR=str(tmp_path / "snapshots"),
             EXTRA_ARGS="--workers 0 --random-seed 1 --set " + " ".join(sets))
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "run_torchrun.sh")], cwd=str(tmp_path), env=e,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "2 process(es) on cpu" in out and out.count("Epoch >>> 2") == 1  # only rank 0 prints
    assert any(f.startswith("model_enc_e002Xs") for f in snapshot_files(str(tmp_path), "ddp"))
    found = scalars(str(tmp_path), "ddp")
    assert set(found["val/all/loss"]) == {0, 2} and set(found["train/lr/enc_group_00"]) == {0, 1, 2}
    logdir = run_dir(str(tmp_path), "ddp", "logs")
    for writer in ("train", "val"):  # one events file per writer: only rank 0 writes
        assert len([f for f in os.listdir(os.path.join(logdir, writer)) if f.startswith("events")]) == 1
    assert "visualisation" in read_events(os.path.join(logdir, "train"))
