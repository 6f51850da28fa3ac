"""Inference: multi-scale (+flip) masks of a trained snapshot, merged, class-filtered, refined by a dense CRF (SPEC 8).

    python infer_val.py --dataset pascal_voc --cfg configs/voc_resnet38.yaml --exp main --run v01 \\
        --resume e020Xs0.928 --infer-list data/val_voc.txt --mask-output-dir results/val_voc \\
        --set TEST.DATA_ROOT ./data
    python infer_val.py --dataset coco --cfg configs/coco_resnet38.yaml ... --infer-list data/coco/val_coco.txt \
        --set TEST.DATA_ROOT data/coco

loads ``<snapshot-dir>/<dataset>/<exp>/<run>/model_enc_<resume>.pth`` and writes, per image id,
``<out>/<id>.png`` (class indices, mode "L"), ``<out>/crf/<id>.png`` and ``<out>/vis/<id>.png`` (prediction, CRF
prediction and GT panels). --infer-list may be a list without masks (test.txt: no GT panel, labels from the
predictions) or a folder of images. Additions: --palette (VOC-coloured PNGs for the evaluation server),
--save-probs (merged probabilities as float16 .npy, e.g. for pseudo labels), --no-crf, --tight-canvas (faster,
masks differ slightly), --no-channels-last, --no-fold-bn, --check (validate everything, run nothing).

Under ``torchrun --standalone --nproc_per_node=N infer_val.py --run-id RUN ...`` (torchrun's parser takes ``--run``
for its own ``--run-path``; ``--run-id`` is the same option, or put ``--`` before infer_val.py) rank r infers
images r, r + N, ... of the list and writes their files; rank 0 prints the summary.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from datasets.checks import CHECK_THREADS, check_file_list
from datasets.filelists import IMAGE_ERRORS, load_image, on_corrupt_problem
from datasets.info import get_dataset
from datasets.pascal_voc_ms import (MAX_REPORTED, build_inference_dataset, check_batch_size, check_sizes,
                                    get_inference_loader, num_variants, read_inference_items)
from models import load_trained_model
from models.fold import fold_batchnorms
from utils.config import INFER_RANGES, AttrDict, range_problems
from utils.dcrf import CRFParams, require_pydensecrf
from utils.dist import DistContext, all_reduce_sum, init_distributed, shutdown
from utils.errors import UserError, run_main
from utils.fastpath import inference_fast_path
from utils.fileio import check_writable_dir, dir_problem
from utils.inference_tools import (WriterOptions, WriterPool, class_presence, merge_crops, merge_multiscale,
                                   write_outputs)
from utils.run_setup import (Problems, RunDirs, get_arg_parser, load_run_cfg, main_prints_only, resolve_dirs,
                             select_device)

ETA_EVERY = 100  # images between "Finish time" lines (SPEC 8.1)


def get_parser() -> argparse.ArgumentParser:
    """The parser shared with train.py (SPEC 2.4; --random-seed is accepted but, unused here, not listed),
    extended with the inference-only options."""
    p = get_arg_parser("Model Evaluation", hidden=("--random-seed",))
    g = p.add_argument_group("inference outputs")
    g.add_argument("--palette", action="store_true",
                   help="also save VOC-palette PNGs (mode P) under <out>/palette/, for the VOC evaluation server")
    g.add_argument("--save-probs", action="store_true",
                   help="also save the merged probabilities (background ** BG_POW) as float16 <out>/probs/<id>.npy")
    g.add_argument("--no-crf", action="store_true", help="skip the dense CRF (no <out>/crf/; pydensecrf not needed)")
    g.add_argument("--tight-canvas", action="store_true",
                   help="multiscale: put each scale on a canvas of its own size instead of TEST.PAD_SIZE; about "
                        "1.3-2x faster on CPU (not on GPU), but the masks differ from the original's: the network "
                        "sees less zero border (bench/infer.py measures both)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="run the network in the contiguous memory format; channels_last (the default) is faster "
                        "on CPU and gives the same results up to float rounding")
    g.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="keep the batch norms as separate layers; folding them into the convolutions before them "
                        "(the default) is faster (about 1.07x for ResNet-18 on CPU) and gives the same results up to "
                        "float rounding")
    return p


def snapshot_path(resume: str | None, snapshot_dir: str) -> str:
    if not resume:
        raise UserError("--resume is required: it names the snapshot <snapshot-dir>/<dataset>/<exp>/<run>/"
                        "model_enc_<resume>.pth to load (e.g. --resume e020Xs0.928)")
    path = os.path.join(snapshot_dir, f"model_enc_{resume}.pth")
    if not os.path.isfile(path):
        raise UserError(f"snapshot {path} not found; check --snapshot-dir, --dataset, --exp, --run and --resume "
                        "(inference never runs with an untrained head)")
    return path


def build_inference_model(cfg, snapshot: str, device: torch.device, channels_last: bool = False,
                          fold_bn: bool = False) -> torch.nn.Module:
    """The configured model with every tensor from the snapshot (so no ImageNet file is needed), frozen, eval mode.

    ``channels_last`` stores activations as NHWC, which oneDNN/cuDNN convolve faster (1.15x to 1.6x for ResNet-18 on
    CPU, see bench/infer.py); ``fold_bn`` folds the batch norms into the convolutions before them (models/fold.py,
    about 1.07x more). The outputs of both differ from the plain model's by float rounding only.
    """
    model = load_trained_model(cfg.NET, cfg.TEST.NUM_CLASSES, snapshot)
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.eval().to(device)
    if fold_bn:
        fold_batchnorms(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def configure_backends() -> None:
    """cuDNN deterministic (SPEC 8.1), and full float32: TF32 convolutions (PyTorch's default on Ampere and
    later GPUs) move the merged probabilities by up to ~1e-2."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _same_shape_runs(variants: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive variants of equal shape, each run one network batch (one on the padded canvas)."""
    runs: list[list[torch.Tensor]] = []
    for v in variants:
        if runs and runs[-1][0].shape == v.shape:
            runs[-1].append(v)
        else:
            runs.append([v])
    return runs


@torch.inference_mode()
def predict(model: torch.nn.Module, batch: dict, test_cfg, device: torch.device,
            channels_last: bool = False) -> torch.Tensor:
    """All variants of one image through the network and merged (SPEC 8.2-8.4) -> P [C, H, W] on ``device``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cls, probs = [], []
    for run in _same_shape_runs(batch["variants"]):
        out = model(torch.stack(run).to(device, non_blocking=True).contiguous(memory_format=fmt))
        cls.append(out["cls"])  # [n, 20]
        probs.extend(out["masks"])  # n x [C, h, w]
    if test_cfg.USE_GT_LABELS:
        labels = batch["labels"].to(device)
    else:
        labels = class_presence(torch.cat(cls), test_cfg.FP_CUT_SCORE)  # [20]
    size = batch["image"].shape[:2]
    pads = batch["pads"]
    if test_cfg.METHOD == "multiscale":
        return merge_multiscale(probs, pads, labels, test_cfg.FLIP, test_cfg.BG_POW, size)
    return merge_crops(probs, pads, labels, test_cfg.FLIP, size)


def preflight(args: argparse.Namespace, dirs: RunDirs, cfg: AttrDict, writer_opts: WriterOptions,
              device: torch.device, decode: bool) -> tuple[list, str, torch.nn.Module]:
    """Every check before a file is written, for --check and the run alike, all problems at once (UserError, one
    line each): options, config values, pydensecrf, the listed files (each decoded when ``decode``), the snapshot
    and the model it loads into, the output directories (checked, not created). Returns the items, the snapshot
    path and the model."""
    problems = Problems()
    if args.workers < 0:
        problems.add(f"--workers {args.workers} must be >= 0 (0 runs the data loading and writing inline)")
    # the model's outputs are the dataset's classes
    problems.collect(lambda: get_dataset(args.dataset).check_num_classes(cfg))
    problems.extend(range_problems(cfg, INFER_RANGES))
    values_ok = not problems  # the scales and canvas checks need sound values
    problems.add(on_corrupt_problem(cfg.TRAIN.ON_CORRUPT))
    if values_ok:
        problems.collect(check_batch_size, cfg.TEST)
    if writer_opts.crf is not None:
        problems.collect(writer_opts.crf.check)
        problems.collect(require_pydensecrf)
    items, found = checked_items(args.infer_list, cfg.TEST.DATA_ROOT, cfg.TEST.NUM_CLASSES, decode)
    problems.extend(found)
    if items is not None:
        if values_ok and not found:
            problems.collect(check_sizes, items, cfg.TEST, args.tight_canvas)
        if cfg.TEST.USE_GT_LABELS and any(m is None for _, m in items):
            problems.add(_no_gt_message(args.infer_list))
    snapshot = problems.collect(snapshot_path, args.resume, dirs.snapshot_dir)
    model = None
    if snapshot is not None:
        model = problems.collect(build_inference_model, cfg, snapshot, device, args.channels_last, args.fold_bn)
    problems.add(dir_problem(args.mask_output_dir, "--mask-output-dir"))
    problems.extend(dirs.problems())
    problems.raise_if_any()
    return items, snapshot, model


def checked_items(infer_list: str, data_root: str, num_classes: int, decode: bool) -> tuple[list | None, list[str]]:
    """(the images to infer or None, every problem of the listed files), with ``decode`` each file decoded once.

    A file list is checked first (every line: the image exists and decodes, a mask is a valid PNG of
    0..num_classes-1 and 255 of the image's size), so that one missing file does not hide the others' problems; the
    items are read only when it found none. A folder's images are decoded. Without ``decode`` (TRAIN.ON_CORRUPT
    skip: the loader leaves corrupt images out) the list is only read.
    """
    if decode and os.path.isfile(infer_list):
        found = check_file_list(infer_list, data_root, need_masks=False, limit=MAX_REPORTED,
                                num_classes=num_classes)
        if found:
            return None, found
    problems = Problems()
    items = problems.collect(read_inference_items, infer_list, data_root)
    if decode and items is not None and os.path.isdir(infer_list):
        problems.extend(_decode_problems(items))
    return items, problems.lines


def _decode_problem(path: str) -> str | None:
    try:
        load_image(path)
    except IMAGE_ERRORS as e:
        return f"{path} is not a readable image ({e}); replace it or remove it from the folder"
    return None


def _decode_problems(items) -> list[str]:
    """Images of a folder that do not decode completely, one line each (at most MAX_REPORTED, then a count)."""
    with ThreadPoolExecutor(CHECK_THREADS) as pool:  # PIL decodes without the GIL
        problems = [p for p in pool.map(_decode_problem, [path for path, _ in items]) if p is not None]
    if len(problems) > MAX_REPORTED:
        problems = problems[:MAX_REPORTED] + [f"... and {len(problems) - MAX_REPORTED} more unreadable images"]
    return problems


def _no_gt_message(infer_list: str) -> str:
    return (f"TEST.USE_GT_LABELS is True but --infer-list {infer_list} has no GT masks to take the labels from; "
            "set TEST.USE_GT_LABELS False or give a list with '<image> <mask>' lines")


def run_inference(model: torch.nn.Module, items: list, args: argparse.Namespace, cfg: AttrDict, ctx: DistContext,
                  writer_opts: WriterOptions) -> tuple[int, int, float]:
    """This process's images through the model, their files written by the writer pool; (images done, images
    skipped as corrupt, seconds)."""
    dataset = build_inference_dataset(items, cfg.TEST, tight=args.tight_canvas, on_corrupt=cfg.TRAIN.ON_CORRUPT)
    loader = get_inference_loader(dataset, args.workers)
    pool = WriterPool(args.workers)
    done = skipped = 0
    start = time.time()
    try:
        with tqdm(total=len(items), desc="inference", unit="img", disable=None if ctx.is_main else True,
                  file=sys.stderr, mininterval=1.0) as bar:
            for batch in loader:
                if batch is None:  # a corrupt image, skipped with a warning (TRAIN.ON_CORRUPT skip)
                    skipped += 1
                else:
                    probs = predict(model, batch, cfg.TEST, ctx.device, args.channels_last).cpu().numpy()  # [C,H,W]
                    pool.submit(batch["id"], write_outputs, probs, batch["image"], batch["mask"], writer_opts)
                    done += 1
                bar.update(1)
                if (done + skipped) % ETA_EVERY == 0:
                    eta = start + (time.time() - start) * len(items) / (done + skipped)
                    print(f"Finish time: {time.ctime(eta)}", flush=True)
        pool.join()
    finally:
        pool.close(cancel=True)
    return done, skipped, time.time() - start


def infer(args: argparse.Namespace, cfg: AttrDict, dirs: RunDirs, ctx: DistContext) -> None:
    """The checks (all of them, for --check too), then this process's share of the images: image i goes to rank
    i % world size; rank 0 prints the summary."""
    configure_backends()
    torch.set_num_threads(max(1, args.workers))
    crf = None if args.no_crf else CRFParams.from_cfg(cfg.MASKS.CRF)
    writer_opts = WriterOptions(args.mask_output_dir, crf, palette=args.palette, save_probs=args.save_probs)
    # --check, and a run with TRAIN.ON_CORRUPT stop, decode every listed file now, not when the loader reaches it
    device = torch.device("cpu") if args.check else ctx.device
    items, snapshot, model = preflight(args, dirs, cfg, writer_opts, device,
                                       decode=args.check or cfg.TRAIN.ON_CORRUPT == "stop")
    if args.check:
        print(f"check passed: {len(items)} images in {args.infer_list}, snapshot {snapshot}, "
              f"output directory {args.mask_output_dir}")
        return
    for d in writer_opts.dirs():
        check_writable_dir(d, "--mask-output-dir")
    dirs.make()  # SPEC 2.4: inference creates the run's directories too
    print(f"Inference batch size: {num_variants(cfg.TEST)}")
    model = inference_fast_path(model, cfg.TEST, ctx.device)  # TEST.FAST: bf16 autocast where it pays
    done, skipped, elapsed = run_inference(model, items[ctx.rank::ctx.world_size], args, cfg, ctx, writer_opts)
    if ctx.distributed:
        done, skipped = all_reduce_sum(torch.tensor([done, skipped]), ctx).tolist()
    rate = done / elapsed if elapsed > 0 else float("nan")
    print(f"Inference done: {done} images ({skipped} skipped) in {elapsed:.1f} s ({rate:.2f} images/s, "
          f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''}); masks in {args.mask_output_dir}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    cfg = load_run_cfg(args)
    dirs = resolve_dirs(args)
    ctx = init_distributed(select_device(args.device))
    try:
        with main_prints_only(ctx):
            infer(args, cfg, dirs, ctx)
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    run_main(main)
