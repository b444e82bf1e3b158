"""The ``restore`` command line (Typer). Errors become one line on stderr and an exit code."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, RestoreError
from . import info as info_cmd
from . import models, restore
from .console import Ui

EPILOG = (
    "Exit codes: 0 all done or skipped, 1 some input failed, 2 usage error, "
    "3 model or weights error, 130 interrupted. Weights: the Hugging Face cache (HF_HOME, "
    "HF_HUB_CACHE); `restore info` shows where. ResShift weights: S-Lab License 1.0, "
    "non-commercial."
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
    try:
        app(args=args, prog_name="restore", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RestoreError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        Ui().error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        Ui().error("interrupted")
        return EXIT_INTERRUPTED
    except typer.Abort:
        Ui().error("interrupted")
        return EXIT_INTERRUPTED
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


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
