"""The sweep suite (suites/sweep.py) split over processes: shards write one run each, the
table joins them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

runner = CliRunner()

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
