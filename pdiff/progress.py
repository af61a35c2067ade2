"""Progress bars for long stages (rich), quiet when PDIFF_QUIET=1 or stdout is not a terminal-like sink."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StageProgress:
    """One bar: advance it, and set a short status text (loss, accuracy)."""

    def __init__(self, progress: Progress | None, task_id: int | None):
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: int = 1, status: str | None = None) -> None:
        if self._progress is not None:
            fields = {"status": status} if status is not None else {}
            self._progress.update(self._task_id, advance=amount, **fields)


@contextmanager
def stage_progress(description: str, total: int, completed: int = 0, visible: bool = True
                   ) -> Iterator[StageProgress]:
    """A bar for one stage; none when PDIFF_QUIET=1 or not `visible` (ranks other than 0)."""
    if os.environ.get("PDIFF_QUIET") == "1" or not visible:
        yield StageProgress(None, None)
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, transient=False) as progress:
        task_id = progress.add_task(description, total=total, completed=completed, status="")
        yield StageProgress(progress, task_id)
