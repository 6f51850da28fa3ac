"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one, never half.

Every snapshot, mask, log summary and JSON result goes through ``atomic_path``: the data is
written to a temporary file in the target's directory and renamed over the target. A write that
fails (a full disk, a quota, an I/O error, permissions that changed during the run) removes the
temporary file and becomes one ``UserError`` line naming the target and the cause.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from utils.errors import UserError

# errno -> (cause, fix) of a failed write; other errors are named by their strerror
_WRITE_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free space there or choose another directory"),
    errno.EDQUOT: ("disk quota exceeded", "free space within the quota or choose another directory"),
    errno.EFBIG: ("file too large for the file size limit (ulimit -f) or the file system",
                  "raise the limit or choose another directory"),
    errno.EROFS: ("read-only file system", "choose a writable directory"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another directory"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another directory"),
    errno.EIO: ("input/output error", "check the disk and choose another directory"),
    errno.EISDIR: ("a directory is in the way", "remove or rename it"),
    errno.ENOTDIR: ("a file is in the way of its directory", "remove or rename it"),
}

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_error(path: str | os.PathLike, e: OSError) -> UserError:
    """The one line of a failed write of ``path``: the file, the cause and what to do."""
    cause, fix = _WRITE_CAUSES.get(e.errno, (e.strerror or str(e), "check the directory and choose another one"))
    return UserError(f"cannot write {path}: {cause}; {fix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds.

    An OSError in the block or the rename (ENOSPC, EIO, EDQUOT, EACCES, ...) becomes ``write_error``; the
    temporary file is removed whatever ends the block, so a failed write leaves the old file or none.
    """
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
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(path, e) from None
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


class _WriteRecorder:
    """A file object for ``torch.save`` that keeps the OSError of a failed write: torch's zip writer replaces it
    with a RuntimeError ("unexpected pos ...") that names neither the file nor the cause."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically; a failed write is ``write_error``. Written through a file object, so
    the archive's inner folder is torch's "archive" rather than the temporary file's random name."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            recorder = _WriteRecorder(f)
            try:
                torch.save(obj, recorder)
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None
                raise


def save_image(img: "PIL.Image.Image", path: str | os.PathLike) -> None:  # noqa: F821
    """Save a PIL image; the format follows the target's extension."""
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def unwritable_ancestor(path: str | os.PathLike) -> tuple[str, bool] | None:
    """Whether the directory ``path`` could be created or written, without creating anything: None when its nearest
    existing ancestor is a writable directory, else (that ancestor, whether it is a directory at all)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return existing, False
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing, True
    return None


def dir_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why the directory ``path`` could not be created or written (see ``unwritable_ancestor``); None when it can."""
    found = unwritable_ancestor(path)
    if found is None:
        return None
    existing, is_dir = found
    why = "is read-only to this user" if is_dir else "is not a directory"
    return f"{what} {path} is not writable ({existing} {why}); choose another directory"


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
