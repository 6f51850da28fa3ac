"""Signals and worker processes of the entry points.

SIGTERM is handled like Ctrl-C: it unwinds the main thread as a ``StopSignal`` (a KeyboardInterrupt), so every
``finally`` block shuts its worker pools and DataLoader workers down and ``run_main`` ends the process with one
line and the conventional status 128 + signal number. A second signal while that unwinding runs exits at once.
Worker processes (writer pools, DataLoader workers, decoding pools) call ``die_with_parent`` when they start, so
a parent killed with SIGKILL, which runs no clean-up, does not leave them behind.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

PARENT_POLL_S = 1.0  # how often a worker checks its parent where the kernel cannot tell it (no prctl)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the main thread unwinds as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class _Handler:
    def __init__(self) -> None:
        self.first: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.first is not None:
            # the clean-up of the first signal is running; do not interrupt it with a traceback, end now
            os.write(2, f"stopped at once by a second {signal_name(signum)}\n".encode())
            os._exit(exit_status(signum))
        self.first = signum
        raise StopSignal(signum)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise ``StopSignal`` in the main thread; a second one exits at once (workers that
    called ``die_with_parent`` follow)."""
    handler = _Handler()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(*_: Any) -> None:
    """Worker initialiser (pool ``initializer`` or DataLoader ``worker_init_fn``): the worker ends when the process
    that started it dies, also by SIGKILL. Ctrl-C is left to the parent, which shuts its workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_process = multiprocessing.parent_process()
    parent = (parent_process.pid if parent_process is not None else None) or os.getppid()
    if _set_parent_death_signal():
        if os.getppid() != parent:  # the parent died before the kernel was asked to tell
            os._exit(1)
        return
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
