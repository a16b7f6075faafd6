"""End to end through the CLI: run -> rows in SQLite -> table and exports; runs import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

from .helpers import db_with_runs

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


def test_runs_import_copies_finished_runs_once(tmp_path: Path):
    """A device machine's db joins the project's: finished runs with every row, once."""
    here = db_with_runs(tmp_path / "here.db", "dev")
    device = tmp_path / "device.db"
    db_with_runs(device, "gpu-host")
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
