"""End to end through the CLI: run -> rows in SQLite -> table; bad input -> exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_run_accuracy_then_table_markdown(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "r.db")
    res = invoke("--db", db, "run", "accuracy", "--dataset", "mnist", "--model", "lenet5",
                 "--epochs", "2", "--batch-size", "16", "--data-dir", str(mnist_dir),
                 "--device", "cpu", "--no-progress", "--optimizer", "adam")
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    (run,) = store.runs()
    assert run.status == "finished" and run.suite == "accuracy"
    assert run.torch_version and run.cpu_model is not None and run.threads >= 1
    finals = {r.variant: r.value for r in store.results([run.id], metric="final_test_accuracy")}
    assert set(finals) == {"float", "xnor"}
    epochs = {r.epoch for r in store.results([run.id], metric="test_accuracy")}
    assert epochs == {1, 2}
    size = store.results([run.id], metric="dataset_size")[0]
    assert size.params["train_size"] == 96 and size.params["test_size"] == 48
    assert any("train-images-idx3-ubyte" in f for f in size.params["files"])

    res = invoke("--db", db, "table")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert ("| Dataset | Network | Accuracy | Accuracy of floating-point | "
            "XNOR packed 1-bit, C++ kernel |") in lines
    lenet = next(line for line in lines if "LeNet-5" in line)
    assert lenet.startswith("| MNIST | LeNet-5 |")
    assert f"{finals['xnor']:.2f} % (n=1)" in lenet and f"{finals['float']:.2f} % (n=1)" in lenet
    packed = store.results([run.id], metric="packed_test_accuracy")[0].value
    assert lenet.endswith(f"| {packed:.2f} % (agrees on 100.00 %) |") or "agrees on" in lenet
    mission = next(line for line in lines if line.startswith("| MNIST | ResNet-18 |"))
    assert mission.count("not trained here") == 2  # and a note says how to train it
    assert "note: 'not trained here'" in res.stderr  # beside the table, not a footnote
    assert "--recipe resnet18-mnist-short" in res.stderr
    assert any("2 epoch(s)" in line and "train 96 / test 48" in line for line in lines)

    out = tmp_path / "t.json"
    res = invoke("--db", db, "table", "--format", "json", "--output", str(out))
    assert res.exit_code == 0
    recs = json.loads(out.read_text())
    xnor = next(r for r in recs if r["network"] == "lenet5" and r["variant"] == "xnor")
    assert xnor["accuracy"] == pytest.approx(finals["xnor"])
    assert xnor["n"] == 1 and xnor["per_seed"] == [pytest.approx(finals["xnor"])]
    res = invoke("--db", db, "table", "--format", "csv")
    assert res.exit_code == 0 and res.stdout.startswith("dataset,network,variant,accuracy")

    res = invoke("--db", db, "runs")
    assert res.exit_code == 0 and "accuracy" in res.output and "finished" in res.output
    res = invoke("--db", db, "runs", "show", str(run.id), "--json")
    assert res.exit_code == 0
    shown = json.loads(res.output)
    assert shown["status"] == "finished" and shown["rows"] == len(store.results([run.id]))
    assert shown["params"]["seeds"] == [0] and shown["params"]["lr"] == 1e-3  # adam's default


def test_run_accuracy_cifar_image_folder(tmp_path: Path, cifar_dir: Path):
    db = str(tmp_path / "c.db")
    res = invoke("--db", db, "run", "accuracy", "--dataset", "cifar10", "--model", "resnet18",
                 "--variant", "xnor", "--epochs", "1", "--batch-size", "8", "--data-dir",
                 str(cifar_dir), "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    rows = store.results(metric="final_test_accuracy")
    assert [(r.dataset, r.model, r.variant) for r in rows] == [("cifar10", "resnet18", "xnor")]
    size = store.results(metric="dataset_size")[0]
    assert size.params["train_size"] == 40 and size.params["test_size"] == 20
    res = invoke("--db", db, "table")
    line = next(l_ for l_ in res.output.splitlines() if l_.startswith("| CIFAR-10 | ResNet-18"))
    assert f"{rows[0].value:.2f} % (n=1), subset" not in line  # 40 images is the whole tree
    assert f"{rows[0].value:.2f} % (n=1)" in line
    assert "| n/a (not run under this recipe) |" in line


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
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1


def test_missing_dataset_names_paths(tmp_path: Path):
    db = tmp_path / "m.db"
    res = invoke("--db", str(db), "run", "accuracy", "--data-dir", str(tmp_path / "empty"),
                 "--device", "cpu", "--no-progress")
    assert res.exit_code == 2
    assert "MNIST not found" in res.output and "empty/MNIST/raw" in res.output
    assert "Traceback" not in res.output
    assert Store.open(str(db)).runs() == []  # nothing written


def test_corrupt_db_file(tmp_path: Path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(range(256)) * 64)
    res = invoke("--db", str(bad), "runs")
    assert res.exit_code == 2
    assert "not a database" in res.output or "cannot use database" in res.output


def test_unknown_suite_and_non_numeric_epochs(tmp_path: Path):
    res = invoke("--db", str(tmp_path / "x.db"), "run", "bogus")
    assert res.exit_code == 2
    res = invoke("--db", str(tmp_path / "x.db"), "run", "accuracy", "--epochs", "two")
    assert res.exit_code == 2
    assert not (tmp_path / "x.db").exists() or Store.open(str(tmp_path / "x.db")).runs() == []


def _db_with_runs(path: Path, host: str) -> Store:
    from xnorbench.db.store import Row

    store = Store.open(str(path))
    for suite, value in (("sweep", 11.5), ("memory", 29.6)):
        rid = store.start_run(suite, {"threads": 1}, {"hostname": host}, command=f"xb {suite}")
        store.add_rows(rid, [Row("speedup", value, "x", params={"channels": 256}),
                             Row("float_ms", 1.5, "ms")])
        store.finish_run(rid, "finished")
    failed = store.start_run("sweep", {}, {"hostname": host}, command="xb broken")
    store.finish_run(failed, "failed", "boom")
    return store


def test_runs_import_copies_finished_runs_once(tmp_path: Path):
    """A device machine's db joins the project's: finished runs with every row, once."""
    here = _db_with_runs(tmp_path / "here.db", "dev")
    device = tmp_path / "device.db"
    _db_with_runs(device, "gpu-host")
    before = len(here.runs())
    res = invoke("--db", str(tmp_path / "here.db"), "runs", "import", str(device))
    assert res.exit_code == 0, res.output
    assert "imported 2 run(s)" in res.output
    new = here.runs()[:2]  # imported runs are the newest
    assert len(here.runs()) == before + 2
    assert {r.hostname for r in new} == {"gpu-host"}
    assert {r.status for r in new} == {"finished"}
    speedups = {r.value for r in here.results([r.id for r in new], metric="speedup")}
    assert speedups == {11.5, 29.6}
    assert [r.params for r in here.results([new[0].id])] == [{"channels": 256}, {}]
    again = invoke("--db", str(tmp_path / "here.db"), "runs", "import", str(device))
    assert again.exit_code == 0 and "imported 0 run(s) (none new)" in again.output
    assert len(here.runs()) == before + 2
    only = invoke("--db", str(tmp_path / "other.db"), "runs", "import", str(device),
                  "--suite", "memory")
    assert "imported 1 run(s)" in only.output


@pytest.mark.parametrize("source", ["missing.db", "here.db"])
def test_runs_import_bad_source(tmp_path: Path, source: str):
    _db_with_runs(tmp_path / "here.db", "dev")
    res = invoke("--db", str(tmp_path / "here.db"), "runs", "import", str(tmp_path / source))
    assert res.exit_code == 2
    assert res.output.startswith("error: ")


@pytest.mark.parametrize("command", [["table"], ["runs"], ["runs", "show", "1"], ["report"],
                                     ["table", "--suite", "seeds"]])
def test_a_mistyped_database_is_refused_by_reading_commands_and_not_created(
        tmp_path: Path, command):
    typo = tmp_path / "tpyo.db"
    res = invoke("--db", str(typo), *command)
    assert res.exit_code == 2, res.output
    assert f"no results database at {typo}" in res.output
    assert not typo.exists() and "Traceback" not in res.output


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


def _leaf_commands(command, path=()):
    """(argv to the command, click command) of every runnable command under ``command``."""
    if not hasattr(command, "list_commands"):
        yield list(path), command
        return
    for name in command.list_commands(None):  # loads `run`'s suites, which build lazily
        yield from _leaf_commands(command.get_command(None, name), (*path, name))


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


def test_exports_carry_the_machine_state_of_each_timed_row(tmp_path: Path):
    """load1, steal_pct, cpu_mhz and busy are stored with each timed row; the CSV and
    JSON exports dropped them."""
    db = str(tmp_path / "s.db")
    res = invoke("--db", db, "run", "sweep", "--channels", "16", "--kernel", "3",
                 "--fixed-channels", "16", "--fixed-kernel", "3", "--input-size", "6",
                 "--threads", "1", "--rounds", "1", "--float-engines", "eager",
                 "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke("--db", db, "run", "timing", "--model", "lenet5", "--batches", "1",
                 "--threads", "1", "--rounds", "1", "--no-per-layer", "--train-batch", "4",
                 "--float-engines", "eager", "--no-progress")
    assert res.exit_code == 0, res.output
    for suite in ("sweep", "timing"):
        res = invoke("--db", db, "table", "--suite", suite, "--format", "json")
        assert res.exit_code == 0, res.output
        recs = json.loads(res.stdout)
        assert recs and all({"load1", "steal_pct", "cpu_mhz", "busy"} <= set(r)
                            for r in recs), (suite, recs)
        assert all(r["cpu_mhz"] is None or r["cpu_mhz"] > 0 for r in recs)
        res = invoke("--db", db, "table", "--suite", suite, "--format", "csv")
        header = res.stdout.splitlines()[0].split(",")
        assert {"load1", "steal_pct", "cpu_mhz", "busy"} <= set(header), header
