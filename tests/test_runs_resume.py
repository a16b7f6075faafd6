"""Fault injection: real signals at exact points of a run (``XNORBENCH_FAULT``), then
``mark-stale`` and ``--resume``. After every fault the finished run holds each epoch's
rows exactly once and every summary row, and no run is ``finished`` with a row missing.
Also: one owner per run, checkpoints bound to their database and run, the final status
write, damaged and incomplete database files, and options given beside ``--resume``."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store
from xnorbench.db.faults import parse
from xnorbench.suites.common import EPOCH_METRICS, PACKED_METRICS
from xnorbench.suites.sweep import POINT_METRICS

from .conftest import make_mnist
from .helpers import SWEEP, cli, cli_here, make_v1_db

runner = CliRunner()
EPOCHS = 3
TRAIN = ["run", "accuracy", "--model", "lenet5", "--epochs", str(EPOCHS), "--batch-size", "32",
         "--device", "cpu", "--threads", "1", "--no-progress"]
SWEEP_POINTS = {("channels", 16), ("channels", 32), ("channels", 64), ("kernel", 32)}


def close_dead_run(db: str) -> None:
    """What a user does after a SIGKILL: wait for the heartbeat to go stale, mark it."""
    time.sleep(1.0)
    res = runner.invoke(app, ["--db", db, "runs", "mark-stale", "--minutes", "0.01"])
    assert res.exit_code == 0 and "[1]" in res.output, res.output


def training_counts(store: Store, run_id: int) -> Counter:
    return Counter((r.metric, r.variant, r.epoch) for r in store.results([run_id]))


def assert_training_complete(store: Store, run_id: int) -> None:
    """Finished, every epoch's rows once, every summary row once (independent of the
    runner's own completeness check)."""
    run = store.run(run_id)
    assert run.status == "finished", run.error
    counts = training_counts(store, run_id)
    assert sum(v for (m, *_), v in counts.items() if m == "dataset_size") == 1
    for variant in ("float", "xnor"):
        for epoch in range(1, EPOCHS + 1):
            for metric in EPOCH_METRICS:
                assert counts[(metric, variant, epoch)] == 1, (metric, variant, epoch)
        summary = ["final_test_accuracy", "best_test_accuracy"]
        summary += list(PACKED_METRICS) if variant == "xnor" else []
        for metric in summary:
            assert counts[(metric, variant, EPOCHS)] == 1, (metric, variant)
    assert not [k for k, v in counts.items() if v != 1 and k[0] != "dataset_size"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("faults") / "data", n_train=256, n_test=64)


def test_fault_spec_is_checked():
    (f,) = parse("KILL@after:final_test_accuracy#2")
    assert (f.signal, f.where, f.metric, f.nth) == ("KILL", "after", "final_test_accuracy", 2)
    with pytest.raises(ValueError, match="SIGNAL@WHERE"):
        parse("KILL@during:x")


@pytest.mark.parametrize("fault", [
    "KILL@before:dataset_size",           # before the first row: dataset_size must follow
    "KILL@after:test_accuracy#2",         # mid-training, right after an epoch's row
    "KILL@after:final_test_accuracy#1",   # float trained, best_test_accuracy not yet
    "KILL@after:packed_test_accuracy#1",  # inside the XNOR network's summary rows
])
def test_sigkill_then_resume_gives_every_row_once(tmp_path: Path, data: Path, fault: str):
    db = str(tmp_path / "kill.db")
    rc, out = cli(db, *TRAIN, "--data-dir", str(data), fault=fault)
    assert rc == -signal.SIGKILL, out
    store = Store.open(db)
    assert store.run(1).status == "running"
    close_dead_run(db)
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 0, out
    assert_training_complete(store, 1)


def test_sigterm_inside_a_row_commit_loses_only_that_row(tmp_path: Path, data: Path):
    db = str(tmp_path / "term.db")
    rc, out = cli(db, *TRAIN, "--data-dir", str(data), fault="TERM@commit:test_accuracy#2")
    assert rc == 130, out
    store = Store.open(db)
    assert store.run(1).status == "interrupted"
    assert len(store.results([1], metric="test_accuracy")) == 1  # the second rolled back
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 0, out
    assert_training_complete(store, 1)


def sweep_counts(store: Store) -> Counter:
    return Counter(((r.params["sweep"], r.params["channels"]), r.metric)
                   for r in store.results([1]))


@pytest.mark.parametrize("fault", ["KILL@after:speedup#2", "KILL@commit:ceiling_speedup#1"])
def test_sweep_sigkill_then_resume_measures_each_point_once(tmp_path: Path, fault: str):
    db = str(tmp_path / "sweep.db")
    rc, out = cli(db, *SWEEP, fault=fault)
    assert rc == -signal.SIGKILL, out
    close_dead_run(db)
    rc, out = cli_here(db, "sweep", "--resume", "1", "--no-progress")
    assert rc == 0, out
    store = Store.open(db)
    assert store.run(1).status == "finished"
    counts = sweep_counts(store)
    assert {pt for pt, _ in counts} == SWEEP_POINTS
    assert all(counts[(pt, m)] == 1 for pt in SWEEP_POINTS for m in POINT_METRICS), counts
    assert all(n == 1 for n in counts.values()), counts  # the peers' rows too: once each


def test_a_run_missing_a_row_is_never_finished(tmp_path: Path, data: Path):
    """A row lost outside the resume's reach (here: deleted by hand) leaves the resumed
    run ``failed`` with the missing row named, not ``finished``."""
    db = str(tmp_path / "gap.db")
    rc, out = cli(db, *TRAIN, "--data-dir", str(data), fault="INT@after:final_test_accuracy#1")
    assert rc == 130, out
    store = Store.open(db)
    (gone,) = store.results([1], metric="test_accuracy", variant="float", epoch=1)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM results WHERE id = {gone.id}")
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 1, out
    assert "incomplete: missing test_accuracy epoch 1 of float seed 0" in out
    assert "Traceback" not in out
    assert store.run(1).status == "failed"


def test_one_owner_per_run(tmp_path: Path, data: Path):
    """SIGSTOP -> mark-stale -> --resume -> SIGCONT: the stopped process has lost the
    run; it writes nothing more and exits with one line, the resumed run completes."""
    db = str(tmp_path / "own.db")
    first = cli(db, *TRAIN, "--epochs", "6", "--data-dir", str(data), wait=False,
                fault="STOP@after:test_accuracy#1")
    deadline = time.time() + 120
    while time.time() < deadline:  # the child stops itself after its first epoch row
        if Path(f"/proc/{first.pid}/stat").read_text().split()[2] == "T":
            break
        time.sleep(0.1)
    else:
        first.kill()
        raise AssertionError("the child never stopped")
    # a resume of a run that is running (fresh or not) is refused
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 2 and "is running" in out and "mark-stale" in out, out
    close_dead_run(db)
    second = cli(db, "run", "accuracy", "--resume", "1", "--no-progress", wait=False)
    time.sleep(2.0)
    first.send_signal(signal.SIGCONT)
    out1, _ = first.communicate(timeout=120)
    out2, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out2.decode()
    assert first.returncode == 1, out1.decode()
    assert "no longer this process's" in out1.decode() and b"Traceback" not in out1
    store = Store.open(db)
    counts = training_counts(store, 1)
    assert counts[("final_test_accuracy", "float", 6)] == 1
    assert all(counts[("test_accuracy", v, e)] == 1 for v in ("float", "xnor")
               for e in range(1, 7)), counts
    assert store.run(1).status == "finished"


def test_checkpoints_are_bound_to_their_database_and_run(tmp_path: Path, data: Path):
    """Two databases' run 1 never share checkpoints, and a checkpoint from another
    database put in a run's folder is refused with one line instead of trained on."""
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    args = [*TRAIN, "--data-dir", str(data), "--variant", "float"]
    fault = "INT@after:test_accuracy#2"  # epoch 1's checkpoint is written
    assert cli(a, *args, fault=fault)[0] == 130
    assert cli(b, *args, "--lr", "0.05", fault=fault)[0] == 130
    ckpts = sorted((Path.cwd() / "checkpoints").glob("db-*/run-1/float-seed0.pt"))
    assert len(ckpts) == 2  # one folder per database
    b_dir = Path.cwd() / "checkpoints" / f"db-{Store.open(b).database_id()[:12]}" / "run-1"
    a_ckpt = next(p for p in ckpts if p.parent != b_dir)
    (b_dir / "float-seed0.pt").write_bytes(a_ckpt.read_bytes())
    rc, out = cli_here(b, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 2, out
    assert "belongs to database" in out and "Traceback" not in out
    assert Store.open(b).run(1).status == "failed"


def test_only_an_option_that_declares_itself_free_may_differ_on_resume(tmp_path: Path):
    """``--download`` changes how a run gets its data, not what it computes: its option
    says so (``resume_free``) and a resume accepts a new value; any other suite option
    that differs is refused."""
    from dataclasses import replace

    from xnorbench.errors import InputError
    from xnorbench.runs.registry import get_suite
    from xnorbench.runs.resume import plan_resume

    store = Store.open(str(tmp_path / "free.db"))
    rid = store.start_run("accuracy", {"download": False, "epochs": 3, "seeds": [0]},
                          {"device": "cpu"})
    store.finish_run(rid, "interrupted")
    suite = get_suite("accuracy")
    assert {o.name for o in suite.options if o.resume_free} == {"download"}
    new = {"download": True, "epochs": 3, "seeds": [0]}
    plan = plan_resume(store, suite, rid, given=new, named={"download"})
    assert (plan.run_id, plan.params.epochs, plan.params.download) == (rid, 3, False)
    bound = replace(suite, options=tuple(replace(o, resume_free=False) if o.name == "download"
                                         else o for o in suite.options))
    with pytest.raises(InputError, match="--download on differs"):  # undeclared: refused
        plan_resume(store, bound, rid, given=new, named={"download"})
    with pytest.raises(InputError, match="--epochs 4 differs"):
        plan_resume(store, suite, rid, given={**new, "epochs": 4}, named={"epochs"})
    with pytest.raises(InputError, match="--seed 5 differs"):  # compared as the seeds stored
        plan_resume(store, suite, rid, given={**new, "seeds": [5]}, named={"seed"})


def test_resume_keeps_the_options_it_started_with(tmp_path: Path, data: Path):
    db = str(tmp_path / "opts.db")
    args = [*TRAIN, "--data-dir", str(data), "--variant", "float"]
    assert cli(db, *args, fault="INT@after:test_accuracy#1")[0] == 130
    for extra, word in ((["--epochs", "5"], "--epochs 5 differs from the run's 3"),
                        (["--threads", "2"], "--threads 2 differs from the run's 1"),
                        (["--model", "nin"], "--model nin differs"),
                        (["--data-dir", str(tmp_path)], "--data-dir")):
        res = runner.invoke(app, ["--db", db, "run", "accuracy", "--resume", "1",
                                  "--no-progress", *extra])
        assert res.exit_code == 2 and word in res.output, (extra, res.output)
    assert Store.open(db).run(1).status == "interrupted"  # refused before touching it
    import torch

    torch.set_num_threads(2)
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--resume", "1", "--no-progress",
                              "--epochs", "3", "--data-dir", str(data)])  # same: accepted
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == 1  # resumed on the thread count the run records


def test_final_status_write_retried_then_one_line(tmp_path: Path, data: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    from xnorbench.runs import runner as runner_mod

    monkeypatch.setattr(runner_mod, "FINAL_WRITE_DELAYS", (0.0, 0.0))
    real = Store.finish_run
    calls: list[str] = []

    def flaky(self, run_id, status, error=None):
        calls.append(status)
        if len(calls) <= fails:
            raise OperationalError("UPDATE runs", {}, sqlite3.OperationalError(
                "database or disk is full"))
        return real(self, run_id, status, error)

    monkeypatch.setattr(Store, "finish_run", flaky)
    args = ["--db", str(tmp_path / "f.db"), *TRAIN, "--epochs", "1", "--data-dir", str(data),
            "--variant", "float"]
    fails = 2  # two failures, then it lands
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and calls == ["finished"] * 3, res.output
    calls.clear()
    fails = 99  # it never lands: one line with the real outcome, run left running
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception,
                                                                      SystemExit)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "run 2 ended finished" in lines[0], res.output
    assert "database or disk is full" in lines[0] and "mark-stale" in lines[0]
    assert "Traceback" not in res.output
    store = Store.open(str(tmp_path / "f.db"))
    assert store.run(2).status == "running" and store.results([2], metric="final_test_accuracy")


def test_signals_are_held_while_the_final_status_is_written():
    from xnorbench.runs.liveness import signals_deferred

    with signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C during cleanup
        time.sleep(0.05)
    with pytest.raises(KeyboardInterrupt):  # the usual handler is back afterwards
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)


def test_damaged_database_file_is_refused(tmp_path: Path):
    path = tmp_path / "damaged.db"
    store = Store.open(str(path))
    rid = store.start_run("writer", {}, {})
    for _ in range(40):
        store.add_rows(rid, [Row("v", 1.0, params={"pad": "x" * 200}) for _ in range(50)])
    store.finish_run(rid, "finished")
    store.engine.dispose()
    with open(path, "r+b") as f:  # garbage over pages in the middle of the results table
        f.seek(4096 * 20)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    for args in (["--db", str(path), "runs"],
                 ["--db", str(tmp_path / "other.db"), "runs", "import", str(path)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert f"{path}: the database file is damaged" in res.output
        assert "Traceback" not in res.output


def test_database_with_a_dropped_column_is_refused(tmp_path: Path):
    for version in ("current", "v1"):
        path = tmp_path / f"{version}.db"
        if version == "v1":
            make_v1_db(str(path))
        else:
            Store.open(str(path)).engine.dispose()
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE results DROP COLUMN unit")
        res = runner.invoke(app, ["--db", str(path), "runs"])
        assert res.exit_code == 2, res.output
        assert "table results lacks column(s) unit" in res.output
