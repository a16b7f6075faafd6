"""Nothing silently wrong: faults that used to end in a ``finished`` line, lost rows, a run
on other data, a duplicate or a shared folder now stop loudly or are refused.

* the database file deleted or replaced mid-run: the run stops with one line naming the
  file, its checkpoints kept;
* ``--resume`` on other data (another folder, another XNORBENCH_DATA, other labels in the
  same files) is refused in one line and the run stays as it was;
* a finishing run whose write-ahead log cannot be folded (a reader holds it) says so,
  with the copy command that works, and does not wait a minute;
* two ``runs import`` of one file at once import each run once;
* a copied database file draws its own id, so its runs get their own checkpoint folders;
* a training set that leaves one image in the last batch trains (merged, recorded).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from xnorbench.data.loader import BatchLoader
from xnorbench.data.splits import Split
from xnorbench.db import DatabaseGone, Row, Store

from .conftest import make_mnist
from .helpers import SWEEP, cli, cli_here

TRAIN = ["run", "accuracy", "--model", "lenet5", "--batch-size", "32", "--device", "cpu",
         "--threads", "1", "--no-progress"]


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_deleted_database_stops_the_run_and_keeps_its_checkpoints(tmp_path: Path):
    data = make_mnist(tmp_path / "data", n_train=128, n_test=32)
    db, ckpt = tmp_path / "d.db", tmp_path / "ckpt"
    proc = cli(str(db), *TRAIN, "--epochs", "3", "--data-dir", str(data),
               "--checkpoint-dir", str(ckpt), fault="STOP@after:train_loss#2", wait=False)
    deadline = time.time() + 240
    while not _stopped(proc.pid):  # paused in epoch 2, epoch 1's checkpoint written
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    for name in ("d.db", "d.db-wal", "d.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGCONT)
    out = proc.communicate(timeout=240)[0].decode()
    assert proc.returncode == 1, out
    assert f"the database file {db} was deleted" in out and "finished" not in out
    assert "checkpoints are kept" in out and "Traceback" not in out
    assert list(ckpt.glob("db-*/run-1/float-seed0.pt")), "the checkpoints must stay"


def test_a_replaced_database_file_is_noticed_before_the_next_write(tmp_path: Path):
    store = Store.open(str(tmp_path / "a.db"))
    rid = store.start_run("sweep", {}, {})
    store.add_rows(rid, [Row("speedup", 1.0)])
    Store.open(str(tmp_path / "b.db"))
    os.replace(tmp_path / "b.db", tmp_path / "a.db")  # another file at the same path
    with pytest.raises(DatabaseGone, match="was replaced"):
        store.add_rows(rid, [Row("speedup", 2.0)])
    with pytest.raises(DatabaseGone):
        store.finish_run(rid, "finished")


def test_resume_on_other_data_is_refused_and_the_run_stays_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = make_mnist(tmp_path / "first", n_train=64, n_test=32, seed=0)
    other = make_mnist(tmp_path / "other", n_train=64, n_test=32, seed=1)  # same sizes
    db = str(tmp_path / "e.db")
    monkeypatch.setenv("XNORBENCH_DATA", str(first))
    rc, out = cli(db, *TRAIN, "--epochs", "1", fault="INT@after:best_test_accuracy#1")
    assert rc == 130, out
    store = Store.open(db)
    assert store.run(1).params["data_dir"] == str(first.resolve())  # resolved, not None
    monkeypatch.setenv("XNORBENCH_DATA", str(other))  # the stored path is used, not this
    shutil.rmtree(first / "MNIST")
    shutil.copytree(other / "MNIST", first / "MNIST")  # other labels in the same place
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 2, out
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 1 and "is not what run 1 started on" in lines[0], out
    assert "fingerprint" in lines[0]
    run = store.run(1)
    assert run.status == "interrupted" and "Ctrl-C" in (run.error or "")


def test_an_unfolded_log_is_reported_at_once_with_a_copy_that_works(tmp_path: Path):
    db = tmp_path / "w.db"
    store = Store.open(str(db))
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("select count(*) from runs").fetchall()  # holds a read snapshot
    rid = store.start_run("sweep", {}, {})
    store.add_rows(rid, [Row("speedup", 1.0)])
    t0 = time.perf_counter()
    store.finish_run(rid, "finished")
    assert time.perf_counter() - t0 < 10  # the fold waited 1 s, not the busy timeout
    assert store.folded is False
    reader.execute("COMMIT")
    assert store.fold_log() is True

    hold = threading.Event()

    def keep_reading() -> None:
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("BEGIN")
        c.execute("select count(*) from runs").fetchall()
        hold.wait(300)
        c.execute("COMMIT")

    t = threading.Thread(target=keep_reading)
    t.start()
    try:
        rc, out = cli(str(db), *SWEEP[:1], "--channels", "16", "--kernel", "1",
                      "--fixed-channels", "16", "--input-size", "6", "--rounds", "1",
                      "--no-progress", "--float-engines", "eager")
    finally:
        hold.set()
        t.join()
    assert rc == 0, out
    assert "still in" in out and f'sqlite3 {db} ".backup copy.db"' in out


def _source_with_runs(path: Path, n: int) -> None:
    store = Store.open(str(path))
    for i in range(n):
        rid = store.start_run("sweep", {"i": i}, {"hostname": "h"}, command=f"xb sweep {i}")
        store.add_rows(rid, [Row("speedup", float(j)) for j in range(5)])
        store.finish_run(rid, "finished")


def test_two_imports_at_once_import_each_run_once(tmp_path: Path):
    _source_with_runs(tmp_path / "many.db", 40)
    dst = str(tmp_path / "dst.db")
    Store.open(dst)
    procs = [subprocess.Popen([sys.executable, "-m", "xnorbench.cli", "--db", dst, "runs",
                               "import", str(tmp_path / "many.db")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    store = Store.open(dst)
    assert len(store.runs()) == 40
    assert store.count_results() == 200
    imported = sum(int(o.split("imported ")[1].split(" ")[0]) for o in outs)
    assert imported == 40, outs  # what each says it imported adds up


def test_a_copied_database_draws_its_own_id(tmp_path: Path):
    a = Store.open(str(tmp_path / "a.db"))
    first = a.database_id()
    a.engine.dispose()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    b = Store.open(str(tmp_path / "b.db"))
    copied = b.database_id()
    assert copied != first and b.database_id() == copied  # fresh once, then kept
    assert Store.open(str(tmp_path / "a.db")).database_id() == first
    b.engine.dispose()  # its last connection folds and removes the log
    os.replace(tmp_path / "b.db", tmp_path / "moved.db")  # a move keeps the id
    assert Store.open(str(tmp_path / "moved.db")).database_id() == copied


def test_a_last_batch_of_one_image_is_merged_not_a_crash(tmp_path: Path):
    split = Split(torch.zeros(33, 1, 4, 4, dtype=torch.uint8), torch.zeros(33, dtype=torch.long))
    loader = BatchLoader(split, 8, mean=(0.0,), std=(1.0,), shuffle=True)
    sizes = [len(y) for _, y in loader]
    assert sizes == [8, 8, 8, 9] and len(loader) == 4 and loader.merged
    evaluation = BatchLoader(split, 8, mean=(0.0,), std=(1.0,))  # evaluation: no merging
    assert [len(y) for _, y in evaluation] == [8, 8, 8, 8, 1]

    data = make_mnist(tmp_path / "data", n_train=33, n_test=16)
    db = str(tmp_path / "m.db")
    rc, out = cli_here(db, *TRAIN, "--epochs", "1", "--data-dir", str(data))
    assert rc == 0, out
    rows = Store.open(db).results([1], metric="train_loss")
    assert rows and all("merged" in r.params["last_batch"] for r in rows)
    rc, out = cli_here(db, *TRAIN, "--epochs", "1", "--data-dir", str(data), "--limit-train",
                       "1")
    assert rc == 2 and out.count("\n") == 1 and "at least 2 images" in out, out
