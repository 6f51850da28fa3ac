"""File lists (SPEC 3.2) and the image/mask readers, without torch (the data checks use them).

SPEC 3.2: a line is ``<image> <mask>`` (``<image>`` only in the test list), paths relative to a data root.
SPEC 3.3: image-level labels come from the mask's class indices.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

from datasets.voc import IGNORE_INDEX, NUM_CLASSES, labels_from_mask, mask_values
from utils.errors import UserError

MAX_REPORTED = 20  # missing files listed in one error before "and N more"
# what PIL raises for a truncated or otherwise broken file
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
ON_CORRUPT = ("stop", "skip")  # TRAIN.ON_CORRUPT: a file that turns out corrupt during a run stops it, or is left out


def on_corrupt_problem(value: str) -> str | None:
    """Why TRAIN.ON_CORRUPT ``value`` is not valid, or None. The entry points check it before a run; the datasets
    then stop on a corrupt file unless it is "skip"."""
    if value in ON_CORRUPT:
        return None
    return (f"config key TRAIN.ON_CORRUPT is {value!r}; use 'stop' (a corrupt image stops the run) or 'skip' (it is "
            "left out with a warning)")


def scan_file_list(list_path: str, root: str, need_masks: bool
                   ) -> tuple[list[tuple[int, str, str | None]], list[tuple[int, str]]]:
    """The one reader of the file lists of every entry point: (the entries, the malformed lines).

    Entries are (line number, image path, mask path or None), paths joined with ``root``. A line holds
    ``<image> <mask>`` or, for the test list, ``<image>`` only (then the mask is None; with ``need_masks`` that is
    a malformed line). Columns are split on any whitespace; leading/trailing slashes of each column are stripped
    before joining, as SPEC 3.6's inference loader does. Blank lines are skipped. Malformed lines are
    (line number, message naming the list, the line and the fix). Lines that repeat an entry are kept (each is
    used as often as it is listed) and named once per list in a warning on stderr.
    """
    if not os.path.isdir(root):
        raise UserError(f"data root {root} is not a directory; point DATASET.ROOT (training) or TEST.DATA_ROOT "
                        f"(inference) at the folder that holds voc/, sbd/ and the file lists")
    try:
        with open(list_path) as f:
            raw_lines = f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"file list {list_path} not found; build it with tools/make_filelists.py "
                        f"(or tools/make_synthetic.py for the synthetic data)") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise UserError(f"file list {list_path} is not a text file ({type(e).__name__}); give a list of "
                        f"'<image> <mask>' lines") from None
    except OSError as e:
        raise UserError(f"cannot read file list {list_path} ({e.strerror}); check the path and its permissions"
                        ) from None
    items: list[tuple[int, str, str | None]] = []
    malformed: list[tuple[int, str]] = []
    for n, line in enumerate(raw_lines, 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) > 2:
            malformed.append((n, f"file list {list_path} line {n}: expected '<image> [<mask>]', got {len(cols)} "
                                 f"columns ({line.strip()[:80]!r}); fix the line"))
        elif need_masks and len(cols) == 1:
            malformed.append((n, f"file list {list_path} line {n}: no mask column ({cols[0]}); this use needs "
                                 f"'<image> <mask>' lines (the test list has images only)"))
        else:
            mask = os.path.join(root, cols[1].strip("/")) if len(cols) == 2 else None
            items.append((n, os.path.join(root, cols[0].strip("/")), mask))
    if not items and not malformed:
        raise UserError(f"file list {list_path} is empty; it needs at least one '<image> <mask>' line")
    _warn_duplicates(list_path, items)
    return items, malformed


_warned_duplicates: set[str] = set()  # lists already warned about in this process (several checks read a list)


def _warn_duplicates(list_path: str, items: list[tuple[int, str, str | None]]) -> None:
    lines_of: dict[tuple[str, str | None], list[int]] = {}
    for n, img, mask in items:
        lines_of.setdefault((img, mask), []).append(n)
    repeated = [lines for lines in lines_of.values() if len(lines) > 1]
    key = os.path.abspath(list_path)
    if not repeated or key in _warned_duplicates:
        return
    _warned_duplicates.add(key)
    groups = ["lines " + ", ".join(map(str, lines)) for lines in repeated[:MAX_REPORTED]]
    more = f" and {len(repeated) - MAX_REPORTED} more" if len(repeated) > MAX_REPORTED else ""
    sys.stderr.write(f"Warning: file list {list_path} lists the same entry more than once ({'; '.join(groups)}"
                     f"{more}); each is used as often as it is listed: remove the repeated lines if that is not "
                     "meant\n")
    sys.stderr.flush()


def parse_file_list(list_path: str, root: str, need_masks: bool) -> list[tuple[int, str, str | None]]:
    """(line number, image path, mask path or None) of every entry (see ``scan_file_list``); all malformed lines
    are one UserError, a line each."""
    items, malformed = scan_file_list(list_path, root, need_masks)
    if malformed:
        errors = [message for _, message in malformed]
        raise UserError("\n".join(_limited(errors, f"malformed lines in {list_path}")))
    return items


def _limited(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_REPORTED:
        return lines
    return lines[:MAX_REPORTED] + [f"... and {len(lines) - MAX_REPORTED} more {what}"]


def read_file_list(list_path: str, root: str, need_masks: bool,
                   check_exists: bool = True) -> list[tuple[str, str | None]]:
    """The entries of a file list (SPEC 3.2): (image path, mask path or None), joined with ``root``.

    See ``parse_file_list`` for the format. With ``check_exists`` every listed file must exist; all missing ones
    are reported at once (up to MAX_REPORTED), one line each.
    """
    entries = parse_file_list(list_path, root, need_masks)
    if check_exists:
        missing = [f"{p} not found (file list {list_path} line {n}); restore the file or remove the line"
                   for n, img, msk in entries for p in (img, msk) if p is not None and not os.path.isfile(p)]
        if missing:
            raise UserError("\n".join(_limited(missing, f"missing files listed in {list_path}")))
    return [(img, msk) for _, img, msk in entries]


def image_id(path: str) -> str:
    """Basename without extension (the suffix, not the characters '.jpg' stripped from the right as in SPEC 8.5)."""
    return os.path.splitext(os.path.basename(path))[0]


def load_image(path: str) -> Image.Image:
    """The RGB image at ``path``, fully decoded; OSError & co. for a corrupt file (the caller names it)."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def load_mask(path: str) -> Image.Image:
    """The class-index mask at ``path`` (palette or grey PNG), fully decoded, as a mode-"L" image of indices."""
    with Image.open(path) as img:
        img.load()
        if img.mode not in ("P", "L"):
            raise ValueError(f"mode {img.mode}, but masks are palette or greyscale PNGs of class indices")
        # the palette indices / grey values are the class indices; "L" keeps them when resampled
        return Image.fromarray(np.asarray(img), "L")


def check_mask_values(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> None:
    """ValueError naming the values of a class-index mask outside 0..C-1 (0..20 for VOC) and 255."""
    values = mask_values(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if len(bad):
        raise ValueError(f"values {bad.tolist()[:5]} outside 0..{num_classes - 1} and {IGNORE_INDEX}")


def mask_labels(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Image-level labels [C-1] of a mask (SPEC 3.3), checking the values; ValueError names the problem."""
    check_mask_values(mask, num_classes)
    labels = labels_from_mask(mask, num_classes)
    if not labels.any():
        raise ValueError("no foreground class (an image-level label needs at least one)")
    return labels
