"""The trade-off of one trained network: its float weights kept by training, every
deployment (fp32 / bf16 / int8 on each engine, XNOR simulated / packed / exported) scored
on the same test set, timed and sized; the table names each and says which wins; the
trained XNOR network exports from its run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.measure.cpu_units import bf16_unit

pytest.importorskip("openvino")
runner = CliRunner()


def _ok(db: str, *args: str) -> str:
    res = runner.invoke(app, ["--db", db, *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_tradeoff_of_a_trained_run(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "t.db")
    _ok(db, "run", "accuracy", "--model", "lenet5", "--dataset", "mnist", "--data-dir",
        str(mnist_dir), "--epochs", "1", "--batch-size", "16", "--optimizer", "adam",
        "--lr", "0.002", "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress")
    _ok(db, "run", "tradeoff", "--of-run", "1", "--batches", "1,4", "--rounds", "1",
        "--calibration", "32", "--eval-batch", "20", "--no-progress")
    store = Store.open(db)
    trained = {(r.metric, r.variant): r.value for r in store.results([1])}
    acc = {r.variant: r for r in store.results([2], metric="tradeoff_test_accuracy")}
    want = {"float", "float_compile", "float_onnxruntime", "float_openvino",
            "float_onnxruntime-int8", "float_openvino-int8", "xnor", "xnor_packed",
            "xnor_openvino"} | ({"float_torch-bf16", "float_openvino-bf16"} if bf16_unit()
                                else set())
    assert set(acc) == want
    one = 100.0 / 48  # the tiny test set: one image
    # the same networks the run trained, scored again on the same test images
    assert acc["float"].value == pytest.approx(trained[("final_test_accuracy", "float")])
    assert acc["xnor"].value == pytest.approx(trained[("final_test_accuracy", "xnor")])
    assert acc["xnor_packed"].value == pytest.approx(
        trained[("packed_test_accuracy", "xnor")])
    for variant in {v for v in want if v.startswith("float_")}:  # each engine, precision
        assert abs(acc[variant].value - acc["float"].value) <= (
            2 * one if "int8" in variant or "bf16" in variant else one), variant
    assert abs(acc["xnor_openvino"].value - acc["xnor_packed"].value) <= one
    assert acc["float_onnxruntime-int8"].params["calibration_images"] == 32
    lat = {(r.variant, r.params["batch"]) for r in store.results(
        [2], metric="tradeoff_latency_ms")}
    assert {(v, b) for v in want for b in (1, 4)} == lat
    size = {r.variant: r.value for r in store.results([2], metric="tradeoff_weights_bytes")}
    assert size["xnor_packed"] < size["int8"] < size["float"]
    if not bf16_unit():
        gone = {r.variant for r in store.results([2], metric="tradeoff_unavailable")}
        assert gone == {"float_torch-bf16", "float_openvino-bf16"}
    table = _ok(db, "table", "--suite", "tradeoff")
    assert "| int8 | openvino-int8 |" in table and "| binary | xnorbench |" in table
    assert "At batch 1 on" in table and "the fastest deployment is" in table
    # the trained XNOR network, exported from its run
    out = _ok(db, "export", "--run", "1", "--output", str(tmp_path / "ov"))
    assert Path(out.strip().splitlines()[-1]).is_file()


def test_tradeoff_refuses_a_run_without_trained_networks(tmp_path: Path):
    db = str(tmp_path / "t.db")
    _ok(db, "sweep", "--channels", "16", "--kernel", "1", "--fixed-channels", "16",
        "--input-size", "4", "--rounds", "1", "--float-engines", "eager", "--no-progress")
    res = runner.invoke(app, ["--db", db, "run", "tradeoff", "--of-run", "1",
                              "--no-progress"])
    assert res.exit_code == 2 and "holds no trained float network" in res.output
    assert "Traceback" not in res.output
