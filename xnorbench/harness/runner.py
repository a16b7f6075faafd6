"""The runner: opens a run row, streams a suite's rows into the db, closes the run.

Every row is committed as it arrives, so a crash keeps all rows produced before it.
Ctrl-C or SIGTERM ends the run ``interrupted``; an exception ends it ``failed`` with the
error text. A ``--resume`` reopens an interrupted or failed run and lets the suite pick
up from its checkpoints.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from ..db import Store
from .environment import capture
from .progress import Progress
from .registry import InputError, SuiteContext, get_suite


class RunFailed(Exception):
    """The suite raised; the run row says ``failed``."""

    def __init__(self, run_id: int, error: BaseException) -> None:
        super().__init__(f"run {run_id} failed: {type(error).__name__}: {error}")
        self.run_id = run_id
        self.error = error


class RunRejected(Exception):
    """The suite refused its input before producing a row; the run row was removed."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RunInterrupted(Exception):
    """Ctrl-C / SIGTERM; the run row says ``interrupted``."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} interrupted; continue it with --resume {run_id}")
        self.run_id = run_id


def heartbeat_seconds() -> float:
    """``XNORBENCH_HEARTBEAT_S`` (default 30): a positive, finite number of seconds."""
    raw = os.environ.get("XNORBENCH_HEARTBEAT_S", "30")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise InputError(f"XNORBENCH_HEARTBEAT_S={raw!r}: give a positive number of seconds")
    return value


@contextmanager
def heartbeat(store: Store, run_id: int, every: float | None = None) -> Iterator[None]:
    """Touch the run's heartbeat from a daemon thread while the suite works.

    A run whose process dies (SIGKILL, power loss) stops beating; ``xnorbench runs``
    then shows it as stale and ``runs mark-stale`` can close it.
    """
    every = heartbeat_seconds() if every is None else every
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            with suppress(Exception):  # a busy db must not kill the run; next beat retries
                store.heartbeat(run_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(store: Store, suite_name: str, params: dict[str, Any], *, device: str = "cpu",
            seed: int | None = None, command: str | None = None, progress: bool = True,
            checkpoint_dir: Path | str = "checkpoints", resume_run: int | None = None,
            threads: int | None = None, tags: list[str] | None = None) -> int:
    """Run one suite to completion and return its run id (``tags`` name the run).

    Raises :class:`RunFailed` or :class:`RunInterrupted` after recording the status.
    """
    suite = get_suite(suite_name)
    beat = heartbeat_seconds()  # a bad XNORBENCH_HEARTBEAT_S is refused before a run exists
    if threads:
        torch.set_num_threads(threads)
    if resume_run is not None:
        run = store.run(resume_run)
        if run is None:
            raise ValueError(f"--resume {resume_run}: no such run")
        if run.suite != suite_name:
            raise ValueError(f"--resume {resume_run}: run is a {run.suite!r} run")
        if run.status == "finished":
            raise ValueError(f"--resume {resume_run}: run already finished")
        params = dict(run.params)
        store.reopen_run(resume_run)
        run_id = resume_run
    else:
        run_id = store.start_run(suite_name, params, capture(device, seed), command)
    for tag in tags or []:
        store.tag(run_id, tag)
    ctx = SuiteContext(run_id=run_id, store=store, device=device,
                       progress=Progress(enabled=progress),
                       checkpoint_dir=Path(checkpoint_dir), resume=resume_run is not None)
    written = 0
    try:
        with sigterm_as_interrupt(), heartbeat(store, run_id, beat), ctx.progress:
            for row in suite.fn(ctx, params):
                store.add_rows(run_id, [row])
                written += 1
    except InputError as exc:
        if written == 0 and resume_run is None:
            store.delete_run(run_id)
            raise RunRejected(exc) from None
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise RunFailed(run_id, exc) from exc
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
        raise RunInterrupted(run_id) from None
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        store.finish_run(run_id, "failed", text)
        raise RunFailed(run_id, exc) from exc
    store.finish_run(run_id, "finished")
    return run_id
