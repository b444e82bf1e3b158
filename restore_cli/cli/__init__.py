"""The ``restore`` command line (Typer). Errors become one line on stderr and an exit code."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from .._version import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, RestoreError, Terminated
from . import info as info_cmd
from . import models, restore, schedule
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
    rich_markup_mode="rich",
)
app.command(epilog=f"{restore.SR_EXAMPLE}\n\n{EPILOG}")(restore.sr)
app.command(epilog=f"{restore.INPAINT_EXAMPLE}\n\n{EPILOG}")(restore.inpaint)
app.command(epilog=f"{restore.FACE_EXAMPLE}\n\n{EPILOG}")(restore.face)
app.command(
    epilog=f"Example: restore lowlight dark.jpg --checkpoint lolv1_dist2step.pth\n\n{EPILOG}"
)(restore.lowlight)
app.command(epilog=f"Example: restore derain windscreen/ -o clear/ --steps 1\n\n{EPILOG}")(
    restore.derain
)
app.command(epilog=f"Example: restore underwater reef.jpg\n\n{EPILOG}")(restore.underwater)
app.command("info")(info_cmd.info)
app.add_typer(models.app, name="models")
app.add_typer(schedule.app, name="schedule")


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
    """Entry point: run the app, mapping errors to one line and an exit code.

    With ``standalone_mode=False`` Typer (>= 0.29) returns the exit code of an explicit
    ``typer.Exit`` and of Ctrl-C (130), and raises usage errors (``TyperException``) for us to show.
    """
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("--verbose", "--debug", "-v") for a in args)
    signals: list[int] = []  # SIGTERM noted here, to tell it from Ctrl-C
    try:
        with _sigterm_stops_cleanly(signals):
            code = app(args=args, prog_name="restore", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RestoreError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        Ui().error(exc)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort) as exc:  # Abort: end of input at a prompt
        return _stopped(isinstance(exc, Terminated) or bool(signals))
    except typer.TyperException as exc:  # usage errors (exit 2)
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        if verbose:
            raise
        Ui().error(f"unexpected {type(exc).__name__}: {exc} (run again with --verbose for details)")
        return EXIT_FAILED
    if code == EXIT_INTERRUPTED:  # Ctrl-C (or SIGTERM, which raises a KeyboardInterrupt)
        return _stopped(bool(signals))
    return code if isinstance(code, int) else 0


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


def _signals_end_at_once() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def run() -> None:
    """Console-script entry point (and ``python -m restore_cli``)."""
    try:
        code = main()
        # Done and reported: a Ctrl-C or SIGTERM from here on ends the process at once (the shell
        # sees 130 / 143), not with a traceback out of a library's exit handler (torch has some).
        _signals_end_at_once()
    except KeyboardInterrupt as exc:  # one that came outside main's own handling
        _signals_end_at_once()
        code = _stopped(isinstance(exc, Terminated))
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        from .._entry import stop_now

        stop_now(code)
    sys.exit(code)
