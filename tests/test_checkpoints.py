"""Snapshots (names, rotation, completeness, resume rules) and the epoch sampler behind exact resumes and DDP."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.weights import load_snapshot
from utils.checkpoints import (Checkpointer, best_suffix, interrupt_suffix, list_snapshots, parse_suffix,
                               remove_stale_temporaries)
from utils.dist import EpochSampler, SeededSamples
from utils.errors import UserError


def _model_opt(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()  # momentum buffers exist
    return model, opt


def test_suffixes_follow_the_original():
    assert best_suffix(20, 0.9284) == "e020Xs0.928"
    assert parse_suffix("e020Xs0.928") == ("best", 20, 0.928)
    assert parse_suffix("e003Xs-0.125") == ("best", 3, -0.125)
    assert interrupt_suffix(7, 42) == "e007Xi00042" and parse_suffix("e007Xi00042") == ("interrupt", 7, 42)
    assert parse_suffix("final") is None


def test_save_load_round_trip_with_original_rules(tmp_path):
    model, opt = _model_opt(0)
    ck = Checkpointer(str(tmp_path), nn.DataParallel(model).module, opt)
    assert ck.save("e004Xs0.500")
    files = sorted(os.listdir(tmp_path))
    assert files == ["model_enc_e004Xs0.500.pth", "opt_enc_e004Xs0.500.pth"]
    state = torch.load(tmp_path / "model_enc_e004Xs0.500.pth", map_location="cpu", weights_only=True)
    assert list(state) == list(model.state_dict()) and not any(k.startswith("module.") for k in state)
    # an existing snapshot is never overwritten
    before = (tmp_path / "model_enc_e004Xs0.500.pth").stat().st_mtime_ns
    assert not ck.save("e004Xs0.500")
    assert (tmp_path / "model_enc_e004Xs0.500.pth").stat().st_mtime_ns == before
    # loading: weights and momentum back; the original's resume rule without a state file
    other, other_opt = _model_opt(1)
    point = Checkpointer(str(tmp_path), other, other_opt).load("e004Xs0.500", load_snapshot)
    assert (point.start_epoch, point.best_score, point.state) == (5, 0.5, None)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"],
                       other_opt.state_dict()["state"][0]["momentum_buffer"])


def test_prefixed_state_dict_is_saved_without_prefixes(tmp_path):
    model, opt = _model_opt(0)

    class Wrapped(nn.Module):  # a state dict as DataParallel/compile would produce
        def __init__(self):
            super().__init__()
            self.module = model

        def state_dict(self, *a, **k):
            return {"module._orig_mod." + key: v for key, v in model.state_dict().items()}

    Checkpointer(str(tmp_path), Wrapped(), opt).save("e001Xs0.100")
    keys = list(torch.load(tmp_path / "model_enc_e001Xs0.100.pth", weights_only=True))
    assert keys == list(model.state_dict())


def test_rotation_keeps_the_five_latest_and_the_state(tmp_path):
    model, opt = _model_opt()
    ck = Checkpointer(str(tmp_path), model, opt)
    for e in range(7):
        assert ck.save(best_suffix(e, 0.1 * e), state={"epoch": e, "best_score": 0.1 * e})
    assert list_snapshots(str(tmp_path)) == [best_suffix(e, 0.1 * e) for e in range(2, 7)]
    assert len(os.listdir(tmp_path)) == 15
    point = Checkpointer(str(tmp_path), model, opt).load("last", load_snapshot)
    assert point.suffix == best_suffix(6, 0.6) and point.start_epoch == 6 and point.state["epoch"] == 6


def test_incomplete_snapshots_are_ignored_and_interrupts_replace_each_other(tmp_path):
    model, opt = _model_opt()
    ck = Checkpointer(str(tmp_path), model, opt)
    ck.save("e002Xs0.300", state={"epoch": 2, "best_score": 0.3})
    ck.save("e003Xi00001", state={"epoch": 3, "best_score": 0.3})
    ck.save("e003Xi00002", state={"epoch": 3, "best_score": 0.3})
    assert list_snapshots(str(tmp_path)) == ["e002Xs0.300", "e003Xi00002"]
    # a model file whose optimiser file is gone is incomplete; so is an interrupt snapshot without its state
    os.unlink(tmp_path / "state_enc_e003Xi00002.pth")
    assert list_snapshots(str(tmp_path)) == ["e002Xs0.300"]
    with pytest.raises(UserError, match="needs .*state_enc_e003Xi00002.pth"):
        Checkpointer(str(tmp_path), model, opt).load("e003Xi00002", load_snapshot)
    os.unlink(tmp_path / "opt_enc_e002Xs0.300.pth")
    with pytest.raises(UserError, match="no complete snapshot"):
        Checkpointer(str(tmp_path), model, opt).resolve("last")
    with pytest.raises(UserError, match="optimiser file .* is missing"):
        Checkpointer(str(tmp_path), model, opt).load("e002Xs0.300", load_snapshot)
    with pytest.raises(UserError, match="model_enc_e009Xs0.100.pth not found"):
        Checkpointer(str(tmp_path), model, opt).load("e009Xs0.100", load_snapshot)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".model_enc_e001Xs0.100.pth.abc123.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("kept")
    assert len(remove_stale_temporaries(str(tmp_path))) == 1
    assert os.listdir(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("world", [2, 4])
def test_epoch_sampler_shards_are_the_single_process_batches(world):
    n, batch = 22, 8
    single = list(EpochSampler(n, batch, seed=5, shuffle=True, drop_last=True))
    assert len(single) == 16 and len({i for i, _ in single}) == 16
    shards = [list(EpochSampler(n, batch, seed=5, rank=r, world_size=world, shuffle=True, drop_last=True))
              for r in range(world)]
    per = batch // world
    for b in range(2):
        union = [x for s in shards for x in s[b * per:(b + 1) * per]]
        assert sorted(union) == sorted(single[b * batch:(b + 1) * batch])
    # validation order: the list order, the last batch short, nothing repeated
    val = [list(EpochSampler(n, batch, seed=5, rank=r, world_size=world, shuffle=False, drop_last=False))
           for r in range(world)]
    assert sorted(i for s in val for i, _ in s) == list(range(n))
    # epochs differ; a start skips whole batches
    s = EpochSampler(n, batch, seed=5)
    s.set_epoch(1)
    assert list(s) != single
    s.set_epoch(0)
    s.set_start(1)
    assert list(s) == single[batch:] and len(s) == batch


def test_seeded_samples_repeat_and_leave_the_global_streams_alone():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(1).item(), np.random.rand(), random.random()

    ds = SeededSamples(Noisy())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first = ds[(0, 123)]
    assert ds[(2, 123)] == first and ds[(0, 124)] != first
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected
