"""Run lifecycle: rows stream in as produced; failures and interrupts are recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from xnorbench.db import Row, Store
from xnorbench.errors import InputError
from xnorbench.runs import registry
from xnorbench.runs.params import SuiteParams
from xnorbench.runs.runner import RunFailed, RunInterrupted, RunSettings, execute


@dataclass(frozen=True)
class KParams(SuiteParams):
    k: int = 0
    sizes: tuple[int, ...] = (1, 2)


@pytest.fixture(autouse=True, scope="module")
def _kernels_loaded() -> None:
    """The runner loads the kernels before a suite's first row and, where it had to
    compile them, stores the build time as a row of its own; these tests count a suite's
    rows, so the kernels are loaded (on a fresh machine: compiled) first."""
    from xnorbench.xnor.kernels import load_kernels

    load_kernels()


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "life.db"))


@pytest.fixture()
def temp_suite():
    names = []

    def add(name, fn):
        registry.register(name, "test suite", KParams)(fn)
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
        execute(store, "t_boom", {}, RunSettings(progress=False))
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
        execute(store, "t_int", {}, RunSettings(progress=False))
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
    run_id = execute(store, "t_watch", {"k": 1}, RunSettings(progress=False, seed=5))
    assert seen_counts == [1, 2, 3]
    run = store.run(run_id)
    assert run.status == "finished" and run.seed == 5
    assert run.params == {"k": 1, "sizes": [1, 2]}  # every field, lists for tuples


def test_a_suite_receives_its_typed_params_and_the_run_stores_their_asdict(store: Store,
                                                                          temp_suite):
    got = []

    def typed(ctx, p):
        got.append(p)
        yield Row("k", float(p.k + sum(p.sizes)))

    temp_suite("t_typed", typed)
    run_id = execute(store, "t_typed", KParams(k=2, sizes=(3,)), RunSettings(progress=False))
    assert got == [KParams(k=2, sizes=(3,))]
    assert store.run(run_id).params == {"k": 2, "sizes": [3]}
    run_id = execute(store, "t_typed", {"sizes": [4, 5]}, RunSettings(progress=False))
    assert got[-1] == KParams(k=0, sizes=(4, 5)) and isinstance(got[-1].sizes, tuple)
    assert store.results([run_id])[0].value == 9.0


def test_a_misspelt_parameter_is_refused_before_a_run_exists(store: Store, temp_suite):
    def never(ctx, p):
        raise AssertionError("must not run")
        yield

    temp_suite("t_typo", never)
    with pytest.raises(InputError, match="unknown parameter.*kk.*known: k, sizes"):
        execute(store, "t_typo", {"kk": 1}, RunSettings(progress=False))
    assert store.runs() == []


def test_an_old_runs_params_read_back_fill_new_fields_and_drop_gone_ones():
    old = {"k": 4, "retired_option": True}  # stored by an older version
    assert KParams.from_stored(old) == KParams(k=4, sizes=(1, 2))


def test_unknown_suite(store: Store):
    with pytest.raises(ValueError, match="unknown suite"):
        execute(store, "no_such_suite", {}, RunSettings(progress=False))


def test_newer_schema_refused(tmp_path: Path):
    from sqlalchemy import text

    from xnorbench.db import DBError

    path = str(tmp_path / "v.db")
    s = Store.open(path)
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE xnorbench_meta SET value='99' WHERE key='schema_version'"))
    with pytest.raises(DBError, match="newer"):
        Store.open(path)
