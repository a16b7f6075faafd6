"""Memory summary by hand, compare in one run, and the report read back from the db."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.measure.summary import summarize
from xnorbench.xnor import XNORConv2d, XNORLinear
from xnorbench.xnor.networks import models

runner = CliRunner()


class Tiny(torch.nn.Module):
    """conv(1->4, 3x3, float) -> XNOR conv(4->6, 3x3) -> XNOR linear(6*4*4 -> 5)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, bias=False)
        self.xconv = XNORConv2d(4, 6, 3)
        self.flat = torch.nn.Flatten()
        self.xfc = XNORLinear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.xfc(self.flat(self.xconv(self.conv(x))))


def test_summary_totals_by_hand():
    s = summarize(Tiny(), (1, 8, 8))
    names = [layer.name for layer in s.layers]
    assert names == ["conv", "xconv", "xfc"]
    # 1-bit: xconv 6*4*3*3 = 216, xfc 5*96 = 480
    assert s.params_1bit == 216 + 480
    # 32-bit: conv 36; xconv BN 2*4 + alphas 6; xfc BN 2*96 + bias 5 + alphas 5
    assert s.params_32bit == 36 + (8 + 6) + (192 + 5 + 5)
    # BN running stats: xconv 2*4, xfc 2*96
    assert s.buffers_32bit == 8 + 192
    assert s.packed_bytes == pytest.approx(696 / 8 + (252 + 200) * 4)
    assert s.float32_bytes == pytest.approx((696 + 252 - 11 + 200) * 4)
    # MACs: conv 4*6*6 outputs * 9; xconv 6*4*4 outputs * 36; xfc 480
    assert s.macs_float == 4 * 36 * 9
    assert s.macs_binary == 6 * 16 * 36 + 480
    assert s.layers[1].input_bits == 1 and s.layers[0].input_bits == 32


def test_resnet18_compression_between_25_and_32():
    s = summarize(models.resnet18(binary=True), (3, 32, 32))
    assert 25 <= s.compression <= 32
    assert s.binary_mac_share > 0.99


def test_compare_one_run_all_rules_then_report(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "cmp.db")
    res = runner.invoke(app, ["--db", db, "run", "compare", "--data-dir", str(mnist_dir),
                              "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                              "--optimizer", "adam", "--no-progress", "--seeds", "0,1"])
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    (run,) = store.runs(suite="compare")
    finals = store.results([run.id], metric="final_test_accuracy")
    assert sorted({(r.variant, r.seed) for r in finals}) == [
        (v, s) for v in ("float", "xnor-corrected", "xnor-paper", "xnor-reference")
        for s in (0, 1)]
    assert len({r.recipe_key for r in finals}) == 1  # one recipe: the rule is the variant
    for metric in ("test_accuracy", "epoch_seconds", "train_images_per_second"):
        assert len(store.results([run.id], metric=metric)) == 8

    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir),
                              "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--db", db, "run", "memory", "--model", "lenet5", "--batch", "4",
                              "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--db", db, "sweep", "--channels", "16,32", "--kernel", "1,3",
                              "--rounds", "1", "--no-progress", "--float-engines",
                              "eager,onnxruntime"])
    assert res.exit_code == 0, res.output

    notes = tmp_path / "notes.md"
    notes.write_text("A finding, citing run 1.")
    out = tmp_path / "rep" / "REPORT.md"
    res = runner.invoke(app, ["--db", db, "report", "--output", str(out), "--notes",
                              str(notes)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    for section in ("## 3.1 Results", "## 3.2", "## 3.3 Discussion", "## 3.4 Findings"):
        assert section in text
    assert "A finding, citing run 1." in text
    assert "from the database `cmp.db`" in text and str(tmp_path) not in text
    assert re.search(r"- `[0-9a-f]{7}(\+dirty)?`: runs 1, 2, 3, 4", text)  # every run's commit
    # numbers in the report are the numbers in the db
    acc_run = store.runs(suite="accuracy")[0]
    for r in store.results([acc_run.id], metric="final_test_accuracy"):
        assert f"{r.value:.2f} % (n=1)" in text
    for variant in ("float", "xnor-corrected", "xnor-paper", "xnor-reference"):
        values = [r.value for r in finals if r.variant == variant]
        mean, std = sum(values) / 2, statistics.stdev(values)
        assert re.search(rf"\| {re.escape(variant)} \| {mean:.2f} ± {std:.2f} \| 2 \|", text)
    assert text.count("seed spread") + text.count("seed noise") >= 3  # one per rule pair
    assert "LeNet-5 packs to" in text  # the memory discussion covers what its table shows
    assert "No memory run yet" not in text
    res = runner.invoke(app, ["--db", db, "report", "--output", str(out), "--run",
                              str(acc_run.id)])
    assert res.exit_code == 0, res.output
    assert f"It shows runs {acc_run.id} only." in out.read_text()
    assert "no compare run yet" in out.read_text()
    res = runner.invoke(app, ["--db", db, "report", "--notes", str(tmp_path / "nope.md")])
    assert res.exit_code == 2 and "no such file" in res.output
    packed = store.results(metric="packed_model_mib", model="lenet5")[0].value
    assert f"{packed:.3f}" in text
    sp = store.results(metric="speedup")
    assert all(f"{r.value:.2f}" in text for r in sp)
    for png in ("sweep_channels.png", "sweep_filter.png"):
        path = out.parent / png
        assert path.is_file() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_timing_table_keeps_thread_counts_and_batches_apart(tmp_path: Path):
    """A newer 2-thread batch-1 run must not hide the 1-thread rows or older batch-64 rows."""
    from xnorbench.db.store import Row
    from xnorbench.report.speed_tables import timing_table

    store = Store.open(str(tmp_path / "t.db"))

    def timing_run(threads: int, batches: dict[int, tuple[float, float]]) -> None:
        rid = store.start_run("timing", {}, {"threads": threads})
        rows = []
        for batch, (f, x) in batches.items():
            prm = {"batch": batch, "threads": threads}
            rows += [Row("inference_latency_ms", f, "ms", model="resnet18", variant="float",
                         params=prm),
                     Row("inference_latency_ms", x, "ms", model="resnet18", variant="xnor_packed",
                         params=prm),
                     Row("inference_speedup", f / x, "x", model="resnet18", variant="xnor_packed",
                         params=prm)]
        store.add_rows(rid, rows)
        store.finish_run(rid, "finished")

    timing_run(1, {1: (30.0, 6.0), 64: (1300.0, 370.0)})
    timing_run(1, {1: (32.0, 6.4)})   # newer batch-1 re-measurement
    timing_run(2, {1: (19.0, 4.3)})
    recs = {(r["threads"], r["batch"]): r for r in timing_table(store).records
            if "batch" in r}
    assert set(recs) == {(1, 1), (1, 64), (2, 1)}
    assert recs[(1, 1)]["float_ms"] == 32.0 and recs[(1, 1)]["speedup"] == 5.0
    assert recs[(1, 64)]["xnor_packed_ms"] == 370.0
    assert recs[(2, 1)]["xnor_packed_ms"] == 4.3
