"""Mean IoU of a directory of predicted PNG masks against the GT masks of a file list (SPEC 9).

    python eval_seg.py --data ./data --filelist data/val_voc.txt --masks results/pascal_voc/exp/run/val_voc
    python eval_seg.py --dataset coco --data data/coco --filelist data/coco/val_coco.txt --masks results/coco/val

stdout carries the original's report: "# of images: N", the per-class table ``Class | # | IoU | Pr | Re`` and the
summary lines (20 foreground classes, then "With background:", the standard 21-class PASCAL VOC mIoU), plus a
new third line over the classes present in the GT or the prediction. --dataset coco scores the 81 COCO classes
(datasets/info.py) in the same format: 81 table rows, 80 foreground classes, then the 81-class mean. The confusion matrix is accumulated over
the whole split with GT 255 ignored. Also written: the per-image ranking of --log-scores, <masks>/eval.json (or
--json-out) with every number, and confusion.png / iou.png next to the JSON.

Problems (malformed list lines, missing or unreadable PNGs, size mismatches, values outside the classes) are
counted and listed; the images concerned are left out, and the run fails unless --allow-problems is given.
Decoding runs in --workers processes. Under ``torchrun --nproc_per_node=N eval_seg.py ...`` every rank evaluates
a disjoint part of the list and rank 0 reduces the results (gloo) and writes them.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.filelists import scan_file_list
from datasets.info import DATASETS, get_dataset
from datasets.voc import IGNORE_INDEX, NUM_CLASSES
from utils.errors import UserError, run_main
from utils.fileio import check_writable_dir, write_json, write_text
from utils.metrics import confusion_matrix, format_scores, image_class_scores, scores_from_confusion
from utils.procs import die_with_parent

# kind -> how the report names it ({last}: the highest class index, 20 for VOC); images with any of these are left
# out of the scores
PROBLEM_KINDS = {
    "malformed_line": "malformed list line",
    "missing_gt": "missing GT mask",
    "unreadable_gt": "unreadable GT mask",
    "bad_gt_values": "GT values outside 0..{last} and 255",
    "missing_prediction": "missing prediction",
    "unreadable_prediction": "unreadable prediction",
    "size_mismatch": "prediction size differs from the GT",
    "bad_prediction_values": "prediction values outside 0..{last}",
}
NAMES_SHOWN = 5  # names listed per problem kind in the report (the JSON keeps all)
MAX_CHUNK = 32  # images per worker task: few enough tasks to keep IPC small, enough to balance the workers
ORACLE_SCALE = 255  # scipy.misc.imresize byte-scaled a 0/1 mask to 0/255 before resizing
ORACLE_THRESHOLD = 0.5  # the original's "> 0.5", applied to the 0..255 result: any non-zero pixel


@dataclass(frozen=True)
class Entry:
    """One list line: its position in the list, the image id, the two PNG paths and the classes it is scored
    over (the dataset's, with background)."""

    index: int
    image_id: str
    gt_path: str
    pred_path: str
    num_classes: int = NUM_CLASSES


@dataclass(frozen=True)
class Problem:
    index: int  # list position, so that problems are reported in list order whatever the sharding
    kind: str
    name: str  # the image id, or "line N" for a malformed line
    detail: str


@dataclass
class EvalResult:
    """What a set of list entries contributes; results of disjoint sets add up (``merge``)."""

    conf: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64))
    image_scores: list[tuple[int, str, dict[int, int]]] = field(default_factory=list)  # (index, id, {class: score})
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0  # images that entered the confusion matrix

    def merge(self, other: "EvalResult") -> None:
        self.conf += other.conf
        self.image_scores += other.image_scores
        self.problems += other.problems
        self.num_images += other.num_images

    def sort(self) -> None:
        self.image_scores.sort(key=lambda s: s[0])
        self.problems.sort(key=lambda p: p.index)


def default_workers() -> int:
    """All CPUs this process may use, shared among the ranks of this machine under torchrun."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


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
    # --- additions ---
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


def check_args(args: argparse.Namespace) -> None:
    """The original's checks, as one-line errors."""
    if not os.path.isdir(args.data):
        raise UserError(f"--data {args.data} is not a directory; pass the root the list's mask paths are "
                        "relative to (e.g. --data ./data)")
    if not os.path.isfile(args.filelist):
        raise UserError(f"--filelist {args.filelist} is not a file; pass a list such as data/val_voc.txt")
    if args.oracle is None and not os.path.isdir(args.masks):
        raise UserError(f"--masks {args.masks} is not a directory; pass the directory infer_val.py wrote "
                        "(its --mask-output-dir)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")


def parse_list(list_path: str, data: str, masks: str,
               num_classes: int = NUM_CLASSES) -> tuple[list[Entry], list[Problem]]:
    """List lines -> entries, read by the data layer's reader as train.py and infer_val.py read them (SPEC 9.2
    splits on single spaces; any whitespace separates the columns here, as in the data layer); malformed lines
    are problems. The GT is <data>/<mask column>, the prediction <masks>/<basename of the mask column>."""
    items, malformed = scan_file_list(list_path, data, need_masks=True)
    entries = []
    for number, _, gt_path in items:
        gt_name = os.path.basename(gt_path)
        entries.append(Entry(number - 1, os.path.splitext(gt_name)[0], gt_path, os.path.join(masks, gt_name),
                             num_classes))
    problems = [Problem(number - 1, "malformed_line", f"line {number}", message) for number, message in malformed]
    return entries, problems


class _Unreadable(Exception):
    pass


def read_label_png(path: str) -> np.ndarray:
    """A class-index PNG (palette or grey) -> [H, W] integer array; anything else raises _Unreadable."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _Unreadable(f"cannot decode: {e}") from None
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise _Unreadable(f"mode {mode}, expected a single-channel class-index PNG")
    return arr


def oracle_prediction(gt: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """[H, W] GT -> [H, W] uint8 'prediction': each class's binary mask resized to size_hw and back.

    As the original with scipy.misc.imresize: the 0/1 mask is byte-scaled to 0/255, resized bilinearly (PIL)
    down and up again, and pixels above 0.5 of that 0..255 result take the class (classes in increasing order,
    so a later class wins where two overlap). Background and 255 are not resized; they remain 0.
    """
    h, w = size_hw
    pred = np.zeros(gt.shape, dtype=np.uint8)
    for c in np.unique(gt):
        if c == 0 or c == IGNORE_INDEX:
            continue
        binary = Image.fromarray(((gt == c) * ORACLE_SCALE).astype(np.uint8))
        back = binary.resize((w, h), Image.BILINEAR).resize((gt.shape[1], gt.shape[0]), Image.BILINEAR)
        pred[np.asarray(back) > ORACLE_THRESHOLD] = c
    return pred


def evaluate_image(entry: Entry, oracle: tuple[int, int] | None) -> tuple[np.ndarray | None, Problem | None]:
    """Decode one GT/prediction pair -> (its [C, C] confusion matrix, None) or (None, the problem)."""
    num_classes = entry.num_classes

    def problem(kind: str, detail: str) -> tuple[None, Problem]:
        return None, Problem(entry.index, kind, entry.image_id, detail)

    if not os.path.isfile(entry.gt_path):
        return problem("missing_gt", f"{entry.gt_path} does not exist")
    try:
        gt = read_label_png(entry.gt_path)
    except _Unreadable as e:
        return problem("unreadable_gt", f"{entry.gt_path}: {e}")
    if gt.max() >= num_classes and np.any((gt >= num_classes) & (gt != IGNORE_INDEX)):
        bad = np.unique(gt[(gt >= num_classes) & (gt != IGNORE_INDEX)])
        return problem("bad_gt_values", f"{entry.gt_path} holds {bad[:NAMES_SHOWN].tolist()}")
    if oracle is not None:
        pred = oracle_prediction(gt, oracle)
    else:
        if not os.path.isfile(entry.pred_path):
            return problem("missing_prediction", f"{entry.pred_path} does not exist")
        try:
            pred = read_label_png(entry.pred_path)
        except _Unreadable as e:
            return problem("unreadable_prediction", f"{entry.pred_path}: {e}")
        if pred.shape != gt.shape:
            return problem("size_mismatch", f"{entry.pred_path} is {pred.shape[1]}x{pred.shape[0]}, "
                                            f"the GT {gt.shape[1]}x{gt.shape[0]}")
        if pred.max() >= num_classes or pred.min() < 0:
            bad = np.unique(pred[(pred >= num_classes) | (pred < 0)])
            return problem("bad_prediction_values", f"{entry.pred_path} holds {bad[:NAMES_SHOWN].tolist()}")
    return confusion_matrix(gt, pred, num_classes), None


def evaluate_chunk(entries: list[Entry], oracle: tuple[int, int] | None,
                   num_classes: int = NUM_CLASSES) -> EvalResult:
    """Worker task: several images summed into one result (an unexpected error names the image)."""
    out = EvalResult(conf=np.zeros((num_classes, num_classes), dtype=np.int64))
    for entry in entries:
        try:
            conf, problem = evaluate_image(entry, oracle)
        except Exception as e:
            raise RuntimeError(f"evaluating image {entry.image_id} ({entry.gt_path}) failed: {e!r}") from e
        if problem is not None:
            out.problems.append(problem)
            continue
        out.conf += conf
        out.image_scores.append((entry.index, entry.image_id, image_class_scores(conf)))
        out.num_images += 1
    return out


def evaluate(entries: list[Entry], oracle: tuple[int, int] | None, workers: int,
             progress: bool = True, num_classes: int = NUM_CLASSES) -> EvalResult:
    """Evaluate entries in ``workers`` processes (in this one if 1) over ``num_classes`` classes; the result is in
    list order."""
    total = EvalResult(conf=np.zeros((num_classes, num_classes), dtype=np.int64))
    size = max(1, min(MAX_CHUNK, -(-len(entries) // (4 * workers))))
    chunks = [entries[i:i + size] for i in range(0, len(entries), size)]
    # disable=None: the bar shows only on a terminal, so logs redirected to a file stay clean
    with tqdm(total=len(entries), desc="evaluating", unit="img", file=sys.stderr,
              disable=None if progress else True, mininterval=1.0) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                total.merge(evaluate_chunk(chunk, oracle, num_classes))
                bar.update(len(chunk))
        else:
            _evaluate_in_pool(chunks, oracle, workers, total, bar, num_classes)
    total.sort()
    return total


def _evaluate_in_pool(chunks: list[list[Entry]], oracle: tuple[int, int] | None, workers: int,
                      total: EvalResult, bar: tqdm, num_classes: int) -> None:
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), initializer=die_with_parent)
    try:
        pending = {pool.submit(evaluate_chunk, chunk, oracle, num_classes): chunk for chunk in chunks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                chunk = pending.pop(fut)
                try:
                    total.merge(fut.result())
                except BrokenProcessPool as e:
                    ids = ", ".join(entry.image_id for entry in chunk)
                    raise RuntimeError("a decoding process died (killed, or out of memory) during the evaluation; "
                                       f"unfinished images include: {ids}") from e
                bar.update(len(chunk))
    finally:
        # on an error stop at once instead of finishing the queued chunks
        pool.shutdown(wait=True, cancel_futures=True)


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _reduce_to_rank0(result: EvalResult, rank: int, world: int) -> EvalResult:
    """Sum the confusion matrices (gloo reduce) and gather the per-image records on rank 0."""
    import torch
    import torch.distributed as dist

    conf = torch.from_numpy(result.conf)  # shares memory: rank 0's result.conf receives the sum
    dist.reduce(conf, dst=0, op=dist.ReduceOp.SUM)
    mine = (result.image_scores, result.problems, result.num_images)
    gathered: list | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if rank != 0:
        return result
    merged = EvalResult(conf=result.conf.copy())
    for scores, problems, num_images in gathered:
        merged.image_scores += scores
        merged.problems += problems
        merged.num_images += num_images
    merged.sort()
    return merged


def problem_label(kind: str, num_classes: int) -> str:
    return PROBLEM_KINDS[kind].format(last=num_classes - 1)


def format_problems(problems: list[Problem], num_classes: int = NUM_CLASSES) -> list[str]:
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
    """The original's --log-scores file: per class a header line, then '%05d | <id>' by decreasing score."""
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


def write_outputs(args: argparse.Namespace, result: EvalResult, scores: dict, num_listed: int) -> list[str]:
    """--log-scores, the figures, and the JSON last (its presence marks a finished evaluation)."""
    names = args.info.class_names
    written = [args.log_scores]
    write_text(args.log_scores, format_log_scores(result.image_scores, names))
    if args.json_out is None:
        return written
    from utils.figures import save_confusion_figure, save_iou_figure  # matplotlib only when needed

    fig_dir = os.path.dirname(args.json_out)
    save_confusion_figure(result.conf, names, os.path.join(fig_dir, "confusion.png"))
    save_iou_figure(scores["iou"], names, os.path.join(fig_dir, "iou.png"), defined=scores["iou_defined"])
    report = {
        "list": os.path.abspath(args.filelist),
        "data": os.path.abspath(args.data),
        "masks": None if args.oracle else os.path.abspath(args.masks),
        "oracle_from": args.oracle_from,
        "dataset": args.info.name,
        "num_listed": num_listed,
        "num_images": result.num_images,
        "class_names": list(names),
        **scores,
        "confusion": result.conf.tolist(),
        "problems": problem_summary(result.problems),
        "log_scores": os.path.abspath(args.log_scores),
    }
    write_json(args.json_out, report)
    return written + [os.path.join(fig_dir, "confusion.png"), os.path.join(fig_dir, "iou.png"), args.json_out]


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    args.oracle = parse_oracle(args.oracle_from)
    args.info = get_dataset(args.dataset)
    check_args(args)
    n = args.info.num_classes
    if args.json_out is None and args.oracle is None:
        args.json_out = os.path.join(args.masks, "eval.json")
    rank, world = _dist_rank_world()
    entries, line_problems = parse_list(args.filelist, args.data, args.masks, n)
    num_listed = len(entries) + len(line_problems)
    if rank == 0:  # fail on an unwritable output before the work, not after it
        for path in filter(None, (args.log_scores, args.json_out)):
            check_writable_dir(os.path.dirname(path) or ".", "output directory")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # torchrun's MASTER_ADDR/PORT, RANK, WORLD_SIZE
        result = evaluate(entries[rank::world], args.oracle, args.workers or default_workers(), rank == 0, n)
        result = _reduce_to_rank0(result, rank, world)
        dist.destroy_process_group()
        if rank != 0:
            return
    else:
        result = evaluate(entries, args.oracle, args.workers or default_workers(), num_classes=n)
    result.problems = sorted(line_problems + result.problems, key=lambda p: p.index)

    if result.problems:
        print("\n".join(format_problems(result.problems, n)), flush=True)
        if not args.allow_problems:
            counts = ", ".join(f"{problem_label(k, n)}: {v['count']}"
                               for k, v in problem_summary(result.problems).items() if v["count"])
            raise UserError(f"{len(result.problems)} of {num_listed} list entries could not be evaluated "
                            f"({counts}; listed on stdout); fix them or pass --allow-problems to score the rest")
    if result.num_images == 0:
        raise UserError(f"no image of --filelist {args.filelist} could be evaluated; see the problems on stdout")

    scores = scores_from_confusion(result.conf)
    written = write_outputs(args, result, scores, num_listed)
    print(f"wrote {', '.join(written)}", file=sys.stderr, flush=True)
    # the report last, so that its final lines are the summary lines (as the original's)
    print(f"# of images: {result.num_images}")
    print("\n".join(format_scores(scores, args.info.class_names)), flush=True)


if __name__ == "__main__":
    run_main(main)
