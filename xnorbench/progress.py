"""Progress for epochs and batches: rich bars on a terminal, and without one (CI logs,
``nohup``) a plain line every ~10 s (``XNORBENCH_PROGRESS_S``) with the position, the
rate (images/s when the items are batches) and the time left. Quiet when disabled."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

T = TypeVar("T")


def line_interval() -> float:
    """Seconds between progress lines without a terminal (``XNORBENCH_PROGRESS_S``)."""
    try:
        return max(0.0, float(os.environ.get("XNORBENCH_PROGRESS_S", "10")))
    except ValueError:
        return 10.0


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class _Task:
    description: str
    total: int | None
    done: int = 0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)
    info: str = ""


def _rate(task: _Task, took: float) -> str:
    """images/s for batches; items per second, or seconds per item when slower than one
    a second (an epoch of minutes is not "0.00 it/s")."""
    if task.images:
        return f"{task.images / took:.1f} images/s"
    per_s = task.done / took
    return f"{per_s:.2f} it/s" if per_s >= 1 else f"{took / task.done:.1f} s/it"


class _Lines:
    """Progress as plain lines on stderr, at most one per interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.tasks: list[_Task] = []
        self.last = time.perf_counter()

    def advance(self, task: _Task, item: Any) -> None:
        task.done += 1
        first = item[0] if isinstance(item, (tuple, list)) and item else None
        shape = getattr(first, "shape", None)
        if shape:
            task.images += int(shape[0])
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(now)

    def emit(self, now: float) -> None:
        parts = []
        for t in self.tasks:
            pos = f"{t.done}/{t.total}" if t.total else str(t.done)
            parts.append(f"{t.description} {pos}")
        inner = self.tasks[-1]
        took = now - inner.started
        if inner.done and took > 0:
            parts.append(_rate(inner, took))
            if inner.total and inner.done < inner.total:
                parts.append(f"ETA {_fmt_time(took / inner.done * (inner.total - inner.done))}")
        if inner.info:
            parts.append(inner.info)
        print(" | ".join(parts), file=sys.stderr, flush=True)


class Progress:
    """A thin wrapper so suites can say ``for x in ctx.progress.track(xs, "epoch")``."""

    def __init__(self, enabled: bool = True, terminal: bool | None = None) -> None:
        self.enabled = enabled
        self.terminal = terminal
        self._rich: RichProgress | None = None
        self._lines: _Lines | None = None

    def __enter__(self) -> Progress:
        terminal = sys.stderr.isatty() if self.terminal is None else self.terminal
        if self.enabled and not terminal:
            self._lines = _Lines(line_interval())
        elif self.enabled:
            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=sys.stderr), transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lines = None
        if self._rich is not None:
            self._rich.__exit__(*exc)  # type: ignore[arg-type]
            self._rich = None

    def track(self, items: Iterable[T], description: str, total: int | None = None
              ) -> Iterator[T]:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        if self._lines is not None:
            yield from self._track_lines(items, description, total)
            return
        if self._rich is None:
            yield from items
            return
        task = self._rich.add_task(description, total=total, info="")
        try:
            for item in items:
                yield item
                self._rich.advance(task)
        finally:
            self._rich.remove_task(task)

    def _track_lines(self, items: Iterable[T], description: str, total: int | None
                     ) -> Iterator[T]:
        lines = self._lines
        assert lines is not None
        task = _Task(description, total)
        lines.tasks.append(task)
        try:
            for item in items:
                yield item
                lines.advance(task, item)
        finally:
            lines.tasks.remove(task)

    def info(self, text: str) -> None:
        """Show ``text`` beside the newest bar (e.g. the running loss)."""
        if self._lines is not None and self._lines.tasks:
            self._lines.tasks[-1].info = text
        if self._rich is not None and self._rich.tasks:
            self._rich.update(self._rich.tasks[-1].id, info=text)

    def log(self, text: str) -> None:
        """A line that stays (an epoch's summary)."""
        if self._lines is not None:
            print(text, file=sys.stderr, flush=True)
        if self._rich is not None:
            self._rich.console.print(text)
