"""What the CLI shows a user: progress lines without a terminal, a readable `runs show`,
helpful empty states, `info`, and --help texts that name defaults and choices, with no
raw markup or Python types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

from .conftest import make_mnist

runner = CliRunner()


@pytest.fixture
def trained_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A finished one-epoch accuracy run, trained with progress on and no terminal."""
    data = make_mnist(tmp_path / "data", n_train=128, n_test=32)
    db = str(tmp_path / "r.db")
    monkeypatch.setenv("XNORBENCH_PROGRESS_S", "0")
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--epochs", "1", "--batch-size",
                              "32", "--optimizer", "adam", "--data-dir", str(data),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return db, res.output


def test_progress_lines_without_a_terminal(trained_db):
    _, out = trained_db
    lines = [ln for ln in out.splitlines() if "images/s" in ln]
    assert lines, out
    assert any("epoch 1/1" in ln and "ETA" in ln for ln in lines), lines
    # a finished loop has no time left to show, and a slow one is seconds per item
    assert not any("4/4" in ln and "ETA" in ln for ln in lines), lines
    assert "0.00 it/s" not in out, out
    assert "float seed 0 lenet5 epoch 1: loss" in out  # the epoch's summary line stays


def test_runs_show_is_readable_and_json_is_complete(trained_db):
    db, _ = trained_db
    res = runner.invoke(app, ["--db", db, "runs", "show", "1", "--rows", "5"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "run 1 · accuracy" in out and "finished" in out
    assert "Options (as resolved)" in out and "Where it ran" in out
    assert "0.001" in out  # adam's lr, resolved (the stored flag was left out)
    assert "Results (" in out and "dataset_size" in out and "more rows" in out
    assert out.count("git_commit") == 1  # each context field once
    res = runner.invoke(app, ["--db", db, "runs", "show", "1", "--json"])
    record = json.loads(res.output)
    store = Store.open(db)
    assert record["rows"] == len(record["results"]) == len(store.results([1]))
    assert record["params"]["lr"] == 1e-3 and record["status"] == "finished"
    assert {"metric", "value", "epoch", "variant"} <= set(record["results"][0])


@pytest.mark.parametrize("suite,source,command", [
    ("timing", "timing", "xnorbench run timing"),
    ("train-step", "timing", "xnorbench run timing"),
    ("compare", "compare", "xnorbench run compare"),
    ("sweep", "sweep", "xnorbench sweep"),
    ("saved-by-layer", "memory", "xnorbench run memory"),
])
def test_empty_table_says_what_to_run(tmp_path: Path, suite, source, command):
    Store.open(str(tmp_path / "e.db"))  # a database without such runs
    res = runner.invoke(app, ["--db", str(tmp_path / "e.db"), "table", "--suite", suite])
    assert res.exit_code == 2
    assert f"no finished {source} runs yet" in res.output and f"`{command}`" in res.output


def test_help_texts_name_defaults_and_have_no_raw_markup():
    res = runner.invoke(app, ["--help"])
    assert "``" not in res.output and "XNORBENCH_DB" in res.output
    res = runner.invoke(app, ["run", "accuracy", "--help"], env={"COLUMNS": "200"})
    assert "0.1 for sgd, 1e-3 for adam" in res.output
    assert "$XNORBENCH_DATA, else ./data" in res.output
    assert "db-<database id>/run-<id>" in res.output


def test_info_names_kernel_path_and_where_things_live(tmp_path: Path):
    from xnorbench.xnor.kernels import kernel_isa

    res = runner.invoke(app, ["--db", str(tmp_path / "i.db"), "info", "--build"])
    assert res.exit_code == 0, res.output
    assert f"kernel path    {kernel_isa()}" in res.output
    for what in ("CPU", "kernel cache", "XNORBENCH_BUILD_DIR", "XNORBENCH_DATA",
                 "checkpoints", str(tmp_path / "i.db")):
        assert what in res.output, what


def test_a_slow_loop_reads_in_seconds_per_item():
    """An epoch of two minutes is '120.0 s/it', not '0.01 it/s' (or '0.00')."""
    from xnorbench.progress import _rate, _Task

    assert _rate(_Task("epochs", 3, done=1), 120.0) == "120.0 s/it"
    assert _rate(_Task("points", 9, done=6), 2.0) == "3.00 it/s"
    assert _rate(_Task("epoch 1/1", 4, done=2, images=64), 0.5) == "128.0 images/s"


def test_runs_show_says_which_point_a_sweep_row_belongs_to(tmp_path: Path):
    from xnorbench.db import Row

    db = str(tmp_path / "s.db")
    store = Store.open(db)
    rid = store.start_run("sweep", {"threads": 1}, {})
    for c in (64, 256):
        store.add_rows(rid, [Row("speedup", 10.0, "x", model="conv", variant="xnor",
                                 params={"sweep": "channels", "channels": c, "kernel": 3,
                                         "batch": 1, "threads": 1})])
    res = runner.invoke(app, ["--db", db, "runs", "show", str(rid)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "channels=64 kernel=3" in res.output and "channels=256 kernel=3" in res.output


def _leaf_commands(command, path=()):
    """(argv to the command, click command) of every runnable command under ``command``."""
    if not hasattr(command, "list_commands"):
        yield list(path), command
        return
    for name in command.list_commands(None):  # loads `run`'s suites, which build lazily
        yield from _leaf_commands(command.get_command(None, name), (*path, name))


@pytest.mark.parametrize("command", [["run", "accuracy"], ["run", "sweep"], ["run", "timing"],
                                     ["info"]])
def test_help_shows_choices_and_shapes_not_python_types(command):
    """Each option's value reads as what to type (float|xnor|both, N, N,N,..., PATH) and
    an on/off flag shows none; Typer's own --help line is the one exception."""
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    types = re.findall(r"<(?:bool|str|int|float|path|list\[\w+\])>", res.output)
    assert types == ["<bool>"] and "--help" in res.output, types  # --help's own
    if command == ["run", "accuracy"]:
        assert "float|xnor|both" in res.output and "N,N,..." in res.output

def test_every_default_an_option_names_in_words_shows_in_help():
    """A help text's "[default: ...]" reads as rich markup unless escaped, and rich then
    drops it silently: `run tradeoff --help` said "where the run trained several ." """
    import typer.main

    for argv, command in _leaf_commands(typer.main.get_command(app)):
        said = [p.help.split("default: ", 1)[1].split()[0].rstrip("].,")
                for p in command.params if getattr(p, "help", None)
                and "default: " in p.help]
        if not said:
            continue
        res = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "300"})
        assert res.exit_code == 0, res.output
        shown = " ".join(res.output.split())
        for word in said:
            assert f"default: {word}" in shown, (argv, word)
