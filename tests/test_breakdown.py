"""Where a packed network's time goes: the extension's layer timers count what they say,
and ``run timing --profile`` stores every part for ``table --suite breakdown``."""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import binary_layer
from xnorbench.cli import app
from xnorbench.measure.breakdown import PARTS, packed_breakdown
from xnorbench.xnor.inference.packed_layers import pack_model
from xnorbench.xnor.kernels import load_kernels
from xnorbench.xnor.networks import models


def test_layer_timers_count_calls_and_time_only_while_on():
    kern = load_kernels()
    x, w = torch.randn(2, 64, 10, 10), torch.randn(32, 64, 3, 3)
    wp, alpha = kern.pack_weight(w), torch.ones(32)
    t, flip = torch.zeros(64), torch.zeros(64, dtype=torch.uint8)

    def call():
        return kern.run_binary_layer(binary_layer(kern, wp, alpha, 64, 32, 3, 1, 1, None, t,
                                                  flip), x)

    call()
    kern.kernel_profile_start()
    for _ in range(3):
        call()
    calls, total, pack, gemm = kern.kernel_profile_stop()
    assert calls == 3
    assert pack > 0 and gemm > 0 and total >= pack + gemm
    call()  # off again: nothing more is counted
    kern.kernel_profile_start()
    assert kern.kernel_profile_stop() == [0, 0, 0, 0]


@pytest.mark.parametrize("name,shape,binary_layers", [("lenet5", (1, 28, 28), 2),
                                                       ("resnet18", (3, 32, 32), None)])
def test_breakdown_has_every_part_and_counts_the_binary_calls(name, shape, binary_layers):
    torch.manual_seed(0)
    packed = pack_model(models.build(name, binary=True).eval())
    with torch.no_grad():
        b = packed_breakdown(partial(packed, torch.randn(2, *shape)), calls=2, blocks=3)
    assert list(b.parts) == list(PARTS)
    assert all(v >= 0 for v in b.parts.values())
    assert b.parts["binary GEMM"] > 0 and b.total_ms > 0
    if binary_layers is not None:
        assert b.binary_calls == binary_layers
    else:  # ResNet-18: two calls per block and the three downsampling shortcuts
        assert b.binary_calls == 19


def test_run_timing_profile_stores_the_parts_and_the_table_shows_them(tmp_path: Path):
    db = tmp_path / "t.db"
    res = CliRunner().invoke(app, ["--db", str(db), "run", "timing", "--model", "lenet5",
                                   "--batches", "1", "--profile", "--no-per-layer",
                                   "--float-engines", "eager", "--rounds", "1",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = [(m, json.loads(p)) for m, p in sqlite3.connect(db).execute(
        "select metric, params from results where metric like 'packed_%'")]
    parts = {p["part"] for m, p in rows if m == "packed_time_ms"}
    assert parts == set(PARTS)
    (gemm,) = [p for m, p in rows if m == "packed_binary_gemm_pct"]
    assert gemm["binary_calls"] == 2 and gemm["batch"] == 1
    table = CliRunner().invoke(app, ["--db", str(db), "table", "--suite", "breakdown"])
    assert table.exit_code == 0, table.output
    assert "| LeNet-5 | 1 | 1 |" in table.output and "binary GEMM ms (share)" in table.output
