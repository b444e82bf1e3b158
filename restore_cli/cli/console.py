"""The CLI's console: human messages and progress on stderr, JSON lines on stdout."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from ..errors import RestoreError


def _stderr() -> Console:
    """Messages on stderr; soft-wrapped (never broken into lines by rich), so a long URL or path
    stays whole in a log file and a terminal wraps it itself."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def flag(option: str) -> str:
    """The command-line flag of a Python API setting: ``max_pixels`` -> ``--max-pixels``."""
    return "--" + option.replace("_", "-")


@dataclass
class Ui:
    quiet: bool = False
    json: bool = False
    verbose: bool = False
    err: Console = field(default_factory=_stderr)

    @property
    def bars(self) -> bool:
        """Progress bars only on a terminal, never with --quiet or --json."""
        return self.err.is_terminal and not (self.quiet or self.json)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, markup=False)

    def detail(self, text: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(text, markup=False, style="dim")

    def warning(self, text: str) -> None:
        """Shown even with --quiet: something the user must know about the results."""
        self.err.print(f"warning: {text}", markup=False, style="yellow", soft_wrap=True)

    def error(self, exc: RestoreError | str) -> None:
        if isinstance(exc, RestoreError):
            hint = exc.hint or ""
            if exc.option and flag(exc.option) not in hint:
                hint = f"{hint} ({flag(exc.option)})" if hint else flag(exc.option)
            text = f"error: {exc.message}" + (f" — {hint}" if hint else "")
        else:
            text = f"error: {exc}"
        self.err.print(text, markup=False, style="red", soft_wrap=True)

    def emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    @contextmanager
    def download_bar(self):
        """A ``(label, done, total)`` callback drawing a download bar (a no-op off a terminal)."""
        if not self.bars:
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.err, transient=True) as bar:
            tasks: dict[str, Any] = {}

            def update(label: str, done: int, total: int | None) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total)
                bar.update(tasks[label], completed=done, total=total)

            yield update

    @contextmanager
    def work_bar(self, total: int):
        """Yields (advance_file, step_progress) callbacks; no-ops off a terminal."""
        if not self.bars:
            yield (lambda: None), None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeRemainingColumn(), console=self.err, transient=True) as bar:
            files = bar.add_task("images", total=total)
            inner: dict[str, Any] = {}

            def stage(name: str, done: int, count: int) -> None:
                label = "tiles" if name == "tile" else "steps"
                if label not in inner:
                    inner[label] = bar.add_task(label, total=count)
                bar.update(
                    inner[label], completed=done % count if done < count else count, total=count
                )
                if done == count:
                    bar.reset(inner[label], total=count)

            yield (lambda: bar.advance(files)), stage
