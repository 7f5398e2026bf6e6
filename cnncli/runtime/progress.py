"""Progress reporting for long work, kept out of the library's return values.

Library functions take a `Progress` and call `task()`/`advance()`/`note()`; the CLI passes
`ConsoleProgress` (a rich bar on a terminal, plain lines otherwise, always on stderr) and
Python callers get `Progress()`, which reports nothing. Training tells it the whole run's time
left (`time_left`, from cnncli.training.budget), which a bar shows beside the task's own.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from cnncli.output import format_epoch
from cnncli.runtime.durations import format_duration


class Progress:
    """Silent progress: the default for library callers."""

    @contextmanager
    def task(self, description: str, total: int | None, log: bool = True) -> Iterator["callable"]:
        """A bar for `total` steps; `log=False` keeps it off plain-text logs (a note follows it)."""
        yield lambda amount=1: None

    def note(self, message: str) -> None:
        """A line worth keeping in the log (an epoch summary, a warning)."""

    def epoch(self, record: dict, members: int = 1) -> None:
        """A training epoch ended: its record, as one log line."""
        self.note(format_epoch(record, members))

    def time_left(self, seconds: float | None) -> None:
        """The whole run's time left as last estimated (None: not yet known)."""


class RunLeftColumn(ProgressColumn):
    """The whole run's time left, beside a task's own bar: "run 4m10s left"."""

    def __init__(self, owner: "ConsoleProgress"):
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:
        left = self.owner.left
        return Text("" if left is None else f"run {format_duration(left)} left", style="progress.remaining")


class ConsoleProgress(Progress):
    """Progress bars on stderr when it is a terminal; otherwise one plain line per task and note."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.left: float | None = None

    @contextmanager
    def task(self, description: str, total: int | None, log: bool = True):
        if not self.interactive:
            started = time.perf_counter()
            yield lambda amount=1: None
            seconds = time.perf_counter() - started
            if log and seconds >= 2:  # short steps would only add noise to a log
                print(f"{description}: done in {seconds:.1f}s", file=self.stream, flush=True)
            return

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), RunLeftColumn(self)]
        with RichProgress(*columns, console=Console(file=self.stream), transient=True) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda amount=1: bar.advance(task_id, amount)

    def note(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def time_left(self, seconds: float | None) -> None:
        self.left = seconds
