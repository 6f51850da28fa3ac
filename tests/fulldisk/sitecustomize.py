"""A full disk for the tests, simulated where no small tmpfs can be mounted (tests/helpers.py ``small_disk``).

Python imports ``sitecustomize`` at start-up from PYTHONPATH. With ``FULL_DISK_DIR`` set, every file opened for
writing below that directory fails with ENOSPC once this process has written ``FULL_DISK_BYTES`` bytes there, or
as soon as the file ``FULL_DISK_FLAG`` exists (the disk "fills up" during the run). Without it nothing changes.
"""
import builtins
import errno
import os

_DIR = os.environ.get("FULL_DISK_DIR")


class _Budget:
    def __init__(self, limit: int, flag: str):
        self.limit, self.flag, self.used = limit, flag, 0

    def take(self, n: int) -> None:
        if (self.flag and os.path.exists(self.flag)) or self.used + n > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.used += n


class _FileOnFullDisk:
    """A file object whose writes draw on the budget; everything else goes to the real file."""

    def __init__(self, f, budget: _Budget):
        self._f, self._budget = f, budget

    def write(self, data):
        self._budget.take(len(data))
        return self._f.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


if _DIR:
    _ROOT = os.path.realpath(_DIR) + os.sep
    _BUDGET = _Budget(int(os.environ.get("FULL_DISK_BYTES", "0")), os.environ.get("FULL_DISK_FLAG", ""))
    _open = builtins.open

    def _open_on_full_disk(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            if os.path.realpath(os.fsdecode(file)).startswith(_ROOT):
                return _FileOnFullDisk(f, _BUDGET)
        return f

    builtins.open = _open_on_full_disk
