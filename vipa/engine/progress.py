"""One rich progress bar for long work (training, evaluation, generation); silent when off."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """``with ProgressBar(total, "train", enabled) as bar: bar.update(advance=1)``.

    ``fields`` is a rich format string over extra task fields (e.g. the loss),
    given initial values in ``initial``. Disabled bars cost nothing, so
    non-main DDP ranks and tests simply pass ``enabled=False``.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, *, start: int = 0,
                 fields: str = "", **initial: Any) -> None:
        self.total, self.label, self.enabled, self.start = total, label, enabled, start
        self.fields, self.initial = fields, initial
        self.progress = None
        self.task = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.console import Console
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
            self.progress = Progress(*columns, console=Console(stderr=True))
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total,
                                               completed=self.start, **self.initial)
        return self

    def update(self, completed: int | None = None, advance: int | None = None,
               **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, advance=advance, **fields)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
