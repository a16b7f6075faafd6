"""Bad input ends with one `error:` line and exit code 2, before any run row exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

runner = CliRunner()


@pytest.mark.parametrize("args,needle", [
    (["run", "accuracy", "--recipe", "smoke", "--lr", "nan"], "--lr"),
    (["run", "accuracy", "--recipe", "smoke", "--lr", "inf"], "--lr"),
    (["run", "accuracy", "--recipe", "smoke", "--weight-decay", "nan"], "--weight-decay"),
    (["run", "accuracy", "--recipe", "smoke", "--seed", str(2**63)], "--seed"),
    (["run", "accuracy", "--recipe", "smoke", "--seed", str(2**31)], "--seed"),
    (["run", "accuracy", "--recipe", "smoke", "--seeds", f"0,{2**40}"], "--seeds"),
    (["run", "accuracy", "--recipe", "smoke", "--threads", "1000000"], "--threads"),
    (["sweep", "--channels", "99999999"], "--channels"),
    (["sweep", "--channels", "16384", "--input-size", "64"], "GiB"),
    (["runs", "--stale-minutes", "nan"], "--stale-minutes"),
    (["runs", "mark-stale", "--minutes", "nan"], "--minutes"),
])
def test_bad_numbers_are_refused_before_a_run(tmp_path: Path, args, needle):
    db = tmp_path / "b.db"
    res = runner.invoke(app, ["--db", str(db), *args])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and needle in res.output
    assert "Traceback" not in res.output
    if db.exists():
        assert Store.open(str(db)).runs() == []


def test_bad_heartbeat_setting_is_refused(tmp_path: Path, monkeypatch):
    for value in ("abc", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("XNORBENCH_HEARTBEAT_S", value)
        res = runner.invoke(app, ["--db", str(tmp_path / "h.db"), "run", "ceilings",
                                  "--builds", "native", "--channels", "64",
                                  "--input-size", "8", "--rounds", "1", "--no-progress"])
        assert res.exit_code == 2 and "XNORBENCH_HEARTBEAT_S" in res.output, value
    assert Store.open(str(tmp_path / "h.db")).runs() == []


@pytest.mark.parametrize("output", ["newdir/", "existing", "report"])
def test_report_output_must_be_a_markdown_file(tmp_path: Path, output):
    (tmp_path / "existing").mkdir()
    target = tmp_path / output
    res = runner.invoke(app, ["--db", str(tmp_path / "r.db"), "report", "--output",
                              str(target) + ("/" if output.endswith("/") else "")])
    assert res.exit_code == 2 and "--output" in res.output
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "report").exists()
    assert not list(tmp_path.glob("*.png"))


LONG = "a" * 300  # one path component over Linux's 255-byte NAME_MAX


@pytest.mark.parametrize("args,needle", [
    (["run", "accuracy", "--data-dir", f"/tmp/{LONG}"], "--data-dir"),
    (["run", "accuracy", "--checkpoint-dir", f"/tmp/{LONG}"], "--checkpoint-dir"),
    (["report", "--output", f"/tmp/{LONG}.md"], "--output"),
    (["plot", "sweep", "--output-dir", f"/tmp/{LONG}"], "--output-dir"),
])
def test_a_path_the_file_system_cannot_hold_is_one_line(tmp_path: Path, args, needle):
    db = tmp_path / "p.db"
    res = runner.invoke(app, ["--db", str(db), *args])
    assert res.exit_code == 2, res.output
    assert f"error: {needle} /tmp/aaa" in res.output and "at most 255" in res.output
    assert "Traceback" not in res.output
    assert not db.exists() or Store.open(str(db)).runs() == []


def test_an_overlong_db_path_or_data_env_is_one_line(tmp_path: Path, monkeypatch):
    res = runner.invoke(app, ["--db", f"/tmp/{LONG}/x.db", "runs"])
    assert res.exit_code == 2 and "error: --db /tmp/aaa" in res.output, res.output
    monkeypatch.setenv("XNORBENCH_DATA", f"/tmp/{LONG}")
    res = runner.invoke(app, ["--db", str(tmp_path / "d.db"), "run", "accuracy",
                              "--no-progress"])
    assert res.exit_code == 2 and "at most 255" in res.output, res.output
    assert Store.open(str(tmp_path / "d.db")).runs() == []  # nothing written
