"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one, never half.

Every snapshot, mask, log summary and JSON result goes through ``atomic_path``: the data is
written to a temporary file in the target's directory and renamed over the target.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from utils.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise UserError(f"cannot write to {directory}: {e.strerror}; choose a writable output directory") from e
    os.close(fd)
    try:
        # mkstemp creates the file private (0600); the target gets the usual permissions of a new file
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_image(img: "PIL.Image.Image", path: str | os.PathLike) -> None:  # noqa: F821
    """Save a PIL image; the format follows the target's extension."""
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{what} {path} is not writable ({e.strerror}); choose another directory or fix its permissions") from e
    return path
