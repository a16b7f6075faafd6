"""The float baseline is the fastest engine that could run the same work: each engine
computes eager's outputs before it is timed, one that cannot run or disagrees is left
out with its reason, and sweep and timing rows quote the speedup against the fastest
(named) with eager's beside it."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.measure import float_engines
from xnorbench.xnor import models

runner = CliRunner()


@pytest.mark.parametrize("name", ["lenet5", "conv"])
def test_every_engine_computes_eagers_outputs(name):
    torch.manual_seed(0)
    if name == "conv":
        module, x = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False), torch.randn(1, 16, 8, 8)
    else:
        module, x = models.build(name, binary=False), torch.randn(2, 1, 28, 28)
    engines = float_engines.build(module.eval(), x, float_engines.ENGINES, threads=1)
    assert float_engines.unavailable(engines) == {}  # the test extras install all three
    with torch.no_grad():
        ref = module(x)
    for engine, run in float_engines.available(engines).items():
        got = run()
        got = got if isinstance(got, torch.Tensor) else torch.from_numpy(got)
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()),
                                   msg=engine)


def test_an_engine_that_disagrees_is_left_out_with_why(monkeypatch):
    def wrong(module, x, threads):
        return lambda: module(x) + 1.0  # a broken graph

    monkeypatch.setitem(float_engines._BUILDERS, "compile", wrong)
    conv, x = torch.nn.Conv2d(4, 4, 3), torch.randn(1, 4, 6, 6)
    engines = float_engines.build(conv, x, ["eager", "compile"], threads=1)
    assert set(float_engines.available(engines)) == {"eager"}
    assert "differs from eager" in float_engines.unavailable(engines)["compile"]


def test_a_missing_onnxruntime_says_how_to_install_it(monkeypatch):
    real = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no module named onnxruntime")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    engines = float_engines.build(torch.nn.Conv2d(4, 4, 1), torch.randn(1, 4, 3, 3),
                                  ["eager", "onnxruntime"], threads=1)
    assert "pip install 'xnorbench[onnx]'" in float_engines.unavailable(engines)["onnxruntime"]


def _run(db: str, *args: str) -> Store:
    """Run one command into ``db`` (it must succeed) and open the store."""
    res = runner.invoke(app, ["--db", db, *args, "--no-progress"])
    assert res.exit_code == 0, res.output
    return Store.open(db)


def test_sweep_quotes_the_speedup_against_the_fastest_engine(tmp_path: Path):
    db = str(tmp_path / "s.db")
    store = _run(db, "sweep", "--channels", "32", "--kernel", "3", "--fixed-channels", "32",
                 "--input-size", "8", "--rounds", "1")
    for sweep in ("channels", "kernel"):
        by = {r.metric: r for r in store.results([1]) if r.params.get("sweep") == sweep}
        engines = {"float_ms": "eager", "float_compile_ms": "compile",
                   "float_onnxruntime_ms": "onnxruntime"}
        times = {e: by[m].value for m, e in engines.items()}
        fastest = by["fastest_float_ms"]
        assert fastest.params["engine"] == min(times, key=times.get)
        assert fastest.value == min(times.values())
        assert fastest.params["eager_ms"] == by["float_ms"].value
        assert by["speedup_vs_fastest"].value == pytest.approx(
            fastest.value / by["binary_ms"].value)
        assert by["speedup_vs_fastest"].value <= by["speedup"].value  # eager is one of them
    table = runner.invoke(app, ["--db", db, "table", "--suite", "sweep"]).output
    assert "Fastest float ms" in table and f"({fastest.params['engine']})" in table


def test_timing_quotes_the_fastest_engine_for_the_network(tmp_path: Path):
    db = str(tmp_path / "t.db")
    store = _run(db, "run", "timing", "--model", "lenet5", "--batches", "1", "--threads", "1",
                 "--rounds", "1", "--no-per-layer")
    lat = {r.variant: r.value for r in store.results([1], metric="inference_latency_ms")}
    assert {"float", "float_compile", "float_onnxruntime", "xnor", "xnor_packed"} <= set(lat)
    (fastest,) = store.results([1], metric="inference_fastest_float_ms")
    engine = fastest.params["engine"]
    assert fastest.value == lat["float" if engine == "eager" else f"float_{engine}"]
    assert fastest.value == min(v for k, v in lat.items() if k.startswith("float"))
    (speedup,) = store.results([1], metric="inference_speedup_vs_fastest")
    assert speedup.value == pytest.approx(fastest.value / lat["xnor_packed"])
    table = runner.invoke(app, ["--db", db, "table", "--suite", "timing"]).output
    assert f"({engine})" in table and "Speedup vs eager" in table


def test_eager_must_be_among_the_engines(tmp_path: Path):
    res = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "sweep", "--float-engines",
                              "onnxruntime"])
    assert res.exit_code == 2 and "eager must be among them" in res.output
    res = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "sweep", "--float-engines",
                              "eager,tvm"])
    assert res.exit_code == 2 and "unknown float engine 'tvm'" in res.output
