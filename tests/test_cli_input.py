"""Bad input ends with one `error:` line and exit code 2, before any run row exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

from .helpers import db_with_runs

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
    monkeypatch.setenv("XNORBENCH_BUILD_DIR", str(tmp_path / "kernels"))
    res = runner.invoke(app, ["--db", str(tmp_path / "d.db"), "run", "accuracy",
                              "--no-progress"])
    assert res.exit_code == 2 and "at most 255" in res.output, res.output
    assert Store.open(str(tmp_path / "d.db")).runs() == []  # nothing written
    assert not (tmp_path / "kernels").exists()  # refused before a kernel build began


def _one_error_line(res) -> str:
    """The output of a refused command: exactly one line, ``error: ...``, exit 2."""
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and "SELECT" not in res.output
    return lines[0]


BIG = "99999999999999999999"


@pytest.mark.parametrize("args,needle", [
    (["--db", "/nonexistent/dir/x.db", "run", "accuracy", "--recipe", "smoke"],
     "/nonexistent/dir does not exist"),
    (["--db", "postgresql+psycopg://u:pw@127.0.0.1:notaport/xb", "runs"], "not a valid"),
    (["--db", "", "runs"], "--db is empty"),
    (["runs", "show", BIG], "no such run"),
    (["runs", "tag", BIG, "x"], "no such run"),
    (["runs", "--limit", BIG], "--limit"),
    (["table", "--run", BIG], "--run"),
    (["run", "accuracy", "--resume", BIG], "--resume"),
    (["runs", "--stale-minutes", "1e308"], "--stale-minutes"),
    (["runs", "mark-stale", "--minutes", "1e10"], "--minutes"),
    (["table", "--format", "xml"], "'xml' is not one of"),
    (["runs", "tag", "1", "two\nlines"], "printable"),
    (["sweep", "--channels", "16,16"], "16 given twice"),
    (["run", "accuracy", "--recipe", "smoke", "--lr", "1e300"], "--lr 1e+300"),
    (["run", "accuracy", "--recipe", "smoke", "--epochs", BIG], "--epochs"),
    (["run", "accuracy", "--recipe", "smoke", "--epochs", "20000"], "at most 10000"),
    (["run", "accuracy", "--recipe", "smoke", "--limit-train", "1"], "at least 2 images"),
])
def test_round_three_bad_input_is_one_line(tmp_path: Path, args, needle):
    db = tmp_path / "b.db"
    Store.open(str(db)).engine.dispose()  # reading commands need an existing file
    if "--db" not in args:
        args = ["--db", str(db), *args]
    line = _one_error_line(runner.invoke(app, args))
    assert needle in line and "pw" not in line
    assert Store.open(str(db)).runs() == []


@pytest.mark.parametrize("env,needle", [
    ({"XNORBENCH_KERNEL_BUILD": "foo"}, "XNORBENCH_KERNEL_BUILD='foo'"),
    ({"XNORBENCH_LOADER_WORKERS": "abc"}, "XNORBENCH_LOADER_WORKERS='abc'"),
])
def test_bad_settings_are_refused_before_a_run(tmp_path: Path, monkeypatch, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    db = tmp_path / "s.db"
    res = runner.invoke(app, ["--db", str(db), "sweep", "--channels", "16", "--kernel", "1",
                              "--fixed-channels", "16", "--input-size", "6", "--rounds", "1",
                              "--no-progress"])
    assert needle in _one_error_line(res)
    assert Store.open(str(db)).runs() == []


def test_a_distributed_timeout_beyond_a_week_is_refused(monkeypatch):
    from xnorbench import distributed
    from xnorbench.errors import InputError

    for value in ("1e400", "1e10", "0", "x"):
        monkeypatch.setenv("XNORBENCH_DIST_TIMEOUT_S", value)
        with pytest.raises(InputError, match="XNORBENCH_DIST_TIMEOUT_S"):
            distributed.timeout()


def test_labels_outside_the_classes_are_refused_before_training(tmp_path: Path):
    import torch

    from .conftest import make_mnist, write_idx

    data = make_mnist(tmp_path / "data")
    labels = torch.zeros(96, dtype=torch.uint8)
    labels[7] = 42
    write_idx(data / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    db = tmp_path / "l.db"
    res = runner.invoke(app, ["--db", str(db), "run", "accuracy", "--data-dir", str(data),
                              "--device", "cpu", "--no-progress", "--epochs", "1"])
    assert "labels 42 are outside 0..9" in _one_error_line(res)
    assert Store.open(str(db)).runs() == []


def test_a_locked_or_read_only_database_is_one_line(tmp_path: Path, monkeypatch):
    import sqlite3

    db = tmp_path / "lk.db"
    store = Store.open(str(db))
    store.finish_run(store.start_run("sweep", {}, {}), "finished")
    store.engine.dispose()
    other = Store.open(str(tmp_path / "other.db"))
    other.finish_run(other.start_run("memory", {}, {}), "finished")
    monkeypatch.setenv("XNORBENCH_BUSY_TIMEOUT_S", "0.3")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, past the busy timeout
    try:
        for args in (["runs", "tag", "1", "x"], ["runs", "import", str(tmp_path / "other.db")],
                     ["sweep", "--channels", "16", "--no-progress"]):
            line = _one_error_line(runner.invoke(app, ["--db", str(db), *args]))
            assert "locked" in line, args
    finally:
        holder.execute("ROLLBACK")
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    line = _one_error_line(runner.invoke(app, ["--db", read_only, "runs", "tag", "1", "x"]))
    assert "readonly" in line and "cannot be written" in line


def test_report_notes_that_are_not_text_are_one_line(tmp_path: Path):
    notes = tmp_path / "notes.md"
    notes.write_bytes(b"\xff\xfe\x00binary\x80")
    db = tmp_path / "n.db"
    Store.open(str(db)).engine.dispose()
    line = _one_error_line(runner.invoke(app, ["--db", str(db), "report", "--output",
                                               str(tmp_path / "R.md"), "--notes", str(notes)]))
    assert "not a readable UTF-8 text file" in line


def test_an_unwritable_plot_is_named_not_the_report(tmp_path: Path):
    db = tmp_path / "p.db"
    res = runner.invoke(app, ["--db", str(db), "sweep", "--channels", "16", "--kernel", "1",
                              "--fixed-channels", "16", "--input-size", "6", "--rounds", "1",
                              "--no-progress", "--float-engines", "eager"])
    assert res.exit_code == 0, res.output
    (tmp_path / "sweep_channels.png").mkdir()  # the plot's path cannot be written
    line = _one_error_line(runner.invoke(app, ["--db", str(db), "report", "--output",
                                               str(tmp_path / "REPORT.md")]))
    assert "sweep_channels.png" in line


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_a_run_exists(tmp_path: Path):
    """It left a failed run behind (the first checkpoint could not be written)."""
    from typer.testing import CliRunner

    from xnorbench.cli import app

    afile = tmp_path / "afile"
    afile.write_text("x")
    db = tmp_path / "c.db"
    for given in (afile, afile / "sub"):
        res = CliRunner().invoke(app, ["--db", str(db), "run", "accuracy", "--recipe",
                                       "smoke", "--checkpoint-dir", str(given),
                                       "--no-progress"])
        assert res.exit_code == 2 and f"{afile} is a file, not a folder" in res.output
    assert not db.exists()


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


@pytest.mark.parametrize("args,message", [
    (["run", "accuracy", "--model", "vgg"], "unknown model 'vgg'"),
    (["run", "accuracy", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "accuracy", "--variant", "half"], "unknown variant 'half'"),
    (["run", "accuracy", "--epochs", "-1"], "--epochs must be positive"),
    (["run", "accuracy", "--epochs", "0"], "--epochs must be positive"),
    (["run", "accuracy", "--grad-rule", "magic"], "unknown grad rule 'magic'"),
    (["--db", "nosuchdriver://x/y", "runs"], "cannot open database"),
    (["--db", "/nonexistent-folder/x.db", "runs"], "does not exist"),
    (["sweep", "--channels", "0"], "--channels values must be at least 1"),
    (["sweep", "--channels", "a,b"], "comma-separated list of integers"),
    (["sweep", "--channels", ""], "comma-separated list of integers"),
    (["sweep", "--kernel", "-3"], "--kernel values must be at least 1"),
    (["sweep", "--kernel", "3,5", "--input-size", "4"], "kernel 5 is larger than the 4x4"),
    (["sweep", "--shard", "5/2"], "need 0 <= i < n"),
    (["table", "--suite", "nope"], "unknown table suite 'nope'"),
    (["runs", "show", "999"], "no run with id 999"),
])
def test_bad_input_exit_2_one_line(tmp_path: Path, args, message):
    if "--db" not in args:
        Store.open(str(tmp_path / "x.db"))  # there, empty: the error is the input's
        args = ["--db", str(tmp_path / "x.db"), *args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1

def test_missing_dataset_names_paths(tmp_path: Path):
    db = tmp_path / "m.db"
    res = runner.invoke(app, ["--db", str(db), "run", "accuracy", "--data-dir",
                              str(tmp_path / "empty"), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2
    assert "MNIST not found" in res.output and "empty/MNIST/raw" in res.output
    assert "Traceback" not in res.output
    assert Store.open(str(db)).runs() == []  # nothing written

def test_corrupt_db_file(tmp_path: Path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(range(256)) * 64)
    res = runner.invoke(app, ["--db", str(bad), "runs"])
    assert res.exit_code == 2
    assert "not a database" in res.output or "cannot use database" in res.output

def test_unknown_suite_and_non_numeric_epochs(tmp_path: Path):
    res = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "run", "bogus"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "run", "accuracy", "--epochs", "two"])
    assert res.exit_code == 2
    assert not (tmp_path / "x.db").exists() or Store.open(str(tmp_path / "x.db")).runs() == []

@pytest.mark.parametrize("source", ["missing.db", "here.db"])
def test_runs_import_bad_source(tmp_path: Path, source: str):
    db_with_runs(tmp_path / "here.db", "dev")
    res = runner.invoke(app, ["--db", str(tmp_path / "here.db"), "runs", "import",
                              str(tmp_path / source)])
    assert res.exit_code == 2
    assert res.output.startswith("error: ")

@pytest.mark.parametrize("command", [["table"], ["runs"], ["runs", "show", "1"], ["report"],
                                     ["table", "--suite", "seeds"]])
def test_a_mistyped_database_is_refused_by_reading_commands_and_not_created(
        tmp_path: Path, command):
    typo = tmp_path / "tpyo.db"
    res = runner.invoke(app, ["--db", str(typo), *command])
    assert res.exit_code == 2, res.output
    assert f"no results database at {typo}" in res.output
    assert not typo.exists() and "Traceback" not in res.output
