"""The set-up every entry point shares (utils/run_setup.py): --cfg/--set parsed the same way by the scripts and the
tools, the config frozen after the merge, the problem collector, and the checks written once (TRAIN.ON_CORRUPT, a
training split smaller than the batch)."""
from __future__ import annotations

import copy
import os

import pytest

from datasets.filelists import on_corrupt_problem
from tools import eval_cam, eval_pseudo
from utils.config import get_cfg_defaults
from utils.errors import UserError
from utils.run_setup import Problems, get_arg_parser, load_run_cfg
from utils.training import check_split_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "voc_resnet38.yaml")
TOOL_ARGS = ["--snapshot", "s.pth", "--root", "data", "--list", "l.txt", "--out", "o"]


@pytest.mark.parametrize("tool", [eval_cam, eval_pseudo], ids=["eval_cam", "eval_pseudo"])
def test_a_tool_takes_cfg_and_set_as_the_entry_points_do(tool):
    sets = ["NET.BACKBONE", "resnet18", "TEST.SCALES", "[1, 0.5]"]
    args = tool.parse_args(["--cfg", CONFIG, *TOOL_ARGS, "--set", *sets])
    entry = get_arg_parser().parse_args(["--cfg", CONFIG, "--set", *sets])
    assert (args.cfg_file, args.set_cfgs) == (entry.cfg_file, entry.set_cfgs) == (CONFIG, sets)
    cfg = load_run_cfg(args)
    assert cfg.NET.BACKBONE == "resnet18" and cfg.TEST.SCALES == [1, 0.5]
    assert cfg.NET.MODEL == "ae"  # the YAML's value under the overrides
    with pytest.raises(UserError, match="--set takes KEY VALUE pairs"):
        load_run_cfg(tool.parse_args(["--cfg", CONFIG, *TOOL_ARGS, "--set", "NET.LR"]))


def test_the_run_config_is_frozen_after_the_merge():
    cfg = load_run_cfg(get_arg_parser().parse_args(["--cfg", CONFIG, "--set", "NET.LR", "0.002"]))
    assert cfg.NET.LR == 0.002
    with pytest.raises(TypeError, match="frozen"):
        cfg.NET.FROM_SCRATCH = True
    with pytest.raises(TypeError, match="frozen"):
        cfg["TRAIN"] = {}
    with pytest.raises(TypeError, match="frozen"):
        del cfg.TEST["FLIP"]
    clone = copy.deepcopy(cfg)  # a derived config is a mutable copy; the run's stays as it was
    clone.NET.LR = 0.1
    assert (clone.NET.LR, cfg.NET.LR) == (0.1, 0.002)


def test_problems_are_collected_one_line_each():
    def check(ok: bool) -> str:
        if not ok:
            raise UserError("first line\nsecond line")
        return "value"

    problems = Problems()
    assert not problems and problems.collect(check, True) == "value"
    assert problems.collect(check, False) is None
    problems.add(None, "third", None)
    problems.extend(["fourth"])
    assert problems.lines == ["first line", "second line", "third", "fourth"]
    with pytest.raises(UserError) as e:
        problems.raise_if_any()
    assert str(e.value).splitlines() == problems.lines
    assert Problems(["copied"]).lines == ["copied"]
    Problems().raise_if_any()  # nothing found, nothing raised


def test_checks_written_once_name_the_key_and_the_fix(tmp_path):
    assert on_corrupt_problem("stop") is None and on_corrupt_problem("skip") is None
    assert on_corrupt_problem("ignore") == ("config key TRAIN.ON_CORRUPT is 'ignore'; use 'stop' (a corrupt image "
                                            "stops the run) or 'skip' (it is left out with a warning)")
    (tmp_path / "train.txt").write_text("a.jpg a.png\nb.jpg b.png\nc.jpg c.png\n")
    cfg = get_cfg_defaults()
    cfg.DATASET.ROOT, cfg.DATASET.TRAIN_LIST, cfg.TRAIN.BATCH_SIZE = str(tmp_path), "train.txt", 3
    assert check_split_size(cfg) is None
    cfg.TRAIN.BATCH_SIZE = 4  # the last, short batch is dropped: nothing would be left
    assert check_split_size(cfg) == (
        f"split train ({tmp_path}/train.txt) has 3 images, fewer than the batch size 4, so no batch would be left; "
        "lower TRAIN.BATCH_SIZE or add images")
