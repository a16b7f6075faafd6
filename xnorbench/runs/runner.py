"""The runner: opens a run row, streams a suite's rows into the db, closes the run.

Every row is committed as it arrives, so a crash keeps all rows produced before it.
Ctrl-C or SIGTERM ends the run ``interrupted``; an exception ends it ``failed`` with the
error text. A ``--resume`` reopens an interrupted or failed run and lets the suite pick
up from its checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..data.imagenet import workers
from ..db import DatabaseGone, DBError, Row, RunLost, Store
from ..errors import InputError, XnorbenchError
from ..progress import Progress
from ..xnor import kernels
from .environment import capture
from .liveness import heartbeat, heartbeat_seconds, signals_deferred, sigterm_as_interrupt
from .params import SuiteParams, coerce
from .registry import Suite, SuiteContext, get_suite
from .resume import ResumePlan

log = logging.getLogger(__name__)


class RunFailed(XnorbenchError):
    """The suite raised; the run row says ``failed``. Its exit code is the error's where
    the error is the input's (2), else 1."""

    def __init__(self, run_id: int, error: BaseException) -> None:
        super().__init__(f"run {run_id} failed: {type(error).__name__}: {error}")
        self.run_id = run_id
        self.error = error
        if isinstance(error, XnorbenchError) and error.exit_code == 2:
            self.exit_code = 2

    def line(self) -> str:
        """What the CLI says: the input's error with the run it failed, else the whole."""
        if self.exit_code == 2:
            return f"{self.error} (run {self.run_id} marked failed)"
        if isinstance(self.error, IncompleteRun):
            return f"{self.error} (marked failed)"
        return str(self)


class RunRejected(XnorbenchError):
    """The suite refused its input before producing a row; the run row was removed."""

    exit_code = 2

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RunInterrupted(XnorbenchError):
    """Ctrl-C / SIGTERM; the run row says ``interrupted``."""

    exit_code = 130

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} interrupted; continue it with --resume {run_id}")
        self.run_id = run_id


class StatusNotSaved(XnorbenchError):
    """The run's rows are stored but its final status could not be written."""

    def __init__(self, run_id: int, status: str, reason: str) -> None:
        super().__init__(
            f"run {run_id} ended {status}, but its status could not be saved ({reason}); it "
            f"shows as running and then stale: `xnorbench runs mark-stale` closes it, and "
            f"`--resume {run_id}` completes it where its suite can resume")
        self.run_id = run_id
        self.status = status


FINAL_WRITE_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between the attempts at the final status write (after the busy timeout)."""


def finish(store: Store, run_id: int, status: str, error: str | None = None) -> None:
    """Write the run's final status, retried with backoff; signals are held meanwhile.

    ``StatusNotSaved`` if every attempt failed; ``RunLost`` if the run is not ours.
    """
    reason = ""
    with signals_deferred():
        for delay in (*FINAL_WRITE_DELAYS, None):
            try:
                store.finish_run(run_id, status, error)
                return
            except (RunLost, DatabaseGone):
                raise
            except Exception as exc:  # locked past the busy timeout, disk full, ...
                reason = str(getattr(exc, "orig", exc)).splitlines()[0] or type(exc).__name__
            if delay is not None:
                time.sleep(delay)
    raise StatusNotSaved(run_id, status, reason)


@dataclass(frozen=True)
class RunSettings:
    """How a run happens, beside what it computes (its params): where, with which seed
    and threads recorded, the command line that started it, progress bars, where its
    checkpoints go (``checkpoint_dir/db-<database id>/run-<id>/``, default
    ``./checkpoints``), and the tags that name it."""

    device: str = "cpu"
    seed: int | None = None
    command: str | None = None
    progress: bool = True
    checkpoint_dir: Path | str | None = None
    threads: int | None = None
    tags: tuple[str, ...] = ()


def execute(store: Store, suite_name: str, params: SuiteParams | dict[str, Any],
            how: RunSettings = RunSettings(), resume: ResumePlan | None = None) -> int:
    """Run one suite to completion and return its run id.

    ``params``: the suite's :class:`~.params.SuiteParams` or a mapping of its fields
    (missing ones at their default; an unknown key is an ``InputError``); the run
    stores their ``asdict()``. ``resume`` (:func:`~.resume.plan_resume`, checked before
    this is called) continues that run under its stored params instead.

    Raises :class:`RunFailed` or :class:`RunInterrupted` after recording the status,
    ``RunLost`` if another process took the run over, :class:`StatusNotSaved` if the
    final status could not be written. Checkpoints are removed when the run finishes (a
    resume uses its plan's folder).
    """
    suite = get_suite(suite_name)
    try:
        beat = heartbeat_seconds()  # a bad setting is refused before a run exists
        kernels.default_build()  # XNORBENCH_KERNEL_BUILD
        workers()  # XNORBENCH_LOADER_WORKERS
        if how.threads:
            torch.set_num_threads(how.threads)
        opened = _open_run(store, suite, params, how, resume)
        for tag in how.tags:
            store.tag(opened.run_id, tag)
        database = store.database_id()
    except BaseException:
        distributed.announce(None)  # the other processes stop too
        raise
    run_id, typed = opened.run_id, opened.params
    ctx = SuiteContext(run_id=run_id, store=store, device=how.device,
                       progress=Progress(enabled=how.progress),
                       checkpoint_dir=opened.root / f"db-{database[:12]}",
                       resume=resume is not None,
                       binding={"database": database, "run": run_id})
    distributed.announce({"run_id": run_id, "params": typed.asdict(), "device": how.device,
                           "threads": torch.get_num_threads(), "resume": ctx.resume,
                           "checkpoint_dir": str(ctx.checkpoint_dir),
                           "binding": ctx.binding})
    stream = _RowStream()
    try:
        missing = stream.run(store, suite, ctx, typed, beat)
    except RunLost:
        raise
    except DatabaseGone as exc:
        raise DatabaseGone(exc.path, f"{exc.how}; run {run_id} stopped, its checkpoints are "
                           f"kept in {ctx.run_dir}") from None
    except InputError as exc:
        if stream.written == 0 and opened.before is None:  # refused: as if never started
            store.delete_run(run_id)
            raise RunRejected(exc) from None
        if stream.written == 0 and opened.before is not None:  # a resume refused
            finish(store, run_id, *opened.before)  # the run as it was
            raise RunRejected(exc) from None
        finish(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise RunFailed(run_id, exc) from exc
    except KeyboardInterrupt:
        finish(store, run_id, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
        raise RunInterrupted(run_id) from None
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        finish(store, run_id, "failed", text)
        raise RunFailed(run_id, exc) from exc
    _close(store, run_id, ctx, stream.busy, missing)
    return run_id


@dataclass(frozen=True)
class _OpenedRun:
    """A run row this process owns: new, or an unfinished one claimed for a resume
    (``before``: its status and error then, restored if the resume is refused)."""

    run_id: int
    params: SuiteParams
    root: Path
    before: tuple[str, str | None] | None


def _open_run(store: Store, suite: Suite, params: SuiteParams | dict[str, Any],
              how: RunSettings, resume: ResumePlan | None) -> _OpenedRun:
    """Start the run, or claim the one ``resume`` plans to continue (a run taken by
    another process since the plan was made is refused); ``InputError``, nothing written,
    otherwise."""
    w = distributed.world()
    if w.active and not suite.distributed:
        raise InputError(f"{suite.name} runs in one process; launch it without torchrun")
    if resume is None:
        typed = coerce(params, suite.params, strict=True)
        root = Path(how.checkpoint_dir or "checkpoints")
        context = {**capture(how.device, how.seed), "checkpoint_dir": str(root.resolve()),
                   **w.describe()}
        return _OpenedRun(store.start_run(suite.name, typed.asdict(), context, how.command),
                          typed, root, None)
    try:
        store.claim_run(resume.run_id)
    except DBError as exc:
        raise InputError(f"--resume {resume.run_id}: {exc}") from None
    return _OpenedRun(resume.run_id, resume.params, resume.checkpoint_root, resume.before)


class _RowStream:
    """The suite's rows stored as they come, under the heartbeat and with SIGTERM as
    Ctrl-C; counts what it wrote and why rows were measured on a busy machine."""

    def __init__(self) -> None:
        self.written = 0
        self.busy: list[str] = []

    def run(self, store: Store, suite: Suite, ctx: SuiteContext, typed: SuiteParams,
            beat: float) -> list[str]:
        """Store every row; the rows a complete run still lacks (its ``check``)."""
        lost = threading.Event()
        why: list[BaseException] = []
        try:
            with sigterm_as_interrupt(), heartbeat(store, ctx.run_id, beat, lost, why), \
                    ctx.progress:
                for row in build_rows():  # before any timer starts
                    store.add_rows(ctx.run_id, [row])
                for row in suite.fn(ctx, typed):
                    store.add_rows(ctx.run_id, [row])
                    self.written += 1
                    if (row.params or {}).get("busy"):
                        self.busy.append(row.params["busy"])
            return suite.check(ctx, typed) if suite.check else []
        except KeyboardInterrupt:
            if lost.is_set():  # the heartbeat found the run taken over
                raise (why[0] if why else RunLost(ctx.run_id)) from None
            raise


def _close(store: Store, run_id: int, ctx: SuiteContext, busy: list[str],
           missing: list[str]) -> None:
    """Mark a run whose suite ended: ``finished`` (its checkpoints removed) or, missing
    rows, ``failed``; say once if rows were measured on a busy machine or the rows are
    still in SQLite's log."""
    if busy:  # the rows carry the flag; the user hears it once
        log.warning("note: run %d: %d row(s) measured on a busy machine (%s); their params "
                    "say busy=..., the tables mark them", run_id, len(busy), busy[0])
    if missing:
        incomplete = IncompleteRun(run_id, missing)
        finish(store, run_id, "failed", str(incomplete))
        raise RunFailed(run_id, incomplete)
    finish(store, run_id, "finished")
    ctx.discard_checkpoints()
    if not store.folded:
        path = store.path
        log.warning("note: run %d's rows are committed, but still in %s-wal beside the "
                    "database (another connection holds it open, or the file is not "
                    "writable): copying %s alone would miss them; copy it with "
                    "`sqlite3 %s \".backup copy.db\"`", run_id, path, path, path)


def build_rows() -> list[Row]:
    """Load the XNOR kernels this program uses, compiling them if this machine has no
    current build, so that no suite's timer contains the build; a build that compiled
    here is a row of its own (``kernel_build_s``)."""
    build = kernels.default_build()
    before = build in kernels.BUILD_SECONDS
    kernels.load_kernels(build=build)
    if before or build not in kernels.BUILD_SECONDS:
        return []
    return [Row("kernel_build_s", kernels.BUILD_SECONDS[build], "s",
                params={"build": build, "kernel_isa": kernels.kernel_isa(build=build),
                        "note": "compiled before the suite's first timer"})]


class NullStore:
    """What a process other than rank 0 writes through: nothing. Reads find nothing;
    what a suite must know from the database (which trainings are done) it gets from
    rank 0 by broadcast."""

    def results(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def add_rows(self, *args: Any, **kwargs: Any) -> None:
        return None

    def delete_results_after(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def delete_rows(self, *args: Any, **kwargs: Any) -> int:
        return 0


def follow(suite_name: str) -> int | None:
    """A process other than rank 0 of a torchrun launch: receive the run rank 0 opened,
    train in lockstep, write nothing. Returns the run id (None if rank 0 refused it)."""
    suite = get_suite(suite_name)
    info = distributed.receive()
    if info is None:
        return None
    torch.set_num_threads(info["threads"])
    ctx = SuiteContext(run_id=info["run_id"], store=NullStore(),  # type: ignore[arg-type]
                       device=info["device"], progress=Progress(enabled=False),
                       checkpoint_dir=Path(info["checkpoint_dir"]), resume=info["resume"],
                       binding=info["binding"])
    with sigterm_as_interrupt():
        params = suite.params.from_stored(info["params"])
        deque(suite.fn(ctx, params), maxlen=0)  # train; the rows are rank 0's
    return int(info["run_id"])


class IncompleteRun(XnorbenchError):
    """The suite ended but rows a complete run holds are missing; the run is ``failed``."""

    def __init__(self, run_id: int, missing: list[str]) -> None:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more"
                                          if len(missing) > 5 else "")
        super().__init__(f"run {run_id} is incomplete: missing {shown}")
        self.missing = missing
