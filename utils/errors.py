"""The project's own error type and the one top-level handler every entry point uses.

An expected problem (a missing file, a malformed list, an unknown config key, ...) is raised as
``UserError`` with one line naming the problem and the fix. ``run_main`` prints that line on
stderr and exits with status 2; Ctrl-C and SIGTERM (utils/procs.py) end with one line and status
128 + the signal's number; anything else keeps its traceback.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def user_error_lines(e: BaseException) -> list[str]:
    """The distinct message lines of a UserError, also when a DataLoader worker re-raised it with its traceback."""
    text = str(e)
    if "Original Traceback" in text:
        # torch re-raises worker exceptions as "Caught UserError in DataLoader worker ... Traceback ...";
        # the worker's own message is what follows the last "UserError: "
        text = text.rsplit("UserError: ", 1)[-1]
    lines = [line for line in text.splitlines() if line.strip()]
    # several checks can meet the same problem (e.g. one missing data root behind three lists): say it once
    return list(dict.fromkeys(lines)) or ["unknown error"]


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn ``UserError`` into one line on stderr and exit status 2, SIGINT/SIGTERM into one line
    and 128 + the signal's number (the ``finally`` blocks shut the worker processes down on the way)."""
    from utils.procs import stop_on_signals

    stop_on_signals()
    try:
        code = main()
    except UserError as e:
        # one line per problem (validation may report several at once)
        for line in user_error_lines(e):
            sys.stderr.write(f"error: {line}\n")
        sys.stderr.flush()
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as e:
        # Ctrl-C, or SIGTERM under utils.procs.stop_on_signals: the finally blocks have shut the workers down
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write(f"stopped by {signal.Signals(signum).name}; files are written whole or not at all, so "
                         "none is left half-written\n")
        sys.stderr.flush()
        sys.exit(128 + signum)
    sys.exit(code or 0)
