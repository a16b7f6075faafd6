"""Whether and how a run resumes, decided once, before the run is touched.

``--resume ID`` asks to continue an interrupted or failed run. :func:`plan_resume` makes
every decision that takes: whether that run can be resumed here (it exists, is this
suite's, is unfinished, its suite can resume, it trained on as many processes), whether
the options given beside ``--resume`` agree with the ones it started with, which threads,
device and checkpoint folder it continues on, and which params it runs under (the stored
ones, read back with today's defaults). The result, a :class:`ResumePlan`, is handed
down: the runner claims the run with it, and a suite learns from ``ctx.resume`` that it
continues (what it already finished it reads from its own rows). Any refusal is an
``InputError`` and nothing has been written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import distributed
from ..db import Store
from ..db.tables import Run
from ..errors import InputError
from .params import SuiteParams
from .registry import Suite

RUN_SETTINGS = frozenset({"progress", "tag", "resume", "checkpoint_dir"})
"""The command's own options (not a suite's): how this process runs, free to differ on
``--resume``. A suite's option says so itself (``Opt.resume_free``); ``--threads`` and
``--device`` are checked against the run's."""


@dataclass(frozen=True)
class ResumePlan:
    """A run to continue, checked: its id, the params it runs under, the threads, device
    and checkpoint folder it continues on, and its status and error before (restored if
    the suite refuses the resume before writing a row)."""

    run_id: int
    params: SuiteParams
    threads: int | None
    device: str
    checkpoint_root: Path
    before: tuple[str, str | None]


def plan_resume(store: Store, suite: Suite, run_id: int, *, given: Mapping[str, Any],
                named: Collection[str], threads: int | None = None, device: str = "auto",
                checkpoint_dir: Path | str | None = None) -> ResumePlan:
    """The plan to continue run ``run_id`` of ``suite``, or ``InputError`` saying why it
    cannot be. ``given``: the params the command line resolved to; ``named``: the options
    it set explicitly (each must agree with the run's unless it declares itself
    ``resume_free``); ``threads``/``device``: the command line's (used only if named,
    and then they must match the run's)."""
    run = _resumable(store, suite, run_id)
    stored = run.params or {}
    _check_factories(run_id, stored, given, named, suite)
    _check_options(run_id, stored, given, named, suite)
    if "threads" in named and run.threads and threads != run.threads:
        raise InputError(f"--resume {run_id}: --threads {threads} differs from the run's "
                         f"{run.threads}; leave it out to resume on the same thread count")
    if "device" in named and device != "auto" and run.device and device != run.device:
        raise InputError(f"--resume {run_id}: --device {device} differs from the run's "
                         f"{run.device}")
    root = Path(checkpoint_dir or (run.context or {}).get("checkpoint_dir") or "checkpoints")
    return ResumePlan(run_id, suite.params.from_stored(stored),
                      threads if "threads" in named else run.threads,
                      run.device or device, root, (run.status, run.error))


def _resumable(store: Store, suite: Suite, run_id: int) -> Run:
    """The run, if this process may continue it."""
    run = store.run(run_id)
    if run is None:
        raise InputError(f"--resume {run_id}: no such run")
    if run.suite != suite.name:
        raise InputError(f"--resume {run_id}: run is a {run.suite!r} run")
    if run.status == "finished":
        raise InputError(f"--resume {run_id}: run already finished")
    if suite.check is None:
        raise InputError(f"--resume {run_id}: {suite.name} runs cannot be resumed; start "
                         "a new one")
    stored_world = (run.context or {}).get("world_size", 1)
    size = distributed.world().size
    if stored_world != size:
        raise InputError(f"--resume {run_id}: the run trained on {stored_world} "
                         f"process(es); resume it on as many (not {size})")
    return run


def _names(value: Any) -> list[str]:
    """A stored model option (one name, or a list of them) as a list."""
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def _check_factories(run_id: int, stored: Mapping[str, Any], given: Mapping[str, Any],
                     named: Collection[str], suite: Suite) -> None:
    """Refuse to resume a run whose stored network is a ``module:function`` factory the
    command line does not name again: building it imports and runs that code, and a
    database (a file others can edit) must never choose code to run."""
    from ..xnor.networks.model_spec import is_factory

    key = next((o.stored_as or o.key for o in suite.options if o.name == "model"), None)
    if key is None:
        return
    again = set(_names(given.get(key))) if "model" in named else set()
    for spec in _names(stored.get(key)):
        if is_factory(spec) and spec not in again:
            raise InputError(f"--resume {run_id}: the run builds the network {spec!r} from "
                             f"your code; give --model {spec} to let xnorbench import and "
                             "run it again")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _check_options(run_id: int, stored: Mapping[str, Any], given: Mapping[str, Any],
                   named: Collection[str], suite: Suite) -> None:
    """A resumed run keeps the options it started with: one named beside ``--resume``
    that differs from the stored value is refused, unless it declares itself
    ``resume_free`` (it changes how the run reads its input, not what it computes)."""
    from ..training.recipes import show_value

    free = {o.name for o in suite.options if o.resume_free}
    keys = {o.name: o.stored_as or o.key for o in suite.options}
    for name in sorted(set(named) - RUN_SETTINGS - free - {"threads", "device"}):
        key = keys.get(name)
        if key is None or key not in given:  # not stored: nothing to compare
            continue
        new, old = given[key], stored.get(key)
        if key == "data_dir" and new and old and Path(new).resolve() == Path(old).resolve():
            continue
        if not _same(new, old):
            raise InputError(f"--resume {run_id}: --{name.replace('_', '-')} "
                             f"{show_value(new)} differs from the run's {show_value(old)}; a "
                             "resumed run keeps the options it started with (start a new "
                             "run to change them)")
