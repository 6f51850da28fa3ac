"""Mean IoU of a directory of predicted PNG masks against the GT masks of a file list (SPEC 9).

    python eval_seg.py --data ./data --filelist data/val_voc.txt --masks results/pascal_voc/exp/run/val_voc
    python eval_seg.py --dataset coco --data data/coco --filelist data/coco/val_coco.txt --masks results/coco/val

stdout carries the report of SPEC 9.2 byte for byte: "# of images: N", the per-class table ``Class | # | IoU | Pr |
Re`` and the summary lines (20 foreground classes, then under "With background:" the standard 21-class PASCAL VOC
mIoU). Three kinds of lines follow: the mean over the classes present in the GT or the prediction, the count
of prediction pixels without a class, and the problems that --allow-problems let through. --dataset coco scores
the 81 COCO classes (datasets/info.py) in the same format: 81 table rows, 80 foreground classes, then the 81-class
mean. The confusion matrix is accumulated over the whole split with GT 255 ignored; a 255 in a prediction (no
class, as pseudo-label masks leave unlabelled pixels) is ignored where the GT is 255 and a miss of the GT class
elsewhere (the scoring itself is utils/mask_eval.py). Also written: the per-image ranking of --log-scores,
<masks>/eval.json (or --json-out) with every number, and confusion.png / iou.png next to the JSON.

Problems (malformed list lines, missing or unreadable PNGs, size mismatches, values outside the classes) are
counted and listed; the images concerned are left out, and the run fails unless --allow-problems is given.
Decoding runs in --workers processes. Under ``torchrun --nproc_per_node=N eval_seg.py ...`` every rank evaluates
a disjoint part of the list and rank 0 gathers the results (gloo) and writes them.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datasets.info import DATASETS, DatasetInfo, get_dataset
from utils.errors import UserError, run_main
from utils.fileio import check_writable_dir, write_json, write_text
from utils.mask_eval import (PROBLEM_KINDS, Entry, EvalResult, Problem, default_workers, evaluate, parse_list,
                             problem_label)
from utils.metrics import format_scores, scores_from_confusion

if TYPE_CHECKING:
    from utils.dist import DistContext

NAMES_SHOWN = 5  # names listed per problem kind in the report (the JSON keeps all)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Mask Evaluation: mIoU of predicted PNG masks against GT masks")
    p.add_argument("--dataset", type=str, default="pascal_voc",
                   help=f"dataset whose classes are scored: {', '.join(DATASETS)} (default pascal_voc)")
    p.add_argument("--data", type=str, default="./data/annotation", help="the prefix for the ground-truth masks")
    p.add_argument("--filelist", type=str, default="./data/val.txt",
                   help="file list; the second column is the GT mask path relative to --data")
    p.add_argument("--masks", type=str, default="./masks",
                   help="directory with the predictions, named like the GT masks (<id>.png)")
    p.add_argument("--oracle-from", type=str, default="",
                   help="HxW: evaluate the GT masks down- then up-sampled through HxW instead of predictions")
    p.add_argument("--log-scores", type=str, default="./scores.log",
                   help="file for the per-class ranking of images by TP - FN - FP")
    # --- flags beyond SPEC 9.1 ---
    p.add_argument("--json-out", type=str, default=None,
                   help="JSON results (default <masks>/eval.json; in oracle mode only if given); "
                        "confusion.png and iou.png are written next to it")
    p.add_argument("--workers", type=int, default=None,
                   help=f"decoding processes (default: the number of CPUs, here {default_workers()})")
    p.add_argument("--allow-problems", "--allow-missing", dest="allow_problems", action="store_true",
                   help="score the images that could be evaluated and exit 0 even if some are missing or invalid")
    return p


def parse_oracle(text: str) -> tuple[int, int] | None:
    """``"HxW"`` -> (H, W), both > 2; ``""`` -> None."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m is None or int(m.group(1)) <= 2 or int(m.group(2)) <= 2:
        raise UserError(f"--oracle-from {text!r} must be HxW with both sizes > 2, e.g. --oracle-from 64x64")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Setup:
    """What the arguments resolve to: the dataset scored, the oracle size (None: score --masks) and the JSON path
    (None: no JSON, the default in oracle mode)."""

    info: DatasetInfo
    oracle: tuple[int, int] | None
    json_out: str | None


def check_args(args: argparse.Namespace, oracle: tuple[int, int] | None) -> None:
    """The inputs exist and --workers is positive (SPEC 9.1), each as a one-line error."""
    if not os.path.isdir(args.data):
        raise UserError(f"--data {args.data} is not a directory; pass the root the list's mask paths are "
                        "relative to (e.g. --data ./data)")
    if not os.path.isfile(args.filelist):
        raise UserError(f"--filelist {args.filelist} is not a file; pass a list such as data/val_voc.txt")
    if oracle is None and not os.path.isdir(args.masks):
        raise UserError(f"--masks {args.masks} is not a directory; pass the directory infer_val.py wrote "
                        "(its --mask-output-dir)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")


def format_problems(problems: list[Problem], num_classes: int) -> list[str]:
    """One line per kind: the count and the first names."""
    lines = []
    for kind in PROBLEM_KINDS:
        label = problem_label(kind, num_classes)
        names = [p.name for p in problems if p.kind == kind]
        if names:
            more = ", ..." if len(names) > NAMES_SHOWN else ""
            lines.append(f"[problem] {label}: {len(names)} ({', '.join(names[:NAMES_SHOWN])}{more})")
    first = problems[0]
    lines.append(f"[problem] first one: {first.name}: {first.detail}")
    return lines


def format_log_scores(image_scores: list[tuple[int, str, dict[int, int]]], class_names: tuple[str, ...]) -> str:
    """The --log-scores file (SPEC 9.2): per class a header line, then '%05d | <id>' by decreasing score."""
    out = []
    for c, name in enumerate(class_names):
        out.append(name)
        ranked = sorted(((s[c], image_id) for _, image_id, s in image_scores if c in s),
                        key=lambda t: -t[0])  # stable: ties keep list order
        out.extend("%05d | %s" % (score, image_id) for score, image_id in ranked)
    return "\n".join(out) + "\n"


def problem_summary(problems: list[Problem]) -> dict:
    return {kind: {"count": sum(p.kind == kind for p in problems),
                   "images": [p.name for p in problems if p.kind == kind],
                   "details": [p.detail for p in problems if p.kind == kind]}
            for kind in PROBLEM_KINDS}


def write_outputs(args: argparse.Namespace, setup: Setup, result: EvalResult, scores: dict,
                  num_listed: int) -> list[str]:
    """--log-scores, the figures, and the JSON last (its presence marks a finished evaluation)."""
    names = setup.info.class_names
    written = [args.log_scores]
    write_text(args.log_scores, format_log_scores(result.image_scores, names))
    if setup.json_out is None:
        return written
    from utils.figures import save_confusion_figure, save_iou_figure  # matplotlib only when needed

    fig_dir = os.path.dirname(setup.json_out)
    save_confusion_figure(result.conf, names, os.path.join(fig_dir, "confusion.png"))
    save_iou_figure(scores["iou"], names, os.path.join(fig_dir, "iou.png"), defined=scores["iou_defined"])
    report = {
        "list": os.path.abspath(args.filelist),
        "data": os.path.abspath(args.data),
        "masks": None if setup.oracle else os.path.abspath(args.masks),
        "oracle_from": args.oracle_from,
        "dataset": setup.info.name,
        "num_listed": num_listed,
        "num_images": result.num_images,
        "class_names": list(names),
        **scores,
        "confusion": result.conf.tolist(),
        "misses": result.misses.tolist(),  # by GT class: labelled GT pixels predicted as 255 (no class)
        "no_class_pixels": result.no_class_pixels,
        "problems": problem_summary(result.problems),
        "log_scores": os.path.abspath(args.log_scores),
    }
    write_json(setup.json_out, report)
    return written + [os.path.join(fig_dir, "confusion.png"), os.path.join(fig_dir, "iou.png"), setup.json_out]


def resolve_setup(args: argparse.Namespace) -> Setup:
    """The checked arguments' Setup; the JSON goes to <masks>/eval.json unless --json-out names it or the run
    scores the oracle."""
    oracle = parse_oracle(args.oracle_from)
    info = get_dataset(args.dataset)
    check_args(args, oracle)
    json_out = args.json_out
    if json_out is None and oracle is None:
        json_out = os.path.join(args.masks, "eval.json")
    return Setup(info=info, oracle=oracle, json_out=json_out)


def torchrun_context() -> DistContext | None:
    """utils/dist.py's DistContext of torchrun's processes (gloo on the CPU), or None for one process; torch is
    imported only for several, since an evaluation is NumPy work and a plain run starts faster without it."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    import torch

    from utils.dist import init_distributed

    return init_distributed(torch.device("cpu"))


def evaluate_list(entries: list[Entry], args: argparse.Namespace, setup: Setup,
                  ctx: DistContext | None) -> EvalResult | None:
    """The whole list's result on rank 0 (None on the other ranks): under torchrun every rank evaluates every
    world_size-th entry and the parts are gathered."""
    workers, n = args.workers or default_workers(), setup.info.num_classes
    if ctx is None:
        return evaluate(entries, setup.oracle, workers, num_classes=n)
    from utils.dist import all_gather_objects, shutdown

    mine = evaluate(entries[ctx.rank::ctx.world_size], setup.oracle, workers, ctx.is_main, n)
    parts = all_gather_objects(mine, ctx)
    shutdown(ctx)
    if not ctx.is_main:
        return None
    total = EvalResult.zeros(n)
    for part in parts:
        total.merge(part)
    total.sort()
    return total


def check_problems(result: EvalResult, args: argparse.Namespace, num_classes: int, num_listed: int) -> None:
    """Without --allow-problems, problems end the run: listed on stdout, counted in the error; so does a list
    of which no image could be scored."""
    n = num_classes
    if result.problems and (not args.allow_problems or result.num_images == 0):
        print("\n".join(format_problems(result.problems, n)), flush=True)
    if result.problems and not args.allow_problems:
        counts = ", ".join(f"{problem_label(k, n)}: {v['count']}"
                           for k, v in problem_summary(result.problems).items() if v["count"])
        raise UserError(f"{len(result.problems)} of {num_listed} list entries could not be evaluated "
                        f"({counts}; listed on stdout); fix them or pass --allow-problems to score the rest")
    if result.num_images == 0:
        raise UserError(f"no image of --filelist {args.filelist} could be evaluated; see the problems on stdout")


def report_lines(result: EvalResult, scores: dict, info: DatasetInfo) -> list[str]:
    """The report of SPEC 9.2 ("# of images: N", the table, both summaries), then the mean over the classes
    present, the prediction pixels without a class and the problems that --allow-problems let through."""
    lines = [f"# of images: {result.num_images}"] + format_scores(scores, info.class_names)
    lines.append(f"Prediction pixels without a class (255): {result.no_class_pixels} "
                 f"({int(result.misses.sum())} on labelled GT pixels, scored as misses)")
    if result.problems:
        lines += format_problems(result.problems, info.num_classes)
    return lines


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup = resolve_setup(args)
    entries, line_problems = parse_list(args.filelist, args.data, args.masks, setup.info.num_classes)
    num_listed = len(entries) + len(line_problems)
    ctx = torchrun_context()
    if ctx is None or ctx.is_main:  # fail on an unwritable output before the work, not after it
        for path in filter(None, (args.log_scores, setup.json_out)):
            check_writable_dir(os.path.dirname(path) or ".", "output directory")
    result = evaluate_list(entries, args, setup, ctx)
    if result is None:
        return
    result.problems = sorted(line_problems + result.problems, key=lambda p: p.index)
    check_problems(result, args, setup.info.num_classes, num_listed)
    scores = scores_from_confusion(result.conf, result.misses)
    written = write_outputs(args, setup, result, scores, num_listed)
    print(f"wrote {', '.join(written)}", file=sys.stderr, flush=True)
    print("\n".join(report_lines(result, scores, setup.info)), flush=True)


if __name__ == "__main__":
    run_main(main)
