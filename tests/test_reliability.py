"""Faults: signals to a real child process, SIGKILL and stale runs, concurrent writers,
schema upgrades, more bad input, NaN losses, and reproducibility."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store

from .conftest import make_mnist, write_idx

runner = CliRunner()


def _child(db: str, data: Path, *extra: str, epochs: int = 30) -> subprocess.Popen:
    env = dict(os.environ, XNORBENCH_HEARTBEAT_S="0.3", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "xnorbench.cli", "--db", db, "run", "accuracy", "--model",
           "lenet5", "--epochs", str(epochs), "--batch-size", "32", "--data-dir", str(data),
           "--device", "cpu", "--threads", "1", "--no-progress", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_rows(db: str, metric: str, n: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Path(db).exists():
            with contextlib.suppress(Exception):  # the child may still be creating it
                if len(Store.open(db).results(metric=metric)) >= n:
                    return
        time.sleep(0.2)
    raise AssertionError(f"no {n} {metric} rows within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_interrupts_then_resume_completes(tmp_path: Path, sig):
    data = make_mnist(tmp_path / "data", n_train=640, n_test=64)
    db = str(tmp_path / "sig.db")
    proc = _child(db, data, epochs=12)
    _wait_rows(db, "test_accuracy", 2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out.decode()
    store = Store.open(db)
    (run,) = store.runs()
    assert run.status == "interrupted"
    kept = store.results([run.id], metric="test_accuracy")
    assert len(kept) >= 2
    (ckpt,) = (tmp_path / "checkpoints").glob(f"db-*/run-{run.id}/float-seed0.pt")

    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--resume", str(run.id),
                              "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    run = store.run(run.id)
    assert run.status == "finished"
    for variant in ("float", "xnor"):
        epochs = [r.epoch for r in store.results([run.id], metric="test_accuracy",
                                                 variant=variant)]
        assert sorted(epochs) == list(range(1, 13)), (variant, epochs)
        for metric in ("final_test_accuracy", "best_test_accuracy"):
            assert len(store.results([run.id], metric=metric, variant=variant)) == 1
    assert len(store.results([run.id], metric="dataset_size")) == 1
    assert len(store.results([run.id], metric="packed_test_accuracy")) == 1
    assert not list(ckpt.parent.glob("*.pt"))  # resume state removed once finished
    assert list(ckpt.parent.glob("*.packed"))  # the trained packed network stays


def test_sigkill_leaves_stale_run_that_can_be_closed(tmp_path: Path):
    data = make_mnist(tmp_path / "data", n_train=640, n_test=64)
    db = str(tmp_path / "kill.db")
    proc = _child(db, data, epochs=50)
    _wait_rows(db, "test_accuracy", 1)
    proc.kill()
    proc.wait(timeout=30)
    store = Store.open(db)
    (run,) = store.runs()
    assert run.status == "running"
    time.sleep(2.0)  # heartbeats stopped with the process
    res = runner.invoke(app, ["--db", db, "runs", "--stale-minutes", "0.02"])
    assert res.exit_code == 0 and "(stale)" in res.output
    res = runner.invoke(app, ["--db", db, "runs", "mark-stale", "--minutes", "0.02"])
    assert res.exit_code == 0 and f"[{run.id}]" in res.output
    run = store.run(run.id)
    assert run.status == "interrupted" and "no heartbeat" in run.error
    assert store.results([run.id], metric="test_accuracy")  # rows kept


def test_live_run_is_not_stale(tmp_path: Path):
    data = make_mnist(tmp_path / "data", n_train=640, n_test=64)
    db = str(tmp_path / "live.db")
    proc = _child(db, data, epochs=50)
    try:
        _wait_rows(db, "test_accuracy", 1)
        time.sleep(1.5)
        res = runner.invoke(app, ["--db", db, "runs", "--stale-minutes", "0.02"])
        assert "running" in res.output and "(stale)" not in res.output
    finally:
        proc.kill()
        proc.wait(timeout=30)


WRITER = """
import sys
from xnorbench.db import Row, Store
from xnorbench.runs.environment import capture
store = Store.open(sys.argv[1])
rid = store.start_run("writer", {"i": int(sys.argv[2])}, capture("cpu"))
for j in range(int(sys.argv[3])):
    store.add_rows(rid, [Row("value", float(j), params={"w": int(sys.argv[2])})])
store.finish_run(rid, "finished")
"""


def run_writers(url: str, n_proc: int = 4, rows: int = 150) -> Store:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(i), str(rows)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(n_proc)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()
        assert b"locked" not in out
    return Store.open(url)


def test_concurrent_writers_sqlite_lose_nothing(tmp_path: Path):
    store = run_writers(str(tmp_path / "conc.db"))
    runs = store.runs(suite="writer")
    assert len(runs) == 4 and all(r.status == "finished" for r in runs)
    assert store.count_results() == 600
    for r in runs:
        assert sorted(x.value for x in store.results([r.id])) == [float(j) for j in range(150)]


def test_sweep_shards_in_parallel_processes(tmp_path: Path):
    db = str(tmp_path / "shards.db")
    cmd = [sys.executable, "-m", "xnorbench.cli", "--db", db, "sweep", "--channels", "16,32",
           "--kernel", "1,3", "--rounds", "1", "--no-progress", "--float-engines", "eager"]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/4"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for i in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out.decode()
    store = Store.open(db)
    assert len(store.runs(suite="sweep", status="finished")) == 4
    assert len(store.results(metric="speedup")) == 4  # 2 channel points + 2 kernel points
    res = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"])
    # four processes on fewer cores load the machine: a point may say so, not fail
    checks = [line.rsplit("|", 2)[-2].strip() for line in res.output.splitlines()
              if "| channels |" in line or "| kernel |" in line]
    assert len(checks) == 4 and set(checks) <= {"ok", "ok, busy machine"}, checks


def test_pre_alembic_v2_file_upgraded_through_alembic(tmp_path: Path):
    """A version-2 file (before Alembic: no alembic_version table) is stamped at its
    revision, then upgraded in place; `db current` reports before and after."""
    import sqlite3

    path = tmp_path / "v2.db"
    s = Store.open(str(path))
    rid = s.start_run("accuracy", {}, {})
    s.add_rows(rid, [Row("m", 1.0)])
    s.engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN owner")
        conn.execute("DROP TABLE alembic_version")
        conn.execute("UPDATE xnorbench_meta SET value='2' WHERE key='schema_version'")
    res = runner.invoke(app, ["--db", str(path), "db", "current"])
    assert res.exit_code == 0 and "revision 0002, schema version 2: behind the head" in \
        res.output and "db upgrade" in res.output, res.output
    res = runner.invoke(app, ["--db", str(path), "db", "upgrade"])
    assert res.exit_code == 0 and "upgraded from revision 0002 to 0005" in res.output
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        assert "owner" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert [r.value for r in Store.open(str(path)).results([rid])] == [1.0]  # nothing lost
    res = runner.invoke(app, ["--db", str(path), "db", "current"])
    assert "revision 0005, schema version 5: the head" in res.output


def test_unknown_alembic_revision_refused_as_newer(tmp_path: Path):
    import sqlite3

    path = tmp_path / "new.db"
    Store.open(str(path)).engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num='9999'")
    res = runner.invoke(app, ["--db", str(path), "runs"])
    assert res.exit_code == 2 and "newer than this xnorbench understands" in res.output


def make_v1_db(url: str) -> tuple[int, int]:
    """A database as schema version 1 left it: no seed/recipe_key columns, no run_tags.

    Returns (run id, id of a training row) of one v1 accuracy run.
    """
    from sqlalchemy import text

    store = Store.open(url)
    params = {"epochs": 2, "batch_size": 16, "lr": 0.1, "optimizer": "sgd",
              "weight_decay": 5e-4, "grad_rule": "corrected", "seed": 3, "amp": False,
              "channels_last": False, "train_size": 96, "test_size": 48, "device": "cpu"}
    rid = store.start_run("accuracy", {"dataset": "mnist"}, {})
    store.add_rows(rid, [Row("dataset_size", 96.0, dataset="mnist")])
    store.add_rows(rid, [Row("final_test_accuracy", 91.5, "%", dataset="mnist",
                             model="lenet5", variant="xnor", epoch=2, params=params)])
    row_id = store.results([rid], metric="final_test_accuracy")[0].id
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE run_tags"))
        conn.execute(text("DROP INDEX ix_results_recipe_key"))
        conn.execute(text("ALTER TABLE results DROP COLUMN recipe_key"))
        conn.execute(text("ALTER TABLE results DROP COLUMN seed"))
        conn.execute(text("ALTER TABLE runs DROP COLUMN owner"))
        conn.execute(text("UPDATE xnorbench_meta SET value='1' WHERE key='schema_version'"))
        conn.execute(text("DROP TABLE alembic_version"))  # v1 predates Alembic
    store.engine.dispose()
    return rid, row_id


def check_v1_upgraded(url: str) -> None:
    """A v1 file opened by this version: upgraded through every migration to the current
    schema, rows intact, keys and seeds filled in."""
    from sqlalchemy import inspect, text

    from xnorbench.db import SCHEMA_VERSION
    from xnorbench.training.recipes import Recipe, recipe_key

    rid, row_id = make_v1_db(url)
    store = Store.open(url)
    with store.engine.connect() as conn:
        cols = {c["name"] for c in inspect(conn).get_columns("results")}
        version = conn.execute(text(
            "SELECT value FROM xnorbench_meta WHERE key='schema_version'")).scalar_one()
        run_cols = {c["name"] for c in inspect(conn).get_columns("runs")}
    assert {"seed", "recipe_key"} <= cols and "owner" in run_cols
    assert version == str(SCHEMA_VERSION)
    (row,) = [r for r in store.results([rid]) if r.id == row_id]
    assert row.value == 91.5 and row.seed == 3
    # what v1 trained: sgd, momentum 0.9 + nesterov, decay on weights, cosine schedule
    want = recipe_key(Recipe(epochs=2, batch_size=16, lr=0.1, weight_decay=5e-4),
                      dataset="mnist", model="lenet5", train_size=96, test_size=48)
    assert row.recipe_key == want
    assert [r.recipe_key for r in store.results([rid], metric="dataset_size")] == [None]
    assert store.tag(rid, "old") and store.tags([rid]) == {rid: ["old"]}


def test_schema_v1_file_upgraded_with_recipe_keys(tmp_path: Path):
    check_v1_upgraded(str(tmp_path / "v1.db"))


def test_the_migrations_frozen_recipe_key_equals_the_live_one():
    """Revision 0002 carries its own copy of the v1 recipe key (no import of the live
    recipe code); today both give the same key for every kind of v1 training row."""
    import importlib.util

    from xnorbench.db.migrate import MIGRATIONS_DIR
    from xnorbench.training.recipes import Recipe, recipe_key

    path = MIGRATIONS_DIR / "versions" / "0002_seeds_recipe_keys_tags.py"
    spec = importlib.util.spec_from_file_location("rev0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for params, dataset in (
            ({"epochs": 2, "batch_size": 16, "lr": 0.1, "train_size": 96, "test_size": 48},
             "mnist"),
            ({"epochs": 5, "optimizer": "adam", "amp": True, "train_size": 9,
              "test_size": 3}, "cifar10"),
            ({"epochs": 1, "weight_decay": 0.0}, "mnist")):
        known = {k: params[k] for k in ("epochs", "batch_size", "optimizer", "lr",
                                        "weight_decay", "amp") if k in params}
        live = recipe_key(Recipe(**known), dataset=dataset, model="lenet5",
                          train_size=params.get("train_size", 0),
                          test_size=params.get("test_size", 0))
        assert module.legacy_recipe_key(params, dataset, "lenet5") == live, params
    assert module.legacy_recipe_key({"x": 1}, "mnist", "lenet5") is None


def test_db_without_migration_path_refused(tmp_path: Path):
    from sqlalchemy import text

    from xnorbench.db import DBError

    path = str(tmp_path / "old2.db")
    s = Store.open(path)
    with s.engine.begin() as conn:  # a version no revision stands for, before Alembic
        conn.execute(text("UPDATE xnorbench_meta SET value='0' WHERE key='schema_version'"))
        conn.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(DBError, match="no migration from schema version 0"):
        Store.open(path)


@pytest.mark.parametrize("args,message", [
    (["--db", "/proc/xnorbench-test.db", "runs", "tag", "1", "x"], "cannot use database"),
    (["--db", "/proc/xnorbench-test.db", "runs"], "no results database at /proc"),
    (["run", "accuracy", "--epochs", "x"], "Invalid value"),
    (["run", "accuracy", "--dataset", "cifar100"], "unknown dataset"),
    (["sweep", "--channels", "-16"], "at least 1"),
    (["sweep", "--channels", "16,,32"], "comma-separated"),
    (["sweep", "--kernel", "15"], "kernel 15 is larger than the 14x14 input"),
    (["run", "timing", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["run", "compare", "--rules", "paper,bogus"], "unknown grad rule 'bogus'"),
])
def test_more_bad_input(tmp_path: Path, args, message):
    if "--db" not in args:
        args = ["--db", str(tmp_path / "b.db"), *args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_truncated_idx_file(tmp_path: Path):
    data = make_mnist(tmp_path / "data")
    f = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    db = tmp_path / "t.db"
    res = runner.invoke(app, ["--db", str(db), "run", "accuracy", "--data-dir", str(data),
                              "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "could not be read" in res.output and "Traceback" not in res.output
    assert Store.open(str(db)).runs() == []  # nothing written


def test_labels_and_images_disagree(tmp_path: Path):
    import torch

    data = make_mnist(tmp_path / "data")
    write_idx(data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", torch.zeros(5, dtype=torch.uint8))
    res = runner.invoke(app, ["--db", str(tmp_path / "l.db"), "run", "accuracy", "--data-dir",
                              str(data), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_nan_loss_fails_run_naming_epoch(tmp_path: Path, mnist_dir: Path, monkeypatch):
    from xnorbench.runs import options

    monkeypatch.setattr(options, "MAX_LR", 1e31)  # the cap refuses 1e30; the guard stays
    db = str(tmp_path / "nan.db")
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir),
                              "--variant", "float", "--lr", "1e30", "--batch-size", "16",
                              "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "non-finite training loss" in res.output and "epoch 1" in res.output
    (run,) = Store.open(db).runs()
    assert run.status == "failed" and "epoch 1" in run.error


def test_same_seed_same_rows_and_command_recorded(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "rep.db")
    args = ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir), "--epochs", "2",
            "--batch-size", "16", "--device", "cpu", "--threads", "1", "--no-progress",
            "--seed", "3"]
    for _ in range(2):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    store = Store.open(db)
    a, b = sorted(store.runs(), key=lambda r: r.id)
    for metric in ("train_loss", "test_accuracy", "test_loss"):
        va = [(r.variant, r.epoch, r.value) for r in store.results([a.id], metric=metric)]
        vb = [(r.variant, r.epoch, r.value) for r in store.results([b.id], metric=metric)]
        assert va == vb, metric
    res = runner.invoke(app, ["--db", db, "runs", "show", str(a.id), "--json"])
    shown = json.loads(res.output)
    assert shown["params"]["seeds"] == [3] and shown["seed"] == 3 and shown["threads"] == 1
    assert shown["command"].startswith("xnorbench")


def test_version_4_variant_names_renamed_to_one_vocabulary(tmp_path: Path):
    """Schema 5 renames what v4 rows called ``xnor`` by what was measured: the packed
    kernel (timing, sweep), the fused step, or the BinOp step of a run that predates the
    fused path; the simulated network keeps ``xnor``; a run without a device ran on the
    CPU. Training rows of other suites are untouched."""
    import sqlite3

    path = tmp_path / "v4.db"
    store = Store.open(str(path))
    old = {}  # (suite, tag) -> run id
    for suite, tag, rows in (
            ("timing", "new", [("inference_latency_ms", "xnor"),
                               ("inference_latency_ms", "xnor_simulated"),
                               ("layer_binary_pct_of_peak", "xnor"),
                               ("train_step_ms", "xnor"), ("train_step_ms", "xnor_binop")]),
            ("timing", "pre-fused", [("train_step_ms", "xnor"), ("train_step_ms", "float")]),
            ("memory", "new", [("train_rss_increase_mib", "xnor"),
                               ("train_rss_increase_mib", "xnor_binop"),
                               ("inference_rss_increase_mib", "xnor"),
                               ("layer_saved_activation_kib", "xnor"),
                               ("packed_model_mib", "xnor")]),
            ("memory", "pre-fused", [("train_saved_activation_mib", "xnor")]),
            ("sweep", "new", [("binary_ms", "xnor"), ("float_ms", "float")]),
            ("accuracy", "new", [("final_test_accuracy", "xnor"),
                                 ("train_loss", "xnor")])):
        rid = store.start_run(suite, {}, {})
        store.add_rows(rid, [Row(m, 1.0, variant=v) for m, v in rows])
        store.finish_run(rid, "finished")
        old[(suite, tag)] = rid
    store.engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET device = NULL")
        conn.execute("UPDATE alembic_version SET version_num='0004'")
        conn.execute("UPDATE xnorbench_meta SET value='4' WHERE key='schema_version'")
    store = Store.open(str(path))  # upgraded on open

    def names(key: tuple[str, str]) -> list[tuple[str, str]]:
        return [(r.metric, r.variant) for r in store.results([old[key]])]

    assert names(("timing", "new")) == [
        ("inference_latency_ms", "xnor_packed"), ("inference_latency_ms", "xnor"),
        ("layer_binary_pct_of_peak", "xnor_packed"), ("train_step_ms", "xnor_fused"),
        ("train_step_ms", "xnor_binop")]
    assert names(("timing", "pre-fused")) == [("train_step_ms", "xnor_binop"),
                                              ("train_step_ms", "float")]
    assert names(("memory", "new")) == [
        ("train_rss_increase_mib", "xnor_fused"), ("train_rss_increase_mib", "xnor_binop"),
        ("inference_rss_increase_mib", "xnor"), ("layer_saved_activation_kib", "xnor_fused"),
        ("packed_model_mib", "xnor")]
    assert names(("memory", "pre-fused")) == [("train_saved_activation_mib", "xnor_binop")]
    assert names(("sweep", "new")) == [("binary_ms", "xnor_packed"), ("float_ms", "float")]
    assert names(("accuracy", "new")) == [("final_test_accuracy", "xnor"),
                                          ("train_loss", "xnor")]
    assert {r.device for r in store.runs()} == {"cpu"}
