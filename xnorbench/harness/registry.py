"""The suite registry: a suite declares its name, its parameters and a row generator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..db import Row, Store
from .progress import Progress


class InputError(Exception):
    """The user's input is unusable (e.g. a missing or corrupt dataset).

    Raised by a suite before it produced any row, it leaves nothing in the database:
    the runner deletes the run row and the CLI answers with one line and exit code 2.
    """


@dataclass
class SuiteContext:
    """What a running suite may use: its run id, device, progress bars, checkpoints."""

    run_id: int
    store: Store
    device: str = "cpu"
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))
    checkpoint_dir: Path = Path("checkpoints")
    resume: bool = False

    def checkpoint_path(self, name: str) -> Path:
        path = self.checkpoint_dir / f"run-{self.run_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path / f"{name}.pt"


SuiteFn = Callable[[SuiteContext, dict[str, Any]], Iterator[Row]]


@dataclass(frozen=True)
class Suite:
    name: str
    help: str
    fn: SuiteFn
    defaults: dict[str, Any]


REGISTRY: dict[str, Suite] = {}


def register(name: str, help: str, defaults: dict[str, Any]) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: ``@register("accuracy", "...", defaults={...})`` on a row generator."""

    def wrap(fn: SuiteFn) -> SuiteFn:
        REGISTRY[name] = Suite(name, help, fn, dict(defaults))
        return fn

    return wrap


def get_suite(name: str) -> Suite:
    from .. import suites  # noqa: F401  (registers every suite)

    if name not in REGISTRY:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
