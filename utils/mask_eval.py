"""Scoring a directory of predicted PNG masks against the GT masks of a file list (SPEC 9.2): eval_seg.py's core,
which bench/eval.py times as it is.

Every list entry is decoded and counted into a confusion matrix of its own; the matrices of disjoint sets of entries
add up (``EvalResult.merge``), so the work splits over processes (``evaluate``) and over torchrun ranks alike.
An entry that cannot be scored (missing or unreadable PNG, size mismatch, values outside the classes) is a
``Problem`` instead, so that one bad file is reported with the others rather than ending the run. A prediction
may leave pixels without a class (255, as pseudo-label masks do): those are misses of the GT class where the GT
is labelled and ignored where it is 255 (``utils.metrics.confusion_and_misses``).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.filelists import scan_file_list
from datasets.voc import IGNORE_INDEX, NUM_CLASSES
from utils.metrics import NO_CLASS, confusion_and_misses, image_class_scores
from utils.procs import die_with_parent

# kind -> how a report names it ({last}: the highest class index, 20 for VOC); images with any of these are left
# out of the scores
PROBLEM_KINDS = {
    "malformed_line": "malformed list line",
    "missing_gt": "missing GT mask",
    "unreadable_gt": "unreadable GT mask",
    "bad_gt_values": "GT values outside 0..{last} and 255",
    "missing_prediction": "missing prediction",
    "unreadable_prediction": "unreadable prediction",
    "size_mismatch": "prediction size differs from the GT",
    "bad_prediction_values": "prediction values outside 0..{last} and 255",
}
VALUES_SHOWN = 5  # offending values named in a problem's detail
MAX_CHUNK = 32  # images per worker task: few enough tasks to keep IPC small, enough to balance the workers
ORACLE_SCALE = 255  # scipy.misc.imresize byte-scaled a 0/1 mask to 0/255 before resizing
ORACLE_THRESHOLD = 0.5  # SPEC 9.2's "> 0.5", applied to the 0..255 result: any non-zero pixel


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
    """What a set of list entries contributes; results of disjoint sets add up (``merge``).

    Prediction pixels of NO_CLASS (255) predict no class: ``misses`` counts those on labelled GT pixels by GT class
    (false negatives of that class, see ``utils.metrics.confusion_and_misses``), ``no_class_pixels`` all of them."""

    conf: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64))
    misses: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, dtype=np.int64))
    image_scores: list[tuple[int, str, dict[int, int]]] = field(default_factory=list)  # (index, id, {class: score})
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0  # images that entered the confusion matrix
    no_class_pixels: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> "EvalResult":
        """The result of no entry, over ``num_classes`` classes."""
        return cls(conf=np.zeros((num_classes, num_classes), dtype=np.int64),
                   misses=np.zeros(num_classes, dtype=np.int64))

    def merge(self, other: "EvalResult") -> None:
        self.conf += other.conf
        self.misses += other.misses
        self.image_scores += other.image_scores
        self.problems += other.problems
        self.num_images += other.num_images
        self.no_class_pixels += other.no_class_pixels

    def sort(self) -> None:
        self.image_scores.sort(key=lambda s: s[0])
        self.problems.sort(key=lambda p: p.index)


def problem_label(kind: str, num_classes: int) -> str:
    return PROBLEM_KINDS[kind].format(last=num_classes - 1)


def default_workers() -> int:
    """All CPUs this process may use, shared among the ranks of this machine under torchrun."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


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

    As scipy.misc.imresize in SPEC 9.2: the 0/1 mask is byte-scaled to 0/255, resized bilinearly (PIL)
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


def _read_prediction(entry: Entry, gt: np.ndarray) -> np.ndarray | Problem:
    """The entry's prediction PNG, or the problem that keeps it from being scored against ``gt``."""
    if not os.path.isfile(entry.pred_path):
        return Problem(entry.index, "missing_prediction", entry.image_id, f"{entry.pred_path} does not exist")
    try:
        pred = read_label_png(entry.pred_path)
    except _Unreadable as e:
        return Problem(entry.index, "unreadable_prediction", entry.image_id, f"{entry.pred_path}: {e}")
    if pred.shape != gt.shape:
        return Problem(entry.index, "size_mismatch", entry.image_id,
                       f"{entry.pred_path} is {pred.shape[1]}x{pred.shape[0]}, the GT {gt.shape[1]}x{gt.shape[0]}")
    outside = ((pred >= entry.num_classes) & (pred != NO_CLASS)) | (pred < 0)
    if (pred.max() >= entry.num_classes or pred.min() < 0) and outside.any():
        bad = np.unique(pred[outside])
        return Problem(entry.index, "bad_prediction_values", entry.image_id,
                       f"{entry.pred_path} holds {bad[:VALUES_SHOWN].tolist()}")
    return pred


def evaluate_image(entry: Entry, oracle: tuple[int, int] | None) -> EvalResult:
    """Decode one GT/prediction pair -> its result: the image's confusion matrix and scores, or its problem."""
    out = EvalResult.zeros(entry.num_classes)

    def problem(kind: str, detail: str) -> EvalResult:
        out.problems.append(Problem(entry.index, kind, entry.image_id, detail))
        return out

    if not os.path.isfile(entry.gt_path):
        return problem("missing_gt", f"{entry.gt_path} does not exist")
    try:
        gt = read_label_png(entry.gt_path)
    except _Unreadable as e:
        return problem("unreadable_gt", f"{entry.gt_path}: {e}")
    outside = (gt >= entry.num_classes) & (gt != IGNORE_INDEX)
    if gt.max() >= entry.num_classes and np.any(outside):
        return problem("bad_gt_values", f"{entry.gt_path} holds {np.unique(gt[outside])[:VALUES_SHOWN].tolist()}")
    pred = oracle_prediction(gt, oracle) if oracle is not None else _read_prediction(entry, gt)
    if isinstance(pred, Problem):
        out.problems.append(pred)
        return out
    out.conf, out.misses = confusion_and_misses(gt, pred, entry.num_classes)
    out.no_class_pixels = int(np.count_nonzero(pred == NO_CLASS))
    out.image_scores.append((entry.index, entry.image_id, image_class_scores(out.conf, out.misses)))
    out.num_images = 1
    return out


def evaluate_chunk(entries: list[Entry], oracle: tuple[int, int] | None,
                   num_classes: int = NUM_CLASSES) -> EvalResult:
    """Worker task: several images summed into one result (an unexpected error names the image)."""
    out = EvalResult.zeros(num_classes)
    for entry in entries:
        try:
            out.merge(evaluate_image(entry, oracle))
        except Exception as e:
            raise RuntimeError(f"evaluating image {entry.image_id} ({entry.gt_path}) failed: {e!r}") from e
    return out


def evaluate(entries: list[Entry], oracle: tuple[int, int] | None, workers: int,
             progress: bool = True, num_classes: int = NUM_CLASSES) -> EvalResult:
    """Evaluate entries in ``workers`` processes (in this one if 1) over ``num_classes`` classes; the result is in
    list order. ``oracle`` (H, W): score each GT resized through H x W instead of its prediction."""
    total = EvalResult.zeros(num_classes)
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
