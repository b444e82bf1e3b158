"""User-facing errors and the exit codes the command line maps them to.

Every error carries a one-line message (what failed, for which file) and a hint (how to fix it).
The library raises these; only the CLI prints them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # some input failed; the rest of the batch went on
EXIT_USAGE = 2  # bad command line
EXIT_MODEL = 3  # model, registry or weights problem (incl. not cached while offline)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (kill, a batch scheduler's time limit or pre-emption)


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler: stops the work as cleanly as Ctrl-C does."""


class RestoreError(Exception):
    """Base class: ``message`` says what failed, ``hint`` how to fix it.

    ``option`` names the setting the hint is about, as the Python API spells it (``"tile"``,
    ``"max_pixels"``): the library's hints never name command-line flags; the CLI adds the flag.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, *, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.option = option

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(RestoreError):
    """One input (image or mask) cannot be processed; a batch goes on with the others."""

    exit_code = EXIT_FAILED


class OutputError(RestoreError):
    """One output cannot be written (permissions, a file where a folder should be, a full disk);
    a batch goes on with the others."""

    exit_code = EXIT_FAILED


class UsageError(RestoreError):
    """The request itself is wrong (options, paths, unsupported device/dtype pair)."""

    exit_code = EXIT_USAGE


class ModelError(RestoreError):
    """Unknown model, bad registry entry, or an architecture the code cannot build."""

    exit_code = EXIT_MODEL


class WeightsError(ModelError):
    """A checkpoint is missing, corrupt, fails its checksum or does not fit the architecture."""


class OfflineError(WeightsError):
    """Weights are needed from the network but offline mode is on."""
