"""Inference maths and writers: merging variants (SPEC 8.3, 8.4), class presence (8.2), outputs (8.5).

The merges are pure functions on tensors and run where the network ran (GPU or CPU), so only the merged
probabilities [C, H, W] travel to the writer processes, not the N padded canvases of probabilities. The writer
job (argmax, dense CRF, PNGs) uses numpy, PIL and pydensecrf only.
``WriterPool`` runs the jobs in worker processes with a bounded number in flight, and checks every result: an
exception or a dead worker stops the run naming the image, so that no error is lost.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasets.voc import IGNORE_INDEX, MEAN, PALETTE_FLAT, STD, normalize_np
from utils.dcrf import CRFParams, dense_crf
from utils.errors import UserError
from utils.fileio import atomic_path, save_image
from utils.procs import die_with_parent
from utils.visualize import overlay_labels



# ---------------------------------------------------------------------------------------------------------------
# merging (pure functions)

def class_presence(cls: torch.Tensor, fp_cut_score: float) -> torch.Tensor:
    """Classes kept when GT labels are not used (SPEC 8.2): ``max_variants sigmoid(cls) > FP_CUT_SCORE``.

    cls [N, 20] logits -> [20] float (1 kept, 0 suppressed).
    """
    return (torch.sigmoid(cls).amax(0) > fp_cut_score).float()


def merge_multiscale(probs: torch.Tensor | Sequence[torch.Tensor], pads: torch.Tensor, labels: torch.Tensor,
                     flip: bool, bg_pow: float, out_size: tuple[int, int]) -> torch.Tensor:
    """Merge the probabilities of all scales and flips of one image (SPEC 8.3).

    probs [N, C, PH, PW] (or N tensors [C, ph_i, pw_i] of any canvas sizes), pads [N, 4] = (pad_top, pad_left,
    h, w) per variant, labels [C-1] class presence, out_size (H, W) of the unscaled image -> P [C, H, W].
    Per variant: crop the padding, resize bilinearly (align_corners=False) to H x W, flip odd variants back when
    ``flip``, multiply foreground channel c by labels[c]; the mean over variants in batch order, then the
    background raised to ``bg_pow``. No re-normalisation: the argmax and the CRF see these values.
    """
    keep = torch.cat((labels.new_ones(1), labels)).to(dtype=torch.float32)[:, None, None]  # [C, 1, 1]
    total = None
    for i, p in enumerate(probs):
        top, left, h, w = (int(v) for v in pads[i].tolist())
        p = p[None, :, top:top + h, left:left + w].float()  # [1, C, h, w]
        p = F.interpolate(p, size=out_size, mode="bilinear", align_corners=False)[0]  # [C, H, W]
        if flip and i % 2 == 1:
            p = p.flip(-1)
        p = p * keep.to(p.device)
        total = p if total is None else total + p
    merged = (total / len(probs)).contiguous()  # [C, H, W]
    merged[0] = merged[0] ** bg_pow
    return merged


def merge_crops(probs: torch.Tensor | Sequence[torch.Tensor], coords: torch.Tensor, labels: torch.Tensor,
                flip: bool, out_size: tuple[int, int]) -> torch.Tensor:
    """Merge the probabilities of a grid of crops of one image (SPEC 8.4).

    probs [N, C, ch, cw], coords [N, 6] = (s_h, e_h, s_w, e_w, pad_top, pad_left) of each crop on the padded
    canvas, labels [C-1] -> P [C, H, W]: the mean over the crops covering each pixel, absent classes zeroed, no
    background exponent. Even variants are flipped back when ``flip`` (the crop loader's parity).

    The part of a crop inside the image spans canvas rows max(s_h, pad_top) .. min(e_h, pad_top + H); both
    offsets follow from that span, so a crop starting inside the top/left padding at a non-zero position is
    placed right too (SPEC 8.4 and 13 describe the wrong offset there; elsewhere the results agree).
    """
    height, width = out_size
    first = probs[0]
    total = first.new_zeros((first.shape[0], height, width), dtype=torch.float32)  # [C, H, W]
    count = first.new_zeros((1, height, width), dtype=torch.float32)  # [1, H, W]
    for i, p in enumerate(probs):
        s_h, e_h, s_w, e_w, top, left = (int(v) for v in coords[i].tolist())
        if flip and i % 2 == 0:
            p = p.flip(-1)
        r0, r1 = max(s_h, top), min(e_h, top + height)  # canvas rows of the crop inside the image
        c0, c1 = max(s_w, left), min(e_w, left + width)
        if r0 >= r1 or c0 >= c1:
            continue  # a crop entirely in the padding
        total[:, r0 - top:r1 - top, c0 - left:c1 - left] += p[:, r0 - s_h:r1 - s_h, c0 - s_w:c1 - s_w].float()
        count[:, r0 - top:r1 - top, c0 - left:c1 - left] += 1
    keep = torch.cat((labels.new_ones(1), labels)).to(dtype=torch.float32, device=total.device)[:, None, None]
    return total * keep / count


# ---------------------------------------------------------------------------------------------------------------
# masks of a training-mode forward (validation during training, tools/eval_pseudo.py), as class-index maps

def argmax_labels(masks: torch.Tensor) -> torch.Tensor:
    """Masks [..., C, H, W] -> class indices [..., H, W] uint8 (first index on ties)."""
    return masks.argmax(-3).to(torch.uint8)


def pseudo_label_map(pseudo: torch.Tensor) -> torch.Tensor:
    """0/1 pseudo ground truth [..., C, H, W] -> [..., H, W] uint8: its class, or IGNORE_INDEX where no class is
    set (the pixels the self-supervised loss ignores)."""
    lab = argmax_labels(pseudo)
    lab[pseudo.sum(-3) < 1] = IGNORE_INDEX
    return lab


def single_scale_prediction(masks: torch.Tensor, cls: torch.Tensor, fp_cut_score: float, bg_pow: float,
                            labels: torch.Tensor | None = None) -> torch.Tensor:
    """The final prediction of one forward pass, made as inference makes it from its scales (SPEC 8.2, 8.3).

    masks [B,C,H,W] uncleaned probabilities, cls [B,C-1] class logits. Foreground class c is kept where
    ``sigmoid(cls_c) > fp_cut_score`` (``class_presence`` of one variant) or, given ``labels`` [B,C-1] (as
    TEST.USE_GT_LABELS), where the image label is set; the background is raised to ``bg_pow``.
    -> class indices [B,H,W] uint8.
    """
    keep = labels.float() if labels is not None else (torch.sigmoid(cls.float()) > fp_cut_score).float()  # [B,C-1]
    probs = masks.float() * torch.cat((torch.ones_like(keep[:, :1]), keep), 1)[:, :, None, None]  # [B,C,H,W]
    probs[:, 0] = probs[:, 0] ** bg_pow
    return argmax_labels(probs)


def forward_masks(out: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The uncleaned probabilities [B,C,H,W] of a training-mode forward: the CAM baseline's ``masks``, or the
    softmax of the single-stage model's ``logits`` resized as the model resizes its masks (bilinear,
    align_corners=True), which is what its test-mode forward returns."""
    if "masks" in out:
        return out["masks"].float()
    probs = torch.softmax(out["logits"].float(), dim=1)  # [B,C,h,w]
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=True)


def label_maps(out: dict[str, torch.Tensor], fp_cut_score: float, bg_pow: float,
               labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Class-index maps [B,H,W] uint8 of a training-mode forward ``out``, by the names of
    ``utils.metrics.MASK_KINDS``: "cam" (raw masks), "dec" (PAMR-refined) and "pseudo" (pseudo labels,
    IGNORE_INDEX where unlabelled) where the model makes them, and "pred", the single-scale final prediction
    (``single_scale_prediction``; ``labels`` [B,C-1] replace the predicted class presence)."""
    maps = {"cam": argmax_labels(out["cam"])}
    if "dec" in out:
        maps["dec"] = argmax_labels(out["dec"])
    if "pseudo" in out:
        maps["pseudo"] = pseudo_label_map(out["pseudo"])
    if "logits" in out or "masks" in out:
        size = tuple(out["cam"].shape[-2:])
        maps["pred"] = single_scale_prediction(forward_masks(out, size), out["cls"], fp_cut_score, bg_pow, labels)
    return maps


# ---------------------------------------------------------------------------------------------------------------
# outputs

def image_01(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> the de-normalised float32 image [H, W, 3] in [0, 1] of SPEC 8.2: normalised as the
    dataset does, then ``x * std + mean`` in float32 as ``denorm``, so that every value is the same."""
    x = normalize_np(image)
    return x * np.asarray(STD, dtype=np.float32) + np.asarray(MEAN, dtype=np.float32)


def crf_image(image01: np.ndarray) -> np.ndarray:
    """The CRF's colour input: round(255 * image) as contiguous uint8 [H, W, 3] (SPEC 8.6)."""
    return np.ascontiguousarray(np.round(255 * image01).astype(np.uint8))


def visualisation(image01: np.ndarray, panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels side by side (prediction, CRF prediction, GT; whichever exist) as uint8 RGB [H, W * n, 3]."""
    vis = np.concatenate([overlay_labels(p, image01) for p in panels], axis=1)
    return np.round(255 * vis).astype(np.uint8)


def save_label_png(labels: np.ndarray, path: str) -> None:
    """Class indices as an 8-bit single-channel PNG (mode "L", no palette; SPEC 8.5)."""
    save_image(Image.fromarray(labels.astype(np.uint8), mode="L"), path)


def save_palette_png(labels: np.ndarray, path: str) -> None:
    """Class indices as a palette PNG (mode "P", VOC colours): the format of the VOC evaluation server."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(PALETTE_FLAT)
    save_image(img, path)


def save_npy(array: np.ndarray, path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
            np.save(f, array)


@dataclass(frozen=True)
class WriterOptions:
    """What a writer job writes under ``out_dir`` (SPEC 8.5 plus the --palette / --save-probs / --no-crf options)."""

    out_dir: str
    crf: CRFParams | None  # None: --no-crf
    palette: bool = False
    save_probs: bool = False

    def dirs(self) -> list[str]:
        sub = ["vis"] + (["crf"] if self.crf is not None else []) + (["palette"] if self.palette else []) + \
              (["probs"] if self.save_probs else [])
        return [self.out_dir] + [os.path.join(self.out_dir, d) for d in sub]


def write_outputs(image_id: str, probs: np.ndarray, image: np.ndarray, gt: np.ndarray | None,
                  opts: WriterOptions) -> dict[str, Any]:
    """The writer job of one image: argmax (first index on ties), CRF, and every output file, each atomically.

    probs [C, H, W] float32 merged probabilities, image uint8 [H, W, 3], gt [H, W] or None (no GT panel).
    Returns a small summary for the run's report.
    """
    pred = probs.argmax(0).astype(np.uint8)  # [H, W]
    img01 = image_01(image)
    save_label_png(pred, os.path.join(opts.out_dir, f"{image_id}.png"))
    panels = [pred]
    changed = None
    if opts.crf is not None:
        pred_crf = dense_crf(crf_image(img01), probs, opts.crf).argmax(0).astype(np.uint8)
        save_label_png(pred_crf, os.path.join(opts.out_dir, "crf", f"{image_id}.png"))
        panels.append(pred_crf)
        changed = int((pred_crf != pred).sum())
    if gt is not None:
        panels.append(gt)
    save_image(Image.fromarray(visualisation(img01, panels)), os.path.join(opts.out_dir, "vis", f"{image_id}.png"))
    if opts.palette:
        save_palette_png(pred, os.path.join(opts.out_dir, "palette", f"{image_id}.png"))
    if opts.save_probs:
        save_npy(probs.astype(np.float16), os.path.join(opts.out_dir, "probs", f"{image_id}.npy"))
    return {"id": image_id, "crf_changed_pixels": changed}


# ---------------------------------------------------------------------------------------------------------------
# the writer pool

def _noop() -> None:
    return None


def _reason(e: BaseException) -> str:
    """The one-line cause of a failed job: a UserError's own message, else the exception's type and text."""
    return str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"


class WriterPool:
    """Runs writer jobs in ``workers`` processes (inline with 0), at most ``max_pending`` in flight.

    ``submit`` blocks while the oldest job is unfinished and the limit is reached, so memory stays flat however
    far the network is ahead; every result is checked in submission order. A job that raises, or a worker that
    dies (killed, out of memory), becomes ``UserError("CRF/writer failed on <id>: <reason>")``; the worker's
    traceback goes to stdout (the run's log) so that the cause is not lost.
    """

    def __init__(self, workers: int, max_pending: int | None = None):
        self.workers = workers
        self.max_pending = max_pending or max(2, 2 * workers)
        self.pending: collections.deque[tuple[str, Future]] = collections.deque()
        self.results: list[Any] = []
        self.pool = None
        if workers > 0:
            # fork where available: workers start at once without re-importing torch; start them now, before the
            # network's threads exist
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent)
            self.pool.submit(_noop).result()

    def submit(self, image_id: str, fn: Callable[..., Any], *args: Any) -> None:
        if self.pool is None:
            self._run_inline(image_id, fn, *args)
            return
        while len(self.pending) >= self.max_pending:
            self._collect_oldest()
        try:
            future = self.pool.submit(fn, image_id, *args)
        except BrokenProcessPool:
            # a worker died between two collections: the oldest job in flight is named (this raises)
            if self.pending:
                self._collect_oldest()
            self._fail(image_id, "a worker process died (killed, or out of memory)", None)
        self.pending.append((image_id, future))
        while self.pending and self.pending[0][1].done():
            self._collect_oldest()

    def _run_inline(self, image_id: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.results.append(fn(image_id, *args))
        except Exception as e:
            self._fail(image_id, _reason(e), None if isinstance(e, UserError) else traceback.format_exc())

    def _collect_oldest(self) -> None:
        image_id, future = self.pending.popleft()
        try:
            self.results.append(future.result())
        except BrokenProcessPool:
            others = [i for i, _ in self.pending]
            also = f" (also in flight: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
            self._fail(image_id, f"a worker process died (killed, or out of memory){also}", None)
        except Exception as e:
            remote = None if isinstance(e, UserError) else getattr(e.__cause__, "tb", None) or traceback.format_exc()
            self._fail(image_id, _reason(e), remote)

    def _fail(self, image_id: str, reason: str, tb: str | None) -> None:
        self.close(cancel=True)
        if tb:
            print(f"writer traceback for {image_id}:\n{tb}", file=sys.stdout, flush=True)
        reason = " ".join(reason.split())  # one line
        raise UserError(f"CRF/writer failed on {image_id}: {reason}")

    def join(self) -> list[Any]:
        """Wait for every job, checking each; the results in submission order."""
        while self.pending:
            self._collect_oldest()
        self.close()
        return self.results

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None
        if cancel:
            self.pending.clear()
