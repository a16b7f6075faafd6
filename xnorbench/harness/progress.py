"""Rich progress bars for epochs and batches (quiet when disabled, e.g. in tests)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

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


class Progress:
    """A thin wrapper so suites can say ``for x in ctx.progress.track(xs, "epoch")``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._rich: RichProgress | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=sys.stderr), transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)  # type: ignore[arg-type]
            self._rich = None

    def track(self, items: Iterable[T], description: str, total: int | None = None
              ) -> Iterator[T]:
        if self._rich is None:
            yield from items
            return
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        task = self._rich.add_task(description, total=total, info="")
        try:
            for item in items:
                yield item
                self._rich.advance(task)
        finally:
            self._rich.remove_task(task)

    def info(self, text: str) -> None:
        """Show ``text`` beside the newest bar (e.g. the running loss)."""
        if self._rich is not None and self._rich.tasks:
            self._rich.update(self._rich.tasks[-1].id, info=text)

    def log(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text)
