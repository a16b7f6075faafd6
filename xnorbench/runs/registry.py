"""The suite registry: a suite declares its name, its options and a row generator.

Suites register themselves (``@register`` in their module); this module imports none of
them. Importing :mod:`xnorbench.suites` registers the built-in ones (the CLI does), and
the CLI builds ``xnorbench run <suite>`` from each suite's declared options
(:mod:`.options`), so adding a suite is one file in ``xnorbench/suites/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..db import Row, Store
from ..progress import Progress
from .options import Opt
from .params import SuiteParams


@dataclass
class SuiteContext:
    """What a running suite may use: its run id, device, progress bars, checkpoints."""

    run_id: int
    store: Store
    device: str = "cpu"
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))
    checkpoint_dir: Path = Path("checkpoints")
    resume: bool = False
    binding: dict[str, Any] = field(default_factory=dict)
    """What a checkpoint of this run must carry to be resumed from: the database's id
    and the run id (a training adds its recipe key, variant and seed)."""

    @property
    def run_dir(self) -> Path:
        """This run's checkpoint folder: ``checkpoint_dir/run-ID`` (the runner puts
        ``checkpoint_dir`` under a folder named after the database)."""
        return self.checkpoint_dir / f"run-{self.run_id}"

    def checkpoint_path(self, name: str) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / f"{name}.pt"

    def discard_checkpoints(self) -> None:
        """Remove the run's resume checkpoints (``*.pt``) once it has finished; packed
        networks (``*.packed``) stay. The folder goes too if nothing else is left."""
        if not self.run_dir.is_dir():
            return
        for path in self.run_dir.glob("*.pt"):
            path.unlink(missing_ok=True)
        with suppress(OSError):
            self.run_dir.rmdir()  # only if empty


SuiteFn = Callable[[SuiteContext, Any], Iterator[Row]]
"""A row generator; its second argument is the suite's :class:`~.params.SuiteParams`
subclass (``Any`` here: a callable taking the subclass is not one taking the base)."""


CheckFn = Callable[[SuiteContext, Any], list[str]]
"""What a finished run of a suite must hold (given its params): the rows it lacks, as
short phrases."""

PrepareFn = Callable[[dict[str, Any]], dict[str, Any]]
"""From the parsed options to the params a run stores (cross-option checks and
resolution); raises ``InputError``."""


@dataclass(frozen=True)
class Suite:
    """A declared suite. ``params``: its :class:`~.params.SuiteParams` class (what a run
    stores and the suite receives); ``options`` (:class:`~.options.Opt`) make its
    command line, each stored option a field of ``params``; ``doc`` is the command's
    long help; ``check`` makes it resumable; ``checkpoints``: it writes per-epoch
    checkpoints (``--checkpoint-dir``); ``threads``: a fixed thread count;
    ``distributed``: it can train on several processes (torchrun)."""

    name: str
    help: str
    fn: SuiteFn
    params: type[SuiteParams]
    check: CheckFn | None = None
    options: tuple[Opt, ...] = ()
    prepare: PrepareFn | None = None
    doc: str = ""
    checkpoints: bool = False
    threads: int | None = None
    distributed: bool = False

    @property
    def defaults(self) -> dict[str, Any]:
        """What a run given no option stores."""
        return self.params().asdict()


REGISTRY: dict[str, Suite] = {}


def register(name: str, help: str, params: type[SuiteParams], check: CheckFn | None = None,
             **cli: Any) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: ``@register("accuracy", "...", AccuracyParams)`` on a row generator.

    ``check(ctx, params)``, if given, lists the rows a complete run lacks; the runner
    calls it before it marks a run ``finished`` (a resumable suite needs one). ``cli``:
    the command-line fields of :class:`Suite` (options, prepare, doc, ...)."""

    def wrap(fn: SuiteFn) -> SuiteFn:
        REGISTRY[name] = Suite(name, help, fn, params, check, **cli)
        return fn

    return wrap


def get_suite(name: str) -> Suite:
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none registered (import xnorbench.suites)"
        raise ValueError(f"unknown suite {name!r}; choose one of {known}")
    return REGISTRY[name]
