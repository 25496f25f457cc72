"""The one progress bar for long work (training, evaluation, generation) and its console.

Library log lines and the CLI's messages go to the same stderr console as the
bar (:func:`stderr_console`), so a log line printed while a bar runs is drawn
above it instead of tearing it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from rich.console import Console


@cache
def stderr_console() -> Console:
    """The process-wide stderr console shared by progress bars, logging and CLI errors."""
    return Console(stderr=True, soft_wrap=True)


class ProgressBar:
    """``with ProgressBar(total, "train", enabled) as bar: bar.update(advance=1)``.

    ``fields`` is a rich format string over extra task fields (e.g. the loss),
    given initial values in ``initial``; a ``transient`` bar disappears when done.
    Disabled bars cost nothing, so
    non-main DDP ranks and tests simply pass ``enabled=False``.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, *, start: int = 0,
                 fields: str = "", transient: bool = False, **initial: Any) -> None:
        self.total, self.label, self.enabled, self.start = total, label, enabled, start
        self.fields, self.initial, self.transient = fields, initial, transient
        self.progress = None
        self.task = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn()]
            if self.fields:
                columns.append(TextColumn(self.fields))
            columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
            self.progress = Progress(*columns, console=stderr_console(),
                                     transient=self.transient)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total,
                                               completed=self.start, **self.initial)
        return self

    def update(self, completed: int | None = None, advance: int | None = None,
               total: int | None = None, **fields: Any) -> None:
        """Move the bar; ``total`` sets the length once it is known."""
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, advance=advance, total=total,
                                 **fields)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
