"""Bad input through every entry point, as a user meets it: train.py, infer_val.py, eval_seg.py and the tools.

Each case runs the real script as a subprocess from the repository root on a copy of the tiny synthetic dataset
(the light ResNet-18 model where a model is needed) and checks the contract of the house rules: exit status 2,
exactly one line on stderr, ``error: ...`` naming the file or key, no traceback anywhere, and no file written or
changed below the test's directories (no snapshot, mask, JSON or log left behind). Cases are ordered cheapest
first: the tools and eval_seg.py do not import torch.
"""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datasets.transforms import build_transform, dataset_cfg_problems
from tests.helpers import (CONFIG, EXIT_USER_ERROR, SNAPSHOT_SUFFIX, TINY_INFER_SET, TINY_TRAIN_SET, copy_tree,
                           describe, files_under, link_or_copy, run_script, save_model_snapshot, stderr_lines,
                           truncate)
from utils.config import get_cfg_defaults
from utils.errors import UserError

VAL_LIST = "val_voc.txt"
TRAIN_LIST = "train_augvoc.txt"
RUN = ["--dataset", "pascal_voc", "--exp", "main", "--run", "r1", "--workers", "0"]
# cases running at once: each is mostly one process importing torch, and the test machine has 2 cores
PARALLEL_CASES = 2
MODULE_NOT_FOUND = 'raise ModuleNotFoundError("No module named \'pydensecrf\'", name="pydensecrf")\n'


@dataclass
class Run:
    """What a case runs and what its one error line must name."""

    args: list[str]
    words: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    stdout_words: tuple[str, ...] = ()  # eval_seg.py lists the images concerned on stdout


class World:
    """The test's directory: a writable copy of the synthetic data (made on first use), logs, snapshots, outputs."""

    def __init__(self, tmp: str, synthetic_root: str, snapshots: dict[str, str]):
        self.tmp, self._source, self._snapshots = tmp, synthetic_root, snapshots
        self._data: str | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.tmp, *parts)

    @property
    def data(self) -> str:
        if self._data is None:
            self._data = copy_tree(self._source, self.path("data"))
        return self._data

    def listed(self, list_name: str, line: int = 0, column: int = 0) -> str:
        """The file named on a line of one of the data copy's lists."""
        with open(os.path.join(self.data, list_name)) as f:
            rel = f.read().splitlines()[line].split()[column]
        return os.path.join(self.data, rel)

    def write(self, rel: str, text: str) -> str:
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def blocked(self, rel: str = "out") -> str:
        """A directory path below a regular file: nobody, root included, can create it."""
        plain = self.write("plain_file.txt", "a file, not a directory\n")
        return os.path.join(plain, rel)

    def snapshot_source(self, kind: str) -> str:
        return self._snapshots[kind]

    def snapshot(self, kind: str = "resnet18_ae") -> str:
        """Put a model snapshot where --resume SNAPSHOT_SUFFIX of run r1 finds it."""
        return link_or_copy(self._snapshots[kind], self.path("snapshots", "pascal_voc", "main", "r1",
                                                             f"model_enc_{SNAPSHOT_SUFFIX}.pth"))

    def train_args(self, *extra: str, sets: tuple[str, ...] = (), cfg: str = CONFIG) -> list[str]:
        return ["--cfg", cfg, *RUN, "--logdir", self.path("logs"), "--snapshot-dir", self.path("snapshots"),
                *extra, "--set", *TINY_TRAIN_SET, "DATASET.ROOT", self.data, *sets]

    def infer_args(self, *extra: str, sets: tuple[str, ...] = (), resume: bool = True,
                   infer_list: str | None = None, out: str | None = None) -> list[str]:
        return ["--cfg", CONFIG, *RUN, "--logdir", self.path("logs"), "--snapshot-dir", self.path("snapshots"),
                *(["--resume", SNAPSHOT_SUFFIX] if resume else []),
                "--infer-list", infer_list or os.path.join(self.data, VAL_LIST),
                "--mask-output-dir", out or self.path("masks"), *extra,
                "--set", *TINY_INFER_SET, "TEST.DATA_ROOT", self.data, *sets]

    def eval_args(self, masks: str | None = None, filelist: str | None = None, log: str | None = None,
                  *extra: str) -> list[str]:
        return ["--data", self.data, "--filelist", filelist or os.path.join(self.data, VAL_LIST),
                "--masks", masks or self.gt_as_predictions(), "--log-scores", log or self.path("scores.log"),
                "--workers", "1", *extra]

    def gt_as_predictions(self) -> str:
        """A prediction directory holding every GT mask of the val list as a prediction (ignored pixels as 0)."""
        pred = self.path("pred")
        if not os.path.isdir(pred):
            os.makedirs(pred)
            with open(os.path.join(self.data, VAL_LIST)) as f:
                for line in f.read().splitlines():
                    gt = os.path.join(self.data, line.split()[1])
                    labels = np.asarray(Image.open(gt)).copy()
                    labels[labels == 255] = 0  # a prediction has a class everywhere
                    Image.fromarray(labels).save(os.path.join(pred, os.path.basename(gt)))
        return pred


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    make: Callable[[World], Run]


CASES: list[Case] = []


def case(script: str, case_id: str):
    def register(make: Callable[[World], Run]) -> Callable[[World], Run]:
        CASES.append(Case(case_id, script, make))
        return make
    return register


# ---------------------------------------------------------------------------------------------- tools/check_data.py

CHECK = "tools/check_data.py"


@case(CHECK, "check_data-missing-list")
def _(w: World) -> Run:
    return Run(["--root", w.data, "--list", w.path("nowhere.txt")], (w.path("nowhere.txt"), "not found"))


@case(CHECK, "check_data-empty-list")
def _(w: World) -> Run:
    return Run(["--root", w.data, "--list", w.write("empty.txt", "\n")], (w.path("empty.txt"), "is empty"))


@case(CHECK, "check_data-malformed-line")
def _(w: World) -> Run:
    lst = w.write("three_columns.txt", "a.jpg b.png c.png\n")
    return Run(["--root", w.data, "--list", lst], (lst, "line 1", "3 columns"))


@case(CHECK, "check_data-missing-data-root")
def _(w: World) -> Run:
    return Run(["--root", w.path("no_data"), "--list", os.path.join(w.data, VAL_LIST)],
               (w.path("no_data"), "not a directory"))


@case(CHECK, "check_data-image-is-a-directory")
def _(w: World) -> Run:
    image = w.listed(VAL_LIST, line=2)
    os.unlink(image)
    os.mkdir(image)  # present, but nothing an image decoder can open
    return Run(["--root", w.data, "--list", os.path.join(w.data, VAL_LIST)], (image, "line 3"))


@case(CHECK, "check_data-corrupt-png-mask")
def _(w: World) -> Run:
    mask = w.listed(VAL_LIST, line=1, column=1)
    truncate(mask)
    return Run(["--root", w.data, "--list", os.path.join(w.data, VAL_LIST)], (mask, "not a readable PNG"))


@case(CHECK, "check_data-mask-values-outside-classes")
def _(w: World) -> Run:
    mask = w.listed(VAL_LIST, line=4, column=1)
    values = np.asarray(Image.open(mask)).copy()
    values[0, :5] = 42
    Image.fromarray(values, "L").save(mask)
    return Run(["--root", w.data, "--list", os.path.join(w.data, VAL_LIST)], (mask, "42"))


@case(CHECK, "check_data-image-mask-size-mismatch")
def _(w: World) -> Run:
    image = w.listed(VAL_LIST, line=3)
    with Image.open(image) as im:
        im.resize((im.width + 3, im.height)).save(image)
    return Run(["--root", w.data, "--list", os.path.join(w.data, VAL_LIST)], (image, "same size"))


@case(CHECK, "check_data-line-without-mask-column")
def _(w: World) -> Run:
    lst = w.write("one_column.txt", "voc/VOCdevkit/VOC2012/JPEGImages/val_000000.jpg\n")
    return Run(["--root", w.data, "--list", lst], (lst, "line 1", "no mask column"))


@case(CHECK, "check_data-limit-below-1")
def _(w: World) -> Run:
    return Run(["--root", w.data, "--list", os.path.join(w.data, VAL_LIST), "--limit", "0"], ("--limit 0",))


# ------------------------------------------------------------------------- make_filelists, convert_sbd, make_synthetic

@case("tools/make_filelists.py", "make_filelists-missing-voc-download")
def _(w: World) -> Run:
    return Run(["--voc", w.path("no_voc"), "--sbd", os.path.join(w.data, "sbd"), "--out", w.path("lists")],
               (w.path("no_voc"), "VOCdevkit/VOC2012"))


@case("tools/make_filelists.py", "make_filelists-sbd-not-converted")
def _(w: World) -> Run:
    cls_png = os.path.join(w.data, "sbd", "benchmark_RELEASE", "dataset", "cls_png")
    for name in os.listdir(cls_png):
        os.unlink(os.path.join(cls_png, name))
    os.rmdir(cls_png)
    return Run(["--voc", os.path.join(w.data, "voc"), "--sbd", os.path.join(w.data, "sbd"), "--out", w.path("lists")],
               (cls_png, "convert_sbd.py"))


@case("tools/make_filelists.py", "make_filelists-unwritable-out")
def _(w: World) -> Run:
    out = w.blocked()
    return Run(["--voc", os.path.join(w.data, "voc"), "--sbd", os.path.join(w.data, "sbd"), "--out", out],
               (out, "cannot write"))


@case("tools/convert_sbd.py", "convert_sbd-missing-input")
def _(w: World) -> Run:
    return Run(["--inp", w.path("no_cls"), "--out", w.path("cls_png")], (w.path("no_cls"), "not found"))


@case("tools/convert_sbd.py", "convert_sbd-truncated-mat")
def _(w: World) -> Run:
    mat = w.write("cls/2008_000002.mat", "MATLAB 5.0 MAT-file")
    return Run(["--inp", w.path("cls"), "--out", w.path("cls_png")], (mat, "not a readable SBD class annotation"))


@case("tools/convert_sbd.py", "convert_sbd-unwritable-out")
def _(w: World) -> Run:
    w.write("cls/.keep", "")
    out = w.blocked("cls_png")
    return Run(["--inp", w.path("cls"), "--out", out], (out, "not writable"))


@case("tools/make_synthetic.py", "make_synthetic-unwritable-out")
def _(w: World) -> Run:
    out = w.blocked("synthetic")
    return Run(["--out", out, "--num-train", "2", "--num-val", "1", "--num-test", "0", "--size", "32"],
               (out, "not writable"))


@case("tools/make_synthetic.py", "make_synthetic-unknown-knob")
def _(w: World) -> Run:
    return Run(["--out", w.path("synthetic"), "--num-train", "2", "--num-val", "1", "--size", "32",
                "--knob", "head_size=3"], ("head_size", "knob"))


# ------------------------------------------------------------------------------------------------------ eval_seg.py

EVAL = "eval_seg.py"


@case(EVAL, "eval-missing-masks-dir")
def _(w: World) -> Run:
    return Run(w.eval_args(masks=w.path("no_masks")), ("--masks", w.path("no_masks")))


@case(EVAL, "eval-filelist-is-a-directory")
def _(w: World) -> Run:
    os.makedirs(w.path("a_dir.txt"))
    return Run(w.eval_args(filelist=w.path("a_dir.txt")), ("--filelist", w.path("a_dir.txt")))


@case(EVAL, "eval-empty-filelist")
def _(w: World) -> Run:
    lst = w.write("empty_val.txt", "")
    return Run(w.eval_args(filelist=lst), (lst, "empty"))


@case(EVAL, "eval-missing-prediction")
def _(w: World) -> Run:
    pred = w.gt_as_predictions()
    os.unlink(os.path.join(pred, "val_000002.png"))
    return Run(w.eval_args(), ("missing prediction",), stdout_words=("val_000002",))


@case(EVAL, "eval-corrupt-prediction-png")
def _(w: World) -> Run:
    pred = w.gt_as_predictions()
    truncate(os.path.join(pred, "val_000001.png"))
    return Run(w.eval_args(), ("unreadable prediction",), stdout_words=("val_000001",))


@case(EVAL, "eval-prediction-size-mismatch")
def _(w: World) -> Run:
    path = os.path.join(w.gt_as_predictions(), "val_000003.png")
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(path)
    return Run(w.eval_args(), ("size",), stdout_words=("val_000003", "9x7"))


@case(EVAL, "eval-prediction-values-outside-classes")
def _(w: World) -> Run:
    path = os.path.join(w.gt_as_predictions(), "val_000004.png")
    pred = np.asarray(Image.open(path)).copy()
    pred[:2] = 30
    Image.fromarray(pred, "L").save(path)
    return Run(w.eval_args(), ("prediction values outside 0..20",), stdout_words=("val_000004", "30"))


@case(EVAL, "eval-unwritable-log-scores")
def _(w: World) -> Run:
    log = w.blocked("scores.log")
    return Run(w.eval_args(log=log), (os.path.dirname(log), "not writable"))


@case(EVAL, "eval-three-column-line")
def _(w: World) -> Run:
    with open(os.path.join(w.data, VAL_LIST)) as f:
        lines = f.read().splitlines()
    lines[1] += " extra.png"
    lst = w.write("three_columns.txt", "\n".join(lines) + "\n")
    return Run(w.eval_args(filelist=lst), ("malformed list line",), stdout_words=("line 2", "3 columns"))


@case(EVAL, "eval-malformed-oracle-size")
def _(w: World) -> Run:
    return Run(w.eval_args(None, None, None, "--oracle-from", "64by64"), ("--oracle-from", "64by64", "HxW"))


# ---------------------------------------------------------------------------------------------------------- train.py

TRAIN = "train.py"


@case(TRAIN, "train-missing-config-file")
def _(w: World) -> Run:
    return Run(w.train_args(cfg=w.path("voc_resnet18.yaml")), (w.path("voc_resnet18.yaml"), "not found"))


@case(TRAIN, "train-malformed-yaml")
def _(w: World) -> Run:
    cfg = w.write("bad.yaml", "NET:\n  MODEL: ae\n   BACKBONE: [resnet18\n")
    return Run(w.train_args(cfg=cfg), (cfg, "not valid YAML"))


@case(TRAIN, "train-unknown-key-in-yaml")
def _(w: World) -> Run:
    cfg = w.write("typo.yaml", "NET:\n  MODEL: ae\n  BACKBONES: resnet18\n")
    return Run(w.train_args(cfg=cfg), ("NET.BACKBONES", "unknown config key"))


@case(TRAIN, "train-set-unknown-key")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("TRAIN.LEARNING_RATE", "0.1")), ("TRAIN.LEARNING_RATE", "unknown config key"))


@case(TRAIN, "train-set-wrong-type")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("TRAIN.BATCH_SIZE", "2.5")), ("TRAIN.BATCH_SIZE", "int"))


@case(TRAIN, "train-set-odd-number-of-tokens")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.LR",)), ("--set", "odd number"))


@case(TRAIN, "train-unknown-model")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.MODEL", "deeplab")), ("NET.MODEL", "deeplab"))


@case(TRAIN, "train-unknown-backbone")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.BACKBONE", "resnet7")), ("resnet7", "resnet38"))


@case(TRAIN, "train-missing-init-weights")
def _(w: World) -> Run:
    weights = w.path("weights", "resnet50-19c8e357.pth")
    # the shipped resnet50 config, without FROM_SCRATCH: the ImageNet file is needed and is not there
    args = w.train_args(cfg="configs/voc_resnet50.yaml", sets=("NET.BACKBONE", "resnet50", "NET.FROM_SCRATCH", "False",
                                                               "NET.PRE_WEIGHTS_PATH", weights))
    return Run(args, (weights, "not found", "download.pytorch.org"))


@case(TRAIN, "train-resume-snapshot-missing")
def _(w: World) -> Run:
    return Run(w.train_args("--resume", "e010Xs0.900"), ("model_enc_e010Xs0.900.pth", "not found"))


@case(TRAIN, "train-resume-snapshot-of-another-backbone")
def _(w: World) -> Run:
    model = w.snapshot("vgg16_bsl")
    torch.save({}, model.replace("model_enc_", "opt_enc_"))  # the optimiser file a resumable snapshot has
    return Run(w.train_args("--resume", SNAPSHOT_SUFFIX), (model, "vgg16", "NET.BACKBONE"))


@case(TRAIN, "train-resume-last-without-snapshots")
def _(w: World) -> Run:
    return Run(w.train_args("--resume", "last"), ("--resume last", "no complete snapshot"))


@case(TRAIN, "train-negative-workers")
def _(w: World) -> Run:
    args = w.train_args()
    args[args.index("--workers") + 1] = "-1"
    return Run(args, ("--workers -1",))


@case(TRAIN, "train-corrupt-jpeg")
def _(w: World) -> Run:
    image = w.listed(TRAIN_LIST, line=5)
    truncate(image)
    return Run(w.train_args(), (image, "not a readable image"))


@case(TRAIN, "train-missing-data-root")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("DATASET.ROOT", w.path("no_data"))), (w.path("no_data"), "not a directory"))


@case(TRAIN, "train-unwritable-logdir")
def _(w: World) -> Run:
    logdir = w.blocked("logs")
    args = w.train_args()
    args[args.index("--logdir") + 1] = logdir
    return Run(args, (logdir, "--logdir"))


@case(TRAIN, "train-unknown-loss")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.LOSS", "Focal")), ("NET.LOSS", "Focal", "SoftMargin"))


@case(TRAIN, "train-crop-area-range-inverted")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("DATASET.SCALE_FROM", "1.5")), ("DATASET.SCALE_FROM", "1.5"))


def _config_with(w: World, group: str, key: str, value: float) -> str:
    """The test config as YAML with one value changed (YAML spells NaN and infinity, --set cannot)."""
    with open(CONFIG) as f:
        cfg = yaml.safe_load(f)
    cfg.setdefault(group, {})[key] = value
    return w.write("changed.yaml", yaml.safe_dump(cfg))


@case(TRAIN, "train-learning-rate-nan-in-yaml")
def _(w: World) -> Run:
    return Run(w.train_args(cfg=_config_with(w, "NET", "LR", float("nan"))), ("NET.LR", "nan", "finite"))


@case(TRAIN, "train-learning-rate-infinite")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.LR", "1e999")), ("NET.LR", "inf", "finite"))


@case(TRAIN, "train-negative-learning-rate")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.LR", "-0.01")), ("NET.LR", "-0.01", ">= 0"))


@case(TRAIN, "train-negative-weight-decay")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.WEIGHT_DECAY", "-0.0001")), ("NET.WEIGHT_DECAY", ">= 0"))


@case(TRAIN, "train-momentum-out-of-range")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.MOMENTUM", "1.5")), ("NET.MOMENTUM", "1.5", "[0, 1)"))


@case(TRAIN, "train-gate-ratio-out-of-range")
def _(w: World) -> Run:
    return Run(w.train_args(sets=("NET.SG_PSI", "-0.3")), ("NET.SG_PSI", "[0, 1]"))


# ------------------------------------------------------------------------------------------------------ infer_val.py

INFER = "infer_val.py"


@case(INFER, "infer-no-resume")
def _(w: World) -> Run:
    return Run(w.infer_args(resume=False), ("--resume", "required"))


@case(INFER, "infer-snapshot-missing")
def _(w: World) -> Run:
    return Run(w.infer_args(), (f"model_enc_{SNAPSHOT_SUFFIX}.pth", "not found"))


@case(INFER, "infer-snapshot-of-another-backbone")
def _(w: World) -> Run:
    path = w.snapshot("vgg16_bsl")
    return Run(w.infer_args(), (path, "vgg16", "NET.BACKBONE"))


@case(INFER, "infer-truncated-snapshot")
def _(w: World) -> Run:
    path = w.path("snapshots", "pascal_voc", "main", "r1", f"model_enc_{SNAPSHOT_SUFFIX}.pth")
    os.makedirs(os.path.dirname(path))
    with open(w.snapshot_source("resnet18_ae"), "rb") as f:
        head = f.read(1 << 20)
    with open(path, "wb") as f:
        f.write(head)  # the first megabyte of a real snapshot, as after an interrupted copy
    return Run(w.infer_args(), (path, "cannot be read"))


@case(INFER, "infer-batch-size-does-not-match-scales")
def _(w: World) -> Run:
    w.snapshot()
    return Run(w.infer_args(sets=("TEST.BATCH_SIZE", "8")), ("TEST.BATCH_SIZE", "set TEST.BATCH_SIZE 4"))


@case(INFER, "infer-pydensecrf-missing")
def _(w: World) -> Run:
    w.snapshot()
    w.write("no_crf/pydensecrf/__init__.py", MODULE_NOT_FOUND)
    env = {"PYTHONPATH": w.path("no_crf"), "PYTHONDONTWRITEBYTECODE": "1"}
    return Run(w.infer_args(), ("pydensecrf", "--no-crf"), env=env)


@case(INFER, "infer-missing-list")
def _(w: World) -> Run:
    w.snapshot()
    return Run(w.infer_args(infer_list=w.path("val_aug.txt")), ("--infer-list", w.path("val_aug.txt")))


@case(INFER, "infer-unwritable-mask-dir")
def _(w: World) -> Run:
    w.snapshot()
    out = w.blocked("masks")
    return Run(w.infer_args(out=out), (out, "--mask-output-dir"))


@case(INFER, "infer-class-score-threshold-out-of-range")
def _(w: World) -> Run:
    w.snapshot()
    return Run(w.infer_args(sets=("TEST.FP_CUT_SCORE", "1.5")), ("TEST.FP_CUT_SCORE", "[0, 1]"))


@case(INFER, "infer-zero-scale")
def _(w: World) -> Run:
    w.snapshot()
    return Run(w.infer_args(sets=("TEST.SCALES", "[1, 0]")), ("TEST.SCALES", "> 0"))


@case(INFER, "infer-corrupt-jpeg-last-in-list")
def _(w: World) -> Run:
    w.snapshot()
    with open(os.path.join(w.data, VAL_LIST)) as f:
        last = len(f.read().splitlines()) - 1
    image = w.listed(VAL_LIST, line=last)
    truncate(image, keep=0.6)  # the header survives: only decoding the whole file finds it
    return Run(w.infer_args(), (image,))


# ------------------------------------------------------------------------------------------------------------ tests

@dataclass
class Outcome:
    run: Run
    proc: subprocess.CompletedProcess
    before: dict[str, tuple[int, int]]
    after: dict[str, tuple[int, int]]


def _attempt(bad: Case, world: World, watched: tuple[str, ...]) -> Outcome:
    """Break the inputs, then run the script and list the watched files before and after."""
    run = bad.make(world)
    before = files_under(*watched)
    proc = run_script(bad.script, *run.args, env=run.env)
    return Outcome(run, proc, before, files_under(*watched))


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, str]:
    """Snapshots of freshly initialised models: the configured light one and one of another backbone."""
    d = tmp_path_factory.mktemp("snapshots")
    return {"resnet18_ae": save_model_snapshot(str(d / "resnet18_ae.pth"), "resnet18", "ae"),
            "vgg16_bsl": save_model_snapshot(str(d / "vgg16_bsl.pth"), "vgg16", "bsl")}


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, synthetic_root, snapshots) -> Iterator[dict[str, Future]]:
    """Every selected case started at once in a small pool, cheapest first; each test waits for its own.

    Starting python and torch dominates a case, so overlapping the cases is what keeps the battery fast. Every
    case has its own directory; the shared synthetic data is watched by all of them (nobody may write there).
    """
    selected = [item.callspec.params["bad"] for item in request.session.items
                if item.module is request.module and "bad" in getattr(getattr(item, "callspec", None), "params", {})]
    with ThreadPoolExecutor(PARALLEL_CASES) as pool:
        futures = {}
        for bad in selected:
            tmp = str(tmp_path_factory.mktemp(bad.id))
            futures[bad.id] = pool.submit(_attempt, bad, World(tmp, synthetic_root, snapshots), (tmp, synthetic_root))
        yield futures


def test_crop_settings_that_make_no_crop_name_their_keys():
    cfg = get_cfg_defaults()
    assert dataset_cfg_problems(cfg.DATASET) == []
    cfg.DATASET.CROP_SIZE, cfg.DATASET.SCALE_FROM = 0, 0.0
    problems = dataset_cfg_problems(cfg.DATASET)
    assert len(problems) == 2 and "DATASET.CROP_SIZE is 0" in problems[0] and "DATASET.SCALE_FROM 0.0" in problems[1]
    with pytest.raises(UserError, match="DATASET.CROP_SIZE"):
        build_transform(cfg.DATASET, augment=False)


def test_the_unbroken_eval_inputs_score_100_on_the_classes_present(tmp_path, synthetic_root):
    """The control of the eval cases: the same arguments without the breakage succeed."""
    world = World(str(tmp_path), synthetic_root, {})
    proc = run_script("eval_seg.py", *world.eval_args())
    assert proc.returncode == 0, describe(proc)
    assert "Over classes present in GT or prediction: mIoU: 100.00" in proc.stdout, proc.stdout
    assert os.path.isfile(world.path("scores.log")) and os.path.isfile(os.path.join(world.path("pred"), "eval.json"))


def test_without_pydensecrf_the_suggested_no_crf_passes_the_check(tmp_path, synthetic_root, snapshots):
    """The control of the pydensecrf case: the fix its message names works with the same blocked import."""
    world = World(str(tmp_path), synthetic_root, snapshots)
    world.snapshot()
    world.write("no_crf/pydensecrf/__init__.py", MODULE_NOT_FOUND)
    proc = run_script("infer_val.py", *world.infer_args("--no-crf", "--check"),
                      env={"PYTHONPATH": world.path("no_crf"), "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)


def test_at_least_60_distinct_cases_over_every_entry_point():
    assert len({c.id for c in CASES}) == len(CASES) >= 60
    assert {c.script for c in CASES} >= {"train.py", "infer_val.py", "eval_seg.py", "tools/check_data.py",
                                         "tools/make_filelists.py", "tools/convert_sbd.py", "tools/make_synthetic.py"}


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad: Case, outcomes):
    out = outcomes[bad.id].result()
    proc, run = out.proc, out.run
    assert proc.returncode == EXIT_USER_ERROR, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(proc)
    for word in run.words:
        assert word in lines[0], f"{word!r} not named in: {lines[0]}"
    for word in run.stdout_words:
        assert word in proc.stdout, f"{word!r} not on stdout:\n{proc.stdout}"
    new = sorted(set(out.after) - set(out.before))
    changed = sorted(p for p in out.before if p in out.after and out.after[p] != out.before[p])
    removed = sorted(set(out.before) - set(out.after))
    assert not (new or changed or removed), f"left behind {new}, changed {changed}, removed {removed}"
