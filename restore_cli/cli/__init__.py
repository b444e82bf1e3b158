"""The ``restore`` command line (Typer). Errors become one line on stderr and an exit code."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from .. import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, RestoreError, Terminated
from . import info as info_cmd
from . import models, restore
from .console import Ui

EPILOG = (
    "Exit codes: 0 all done or skipped, 1 some input failed, 2 usage error, "
    "3 model or weights error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). "
    "Weights: the Hugging Face cache (HF_HOME, HF_HUB_CACHE); `restore info` shows where. "
    "ResShift weights: S-Lab License 1.0, non-commercial."
)

app = typer.Typer(
    name="restore",
    help="Restore photos with ResShift: x4 super-resolution, inpainting, face restoration.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(epilog=EPILOG)(restore.sr)
app.command(epilog=EPILOG)(restore.inpaint)
app.command(epilog=EPILOG)(restore.face)
app.command("info")(info_cmd.info)
app.add_typer(models.app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"restore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Restore photos with ResShift."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping errors to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("--verbose", "--debug", "-v") for a in args)
    signals: list[int] = []  # SIGTERM noted here, to tell it from Ctrl-C
    try:
        with _sigterm_stops_cleanly(signals):
            code = app(args=args, prog_name="restore", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer >= 0.16 turns KeyboardInterrupt into Exit(130)
            return _stopped(bool(signals))
        if isinstance(code, int):  # an explicit typer.Exit(code)
            return code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RestoreError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        Ui().error(exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _stopped(isinstance(exc, Terminated))
    except typer.Abort as exc:  # older typer and click turn KeyboardInterrupt into Abort
        return _stopped(isinstance(exc.__cause__, Terminated) or bool(signals))
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click usage errors (exit 2)
            exc.show()
            return exc.exit_code
        if verbose:
            raise
        Ui().error(f"unexpected {type(exc).__name__}: {exc} (run again with --verbose for details)")
        return EXIT_FAILED
    return 0


def _stopped(terminated: bool) -> int:
    """Exit code (and one line) for a run stopped by Ctrl-C or SIGTERM."""
    Ui().error("terminated (SIGTERM)" if terminated else "interrupted")
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


@contextmanager
def _sigterm_stops_cleanly(seen: list[int]) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so temporary files are removed and
    finished outputs stay, as with Ctrl-C; ``seen`` records it. Only in the main thread, where
    Python delivers signals."""

    def handler(signum: int, _frame: object) -> None:
        seen.append(signum)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
