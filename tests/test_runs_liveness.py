"""The runner's liveness (runs/liveness.py, runs/runner.py) against a real child process:
SIGINT and SIGTERM end a run interrupted and --resume completes it, SIGKILL leaves a
run whose heartbeat goes stale and can be closed, a live run is never called stale."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

from .conftest import make_mnist

runner = CliRunner()
EPOCHS = 6
"""Epochs of the interrupted runs: the signal comes at float's epoch 2, the resume trains
the rest (float's 4 and XNOR's 6)."""

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
    data = make_mnist(tmp_path / "data", n_train=320, n_test=64)
    db = str(tmp_path / "sig.db")
    proc = _child(db, data, epochs=EPOCHS)
    _wait_rows(db, "test_accuracy", 2)  # float's epoch 2 of 6: 10 epochs still to train
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
        assert sorted(epochs) == list(range(1, EPOCHS + 1)), (variant, epochs)
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
