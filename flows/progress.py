"""Terminal progress for long stages.

The CLI turns it on; under a deployment or in tests every call is a no-op. Tasks run in
the flow's thread pool, so one rich `Progress` shared by the flow and its tasks is enough.
Bars are named by stage, so a task can advance its stage's bar without being handed a
callback through Prefect's parameters.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class TokenRateColumn(ProgressColumn):
    """Generated tokens per second, on bars that count tokens (`advance(..., tokens=n)`)."""

    def render(self, task) -> Text:
        tokens = task.fields.get("tokens")
        if tokens is None or not task.elapsed:
            return Text("")
        return Text(f"{tokens / task.elapsed:.1f} tok/s", style="progress.data.speed")


_progress: Progress | None = None
_bars: dict[str, int] = {}
_lock = threading.Lock()


@contextmanager
def shown() -> Iterator[None]:
    """Show progress bars on stderr while the block runs."""
    global _progress
    _progress = Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TokenRateColumn(),
    )
    try:
        with _progress:
            yield
    finally:
        _progress = None
        _bars.clear()


def begin(name: str, total: int | None) -> None:
    """Start (or grow) the bar `name`; `total=None` shows a count without an end."""
    if _progress is None:
        return
    with _lock:
        if name in _bars:
            current = _progress.tasks[_bars[name]].total
            _progress.update(_bars[name], total=(current or 0) + (total or 0))
        else:
            _bars[name] = _progress.add_task(name, total=total)


def advance(name: str, n: int = 1, tokens: int = 0) -> None:
    """Move the bar `name` on by `n`; `tokens` adds to the tokens its rate column shows."""
    if _progress is None or name not in _bars:
        return
    with _lock:
        task_id = _bars[name]
        if tokens:
            counted = _progress.tasks[task_id].fields.get("tokens", 0)
            _progress.update(task_id, tokens=counted + tokens)
        _progress.advance(task_id, n)


def ingest_callbacks() -> dict:
    """The ingest stage's parameter: documents read, onto the `documents` bar."""
    return {"on_progress": lambda n: advance("documents", n)}


def generation_callbacks(label: str) -> dict:
    """The augment stage's parameters: rows and tokens onto the `generate` bar, and a line in
    the task's log at most every 30 s with rows, tokens/s and an ETA."""
    from prefect import get_run_logger

    from corpusmill.tasks.generation import Throughput

    meter = Throughput()
    last_log = [0.0]

    def started(rows: int) -> None:
        meter.start(rows)
        begin("generate", rows)  # grows the bar's total, so it shows an ETA

    def generated(rows: int, tokens: int) -> None:
        meter.add(0, tokens)
        advance("generate", 0, tokens=tokens)

    def advanced(rows: int) -> None:
        advance("generate", rows)
        meter.add(rows)
        now = time.monotonic()
        if now - last_log[0] >= 30 or meter.rows >= meter.total:
            last_log[0] = now
            get_run_logger().info("augment %s: %s", label, meter.line())

    return {"on_start": started, "on_generated": generated, "on_progress": advanced}
