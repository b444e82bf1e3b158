"""The ``restore`` console script and ``python -m restore_cli``: the command line's own imports
(typer, click, rich: most of the start-up time) happen here, inside a guard, so a Ctrl-C or
SIGTERM while the program is still starting ends it with the usual one line and exit code, not a
KeyboardInterrupt traceback from the middle of an import."""

from __future__ import annotations

import signal
import sys

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated


def _terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


def main() -> None:
    # Kept through run(): its own handler takes over inside and hands back to this one, so there
    # is no moment at which a SIGTERM would kill the process without the one line.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from .cli import run
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        term = isinstance(exc, Terminated)
        sys.stderr.write("error: terminated (SIGTERM)\n" if term else "error: interrupted\n")
        stop_now(EXIT_TERMINATED if term else EXIT_INTERRUPTED)
    run()


def stop_now(code: int) -> None:
    """Exit with ``code`` after a stop that has been cleaned up and reported.

    Not through ``sys.exit``: a KeyboardInterrupt that went through code run by ``exec`` (as
    dataclasses and lazy imports do) leaves CPython set to end the process by SIGINT at shutdown,
    so a SIGTERM would look like a Ctrl-C (-2 instead of 143) to the scheduler that sent it. The
    with-blocks and finally clauses (temporary files, a local Ray cluster) have run by now; the
    exit handlers libraries registered (Ray's shutdown among them) run here."""
    import atexit
    import os

    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - a library's exit handler must not hide the stop
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
