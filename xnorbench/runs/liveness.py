"""A running run's signs of life and its signals: the heartbeat a daemon thread writes
(a run whose process died stops beating and shows as stale), SIGTERM handled as Ctrl-C
while a suite works, and both held while the final status is written."""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..db import DatabaseGone, RunLost, Store
from ..errors import InputError


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
def heartbeat(store: Store, run_id: int, every: float | None = None,
              lost: threading.Event | None = None,
              why: list[BaseException] | None = None) -> Iterator[None]:
    """Touch the run's heartbeat from a daemon thread while the suite works.

    A run whose process dies (SIGKILL, power loss) stops beating; ``xnorbench runs``
    then shows it as stale and ``runs mark-stale`` can close it. If the run is no longer
    this process's (marked stale, resumed elsewhere) or its database file is gone, the
    beat sets ``lost`` (and puts the reason in ``why``) and interrupts the main thread,
    which then stops without writing.
    """
    every = heartbeat_seconds() if every is None else every
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                store.heartbeat(run_id)
            except (RunLost, DatabaseGone) as exc:
                if lost is not None and not stop.is_set():
                    if why is not None:
                        why.append(exc)
                    lost.set()
                    _thread.interrupt_main()
                return
            except Exception:  # a busy db must not kill the run; the next beat retries
                continue

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


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the final status is written (a second Ctrl-C during
    cleanup must not leave the run ``running`` with a traceback); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
