"""Ceilings that bound and numbers that say what the machine was doing.

* the peaks run between the rounds of the work they bound, and a share of them above
  100 % (impossible for a real peak) is flagged 'disturbed', never shown as a result;
* every speed row carries its spread (min, IQR over blocks) and the machine's state
  (load, stolen time, clock); a busy machine is flagged on the rows and said in a line;
* a point measured twice by one commit on one CPU is shown once, and the table says when
  the two measurements disagree beyond their spread.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store
from xnorbench.measure import ceilings, machine_state

runner = CliRunner()
SWEEP = ["sweep", "--channels", "32", "--kernel", "3", "--fixed-channels", "32",
         "--input-size", "8", "--rounds", "2", "--float-engines", "eager", "--no-progress"]


def test_a_slowed_peak_block_flags_the_share_as_disturbed(tmp_path: Path, monkeypatch):
    real = ceilings.PeakProbe.__call__

    def slowed(self):  # every peak block a hundredth of the real one: a disturbed loop
        real(self)
        self.fp32[-1] /= 100
        self.binary[-1] /= 100

    monkeypatch.setattr(ceilings.PeakProbe, "__call__", slowed)
    db = str(tmp_path / "d.db")
    res = runner.invoke(app, ["--db", db, *SWEEP])
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    for metric in ("binary_pct_of_peak", "float_pct_of_peak"):
        rows = store.results([1], metric=metric)
        assert rows and all(r.value > 100 and "disturbed" in r.params["disturbed"]
                            for r in rows), [(r.value, r.params.get("disturbed")) for r in rows]
    table = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"]).output
    line = next(x for x in table.splitlines() if x.startswith("| 1 | channels"))
    assert line.count("disturbed") == 2 and "%" not in line.split("|")[-3]
    report = tmp_path / "r" / "REPORT.md"
    assert runner.invoke(app, ["--db", db, "report", "--output", str(report)]).exit_code == 0
    text = report.read_text()
    assert "disturbed" in text
    shares = [r.value for r in store.results([1], metric="binary_pct_of_peak")]
    assert all(f"{v:.0f} %" not in text for v in shares)  # never printed as a result


def test_an_undisturbed_share_stays_below_the_peak_it_was_measured_beside(tmp_path: Path):
    db = str(tmp_path / "u.db")
    res = runner.invoke(app, ["--db", db, *SWEEP])
    assert res.exit_code == 0, res.output
    for r in Store.open(db).results([1]):
        if r.metric.endswith("_pct_of_peak") and not r.params.get("disturbed"):
            assert 0 < r.value <= 100
        if r.metric.endswith("_ms"):
            p = r.params
            assert p["min_ms"] <= r.value and p["iqr_ms"] >= 0 and p["runs"] >= 2
            assert "load1" in p and "steal_pct" in p and "cpu_mhz" in p


def test_a_busy_machine_is_flagged_on_the_rows_and_said_once(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(machine_state.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    db = str(tmp_path / "b.db")
    res = runner.invoke(app, ["--db", db, *SWEEP])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("measured on a busy machine") == 1  # one line for the run
    rows = Store.open(db).results([1], metric="binary_ms")
    assert rows and all("load 64.0" in r.params["busy"] for r in rows)
    table = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"]).output
    assert "ok, busy machine" in table and "busy machine: load above" in table


def test_steal_time_makes_a_machine_busy():
    state = machine_state.MachineState(load1=0.5, steal_pct=12.0, mhz=3000.0, cores=2)
    assert "12 % of the time stolen" in state.busy
    assert machine_state.MachineState(0.5, 0.5, 3000.0, 2).busy is None
    probe = machine_state.StateProbe()
    sum(range(10000))
    got = probe.stop()
    assert got.cores >= 1 and (got.steal_pct is None or 0 <= got.steal_pct <= 100)


def _point_run(store: Store, speedup: float, iqr: float) -> None:
    rid = store.start_run("sweep", {"threads": 1}, {"git_commit": "c" * 40, "git_dirty": False,
                                                    "cpu_model": "CPU X"})
    base = {"sweep": "channels", "channels": 256, "kernel": 3, "threads": 1, "input_size": 14}
    store.add_rows(rid, [
        Row("float_ms", 10.0, "ms", params={**base, "iqr_ms": iqr}),
        Row("binary_ms", 10.0 / speedup, "ms", params={**base, "iqr_ms": iqr / speedup}),
        Row("speedup", speedup, "x", params=base)])
    store.finish_run(rid, "finished")


def test_a_point_measured_twice_says_when_the_two_disagree(tmp_path: Path):
    db = str(tmp_path / "t.db")
    store = Store.open(db)
    _point_run(store, 10.9, 0.1)  # 2 % spread each
    _point_run(store, 13.0, 0.1)
    table = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"]).output
    assert "Measured twice" in table and "run 2 13.00x vs run 1 10.90x" in table
    assert table.count("| channels | 256 |") == 1  # shown once, the newest
    _point_run(store, 13.1, 0.1)  # within the spreads of the newest: no remark for it
    table = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"]).output
    assert "run 3 13.10x vs run 1 10.90x" in table and "run 2 13.00x" not in table
