"""TensorBoard visualisation of the fixed batch (SPEC 7.6) and a reader for the event files the run writes.

Per image one row: the image, then an overlay for each of "cam", "dec", "pseudo" that the model returns, under a
16-pixel header naming the image's classes; rows stacked with torchvision's make_grid (SPEC 7.6). The header
font is DejaVu Sans Mono, which matplotlib (a dependency) ships under a free licence.
"""
from __future__ import annotations

import glob
import os
import struct
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from datasets.voc import CLASS_NAMES, IGNORE_INDEX, PALETTE, denorm
from utils.fileio import write_error

PANELS = ("cam", "dec", "pseudo")  # overlays, in the order of SPEC 7.6
# every overlay of the project: IMAGE_WEIGHT x image + MASK_WEIGHT x class colour (SPEC 7.6 and 8.5: 0.3 is the
# image's weight); the TensorBoard panels scale the colour by the mask's confidence
IMAGE_WEIGHT = 0.3
MASK_WEIGHT = 1 - IMAGE_WEIGHT
HEADER_HEIGHT = 16
FONT_SIZE = 12
TEXT_POS = (5, 1)
GRID_PADDING = 8
GRID_PAD_VALUE = 0.9


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSansMono.ttf")
    try:
        return ImageFont.truetype(path, FONT_SIZE)
    except OSError:  # a matplotlib without its fonts: PIL's built-in bitmap font still names the classes
        return ImageFont.load_default()


def overlay(image: torch.Tensor, masks: torch.Tensor, plain_where_empty: bool = False) -> torch.Tensor:
    """image [3,H,W] RGB in [0,1], masks [C,H,W] -> [3,H,W]: ``IMAGE_WEIGHT image + MASK_WEIGHT colour(argmax)
    min(max, 1)``.

    ``plain_where_empty``: pixels where no channel is set (pseudo labels: "ignore") show the plain image.
    """
    conf, idx = masks.max(0)  # [H,W]
    colours = torch.from_numpy(PALETTE[:masks.shape[0]].astype(np.float32) / 255.0).to(image.device)  # [C,3]
    colour = colours[idx].permute(2, 0, 1)  # [3,H,W]
    out = IMAGE_WEIGHT * image + MASK_WEIGHT * colour * conf.clamp(max=1.0)
    if plain_where_empty:
        empty = masks.sum(0) <= 0  # [H,W]
        out = torch.where(empty[None], image, out)
    return out


def overlay_labels(labels: np.ndarray, image01: np.ndarray, plain_ignored: bool = False) -> np.ndarray:
    """A class map over its image: labels [H, W], image01 [H, W, 3] in [0, 1] -> float64 [H, W, 3] in [0, 1],
    ``IMAGE_WEIGHT * image + MASK_WEIGHT * palette colour``.

    255 ("ambiguous") has its own palette colour, as in the inference panels of SPEC 8.5; ``plain_ignored`` shows
    the plain image there instead (the unlabelled pixels of pseudo labels, as ``overlay``'s ``plain_where_empty``).
    """
    colour = PALETTE[labels].astype(np.float64) / 255.0  # [H, W, 3]
    out = IMAGE_WEIGHT * image01 + MASK_WEIGHT * colour
    if plain_ignored:
        ignored = labels == IGNORE_INDEX  # [H, W]
        out[ignored] = image01[ignored]
    return out


def _header(labels: torch.Tensor, width: int, class_names: Sequence[str]) -> torch.Tensor:
    """[3,16,W] black strip with the names of the image's classes in white."""
    names = ", ".join(class_names[k + 1] for k in torch.nonzero(labels > 0).flatten().tolist())
    img = Image.new("RGB", (width, HEADER_HEIGHT), (0, 0, 0))
    ImageDraw.Draw(img).text(TEXT_POS, names, fill=(255, 255, 255), font=_font())
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def visualisation_grid(image: torch.Tensor, labels: torch.Tensor, outputs: dict[str, torch.Tensor],
                       class_names: Sequence[str] = CLASS_NAMES) -> torch.Tensor:
    """The ``visualisation`` image: image [B,3,H,W] normalised, labels [B,C-1] ([B,20] for VOC), model outputs ->
    [3,H',W'] in [0,1]; ``class_names`` (background first) name the labels in each row's header."""
    raw = denorm(image.detach().float().cpu()).clamp(0, 1)  # [B,3,H,W]
    rows = []
    for b in range(raw.shape[0]):
        panels = [raw[b]]
        for key in PANELS:
            if key in outputs and outputs[key] is not None:
                masks = outputs[key][b].detach().float().cpu()
                panels.append(overlay(raw[b], masks, plain_where_empty=key == "pseudo"))
        row = torch.cat(panels, dim=2)  # [3,H,W*P]
        rows.append(torch.cat((_header(labels[b], row.shape[2], class_names), row), dim=1))
    return make_grid(torch.stack(rows), nrow=1, padding=GRID_PADDING, pad_value=GRID_PAD_VALUE)


class EventWriter:
    """TensorBoard events of one writer directory, written synchronously.

    tensorboardX's SummaryWriter hands events to a background thread and loses what is queued when the process is
    killed; a run killed with SIGKILL should keep everything it logged, so every event goes to the file at once
    (a few dozen per epoch). Same tags, steps and file format as the SummaryWriter.
    """

    def __init__(self, logdir: str):
        from tensorboardX.event_file_writer import EventsWriter

        self._failed = False
        try:
            os.makedirs(logdir, exist_ok=True)
            self._writer = EventsWriter(os.path.join(logdir, "events"))
        except OSError as e:
            raise write_error(getattr(e, "filename", None) or logdir, e) from None

    def _write(self, summary, step: int) -> None:
        import time

        from tensorboardX.proto.event_pb2 import Event

        try:
            self._writer.write_event(Event(summary=summary, wall_time=time.time(), step=int(step)))
            self._writer.flush()
        except OSError as e:  # a full disk: the file keeps the events before this one (a reader skips the rest)
            self._failed = True
            raise write_error(self._writer._file_name, e) from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        self._write(scalar(tag, float(value)), step)

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """image [3,H,W] in [0,1]."""
        from tensorboardX.summary import image as image_summary

        self._write(image_summary(tag, image.detach().cpu().numpy(), dataformats="CHW"), step)

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError as e:
            if not self._failed:  # after a failed write the buffered rest cannot be written either; said already
                raise write_error(self._writer._file_name, e) from None


# --- reading the event files back (tests, tools); tensorboard's own reader is not a dependency ---

def _records(path: str):
    """The payloads of a TFRecord file (length, crc, data, crc)."""
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return
            (length,) = struct.unpack("<Q", head[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return  # a record the writer had not finished
            yield data


def read_events(logdir: str) -> dict[str, dict[int, float | bytes]]:
    """{tag: {step: value}} of every event file in ``logdir``: scalars as floats, images as PNG bytes.

    Files are read in name order (tensorboardX names them by creation time), so a resumed run's values replace
    those of the interrupted one at the same step.
    """
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float | bytes]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(logdir), "events.out.tfevents.*"))):
        for data in _records(path):
            event = event_pb2.Event.FromString(data)
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                if v.HasField("image"):
                    out.setdefault(v.tag, {})[event.step] = v.image.encoded_image_string
                elif v.HasField("simple_value") or v.WhichOneof("value") == "simple_value":
                    out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out
