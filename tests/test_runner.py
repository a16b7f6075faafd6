"""Run lifecycle: rows stream in as produced; failures and interrupts are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnorbench.db import Row, Store
from xnorbench.runs import registry
from xnorbench.runs.runner import RunFailed, RunInterrupted, execute


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "life.db"))


@pytest.fixture()
def temp_suite():
    names = []

    def add(name, fn):
        registry.register(name, "test suite", {})(fn)
        names.append(name)

    yield add
    for n in names:
        registry.REGISTRY.pop(n, None)


def test_failing_suite_keeps_rows_and_error(store: Store, temp_suite):
    def boom(ctx, params):
        yield Row("a", 1.0)
        yield Row("b", 2.0)
        raise RuntimeError("kaboom at step 3")

    temp_suite("t_boom", boom)
    with pytest.raises(RunFailed):
        execute(store, "t_boom", {}, progress=False)
    (run,) = store.runs()
    assert run.status == "failed"
    assert "kaboom at step 3" in run.error
    assert [r.metric for r in store.results([run.id])] == ["a", "b"]
    assert run.ended_at is not None


def test_interrupted_suite_marked_interrupted(store: Store, temp_suite):
    def ctrl_c(ctx, params):
        yield Row("a", 1.0)
        raise KeyboardInterrupt

    temp_suite("t_int", ctrl_c)
    with pytest.raises(RunInterrupted):
        execute(store, "t_int", {}, progress=False)
    (run,) = store.runs()
    assert run.status == "interrupted"
    assert [r.metric for r in store.results([run.id])] == ["a"]


def test_rows_are_committed_as_they_arrive(store: Store, temp_suite):
    seen_counts = []

    def watcher(ctx, params):
        for i in range(3):
            yield Row("x", float(i))
            seen_counts.append(Store(ctx.store.engine).count_results())

    temp_suite("t_watch", watcher)
    run_id = execute(store, "t_watch", {"k": 1}, progress=False, seed=5)
    assert seen_counts == [1, 2, 3]
    run = store.run(run_id)
    assert run.status == "finished" and run.params == {"k": 1} and run.seed == 5


def test_unknown_suite(store: Store):
    with pytest.raises(ValueError, match="unknown suite"):
        execute(store, "no_such_suite", {}, progress=False)


def test_newer_schema_refused(tmp_path: Path):
    from sqlalchemy import text

    from xnorbench.db import DBError

    path = str(tmp_path / "v.db")
    s = Store.open(path)
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE xnorbench_meta SET value='99' WHERE key='schema_version'"))
    with pytest.raises(DBError, match="newer"):
        Store.open(path)
