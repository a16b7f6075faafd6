"""The trade-off table: for a trained network, every way to deploy it (fp32, bf16, int8 on
each engine; XNOR simulated, packed, exported) with its test accuracy, latency and size,
and a sentence saying which precision wins on the measuring CPU and by how much."""

from __future__ import annotations

from typing import Any

from ..db import Result, Run, Store
from ..variants import Variant as V
from .selection import Selection
from .table_format import MODEL_NAMES, Table, fmt, machine_label

PRECISION_ORDER = {"fp32": 0, "bf16": 1, "int8": 2, "binary (simulated in fp32)": 3,
                   "binary": 4}

SIZE_KEY = {"fp32": "float", "bf16": "bf16", "int8": "int8",
            "binary (simulated in fp32)": "float"}
"""Which stored size each precision deploys (the XNOR forms have their own)."""


def _deployments(rows: list[Result]) -> list[dict[str, Any]]:
    """One record per (precision, engine) of one tradeoff run: accuracy, latency per
    batch, size."""
    sizes = {r.variant: r.value for r in rows if r.metric == "tradeoff_weights_bytes"}
    recs: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.metric not in ("tradeoff_test_accuracy", "tradeoff_latency_ms",
                            "tradeoff_unavailable"):
            continue
        p = r.params or {}
        rec = recs.setdefault(str(r.variant), {"variant": r.variant, "latency": {},
                                               "iqr": {}, "engine": p.get("engine"),
                                               "precision": p.get("precision")})
        if r.metric == "tradeoff_test_accuracy":
            rec["accuracy"] = r.value
        elif r.metric == "tradeoff_unavailable":
            rec["reason"] = p.get("reason")
        else:
            rec["latency"][p.get("batch")] = r.value
            rec["iqr"][p.get("batch")] = p.get("iqr_ms")
        if p.get("calibration_images") is not None:
            rec["calibration_images"] = p["calibration_images"]
    for rec in recs.values():
        key = SIZE_KEY.get(rec["precision"] or "", rec["variant"])
        rec["bytes"] = sizes.get(key)
    return sorted(recs.values(), key=lambda d: (PRECISION_ORDER.get(d["precision"], 9),
                                                d["variant"] != V.FLOAT, d["engine"] or ""))


def _fastest(recs: list[dict[str, Any]], batch: Any, where: Any) -> dict[str, Any] | None:
    have = [r for r in recs if where(r) and r["latency"].get(batch) is not None]
    return min(have, key=lambda r: r["latency"][batch]) if have else None


def label(r: dict[str, Any]) -> str:
    """A deployment as a reader names it: "XNOR on OpenVINO", "onnxruntime-int8",
    "openvino fp32" (an engine's name carries its precision unless it is fp32)."""
    if r["variant"] == V.XNOR_OPENVINO:
        return "XNOR exported to OpenVINO"
    if r["variant"] == V.XNOR_PACKED:
        return "XNOR packed (xnorbench kernels)"
    engine, precision = str(r["engine"]), str(r["precision"])
    return engine if engine.endswith(precision) else f"{engine} {precision}"


def _latency(rec: dict[str, Any], batch: int) -> str:
    """Median (IQR) in ms, or '-'."""
    value, iqr = rec["latency"].get(batch), rec["iqr"].get(batch)
    if value is None:
        return "-"
    return f"{value:.3f}" + ("" if iqr is None else f" ({iqr:.3f})")


def discussion(recs: list[dict[str, Any]], batch: Any, cpu: str) -> str | None:
    """Which deployment is fastest at ``batch`` on ``cpu``, and XNOR packed against the
    fastest int8 and fp32 ones, with their accuracies."""
    best = _fastest(recs, batch, lambda r: True)
    xnor = _fastest(recs, batch, lambda r: r["variant"] in (V.XNOR_PACKED, V.XNOR_OPENVINO))
    if best is None or xnor is None:
        return None

    def name(r: dict[str, Any]) -> str:
        acc = "" if r.get("accuracy") is None else f", {r['accuracy']:.2f} %"
        return f"{label(r)} ({r['latency'][batch]:.3f} ms{acc})"

    parts = [f"At batch {batch} on {cpu} the fastest deployment is {name(best)}."]
    for precision in ("int8", "bf16", "fp32"):
        other = _fastest(recs, batch, lambda r, q=precision: r["precision"] == q)
        if other is None:
            continue
        times = other["latency"][batch] / xnor["latency"][batch]
        spread = max(other["iqr"].get(batch) or 0.0, xnor["iqr"].get(batch) or 0.0)
        if abs(other["latency"][batch] - xnor["latency"][batch]) <= spread:
            verdict = (f"{name(xnor)} and the fastest {precision}, {name(other)}, are as "
                       f"fast as each other within their spreads ({times:.2f}x)")
        elif times >= 1:
            verdict = (f"{name(xnor)} is {times:.2f}x faster than the fastest "
                       f"{precision}, {name(other)}")
        else:
            verdict = (f"the fastest {precision}, {name(other)}, is {1 / times:.2f}x "
                       f"faster than {name(xnor)}")
        if other.get("accuracy") is not None and xnor.get("accuracy") is not None:
            gap = other["accuracy"] - xnor["accuracy"]
            verdict += (f"; the {precision} network is {abs(gap):.2f} points "
                        f"{'more' if gap >= 0 else 'less'} accurate")
        parts.append(verdict[0].upper() + verdict[1:] + ".")
    return " ".join(parts)


def tradeoff_table(store: Store, selection: Selection = Selection()) -> Table:
    """Every finished tradeoff run (newest first): one row per (precision, engine)."""
    rows, notes, records = [], [], []
    runs: list[Run] = selection.runs(store, "tradeoff")
    batches = sorted({int((r.params or {})["batch"]) for run in runs
                      for r in store.results([run.id], metric="tradeoff_latency_ms")
                      if (r.params or {}).get("batch") is not None})
    for run in runs:
        results = store.results([run.id])
        recs = _deployments(results)
        if not recs:
            continue
        first = next(r for r in results if r.metric.startswith("tradeoff_"))
        fp32 = next((r.get("accuracy") for r in recs if r["variant"] == V.FLOAT), None)
        p0 = first.params or {}
        for rec in recs:
            acc = rec.get("accuracy")
            delta = None if acc is None or fp32 is None else acc - fp32
            rows.append([str(run.id), MODEL_NAMES.get(str(first.model), str(first.model)),
                         str(first.dataset), str(rec["precision"]), str(rec["engine"]),
                         fmt(acc), "-" if delta is None else f"{delta:+.2f}",
                         *(_latency(rec, b) for b in batches),
                         "-" if rec.get("bytes") is None else f"{rec['bytes'] / 2**20:.3f}",
                         rec.get("reason") or ""])
            records.append({"run_id": run.id, "model": first.model, "dataset": first.dataset,
                            "of_run": p0.get("of_run"), **rec})
        calibration = next((r["calibration_images"] for r in recs
                            if r.get("calibration_images") is not None), None)
        notes.append(f"run {run.id}: networks trained by run {p0.get('of_run')} (seed "
                     f"{first.seed}); {machine_label(run)}; accuracy on the "
                     f"{p0.get('test_images')} test images"
                     + ("" if calibration is None else
                        f", int8 calibrated on {calibration} training images")
                     + "; latencies are medians (IQR) of interleaved blocks in one process")
        for batch in batches:
            text = discussion(recs, batch, run.cpu_model or "this CPU")
            if text:
                notes.append(text)
    notes.append("fp32 / bf16 / int8: the trained float network on each engine (int8: "
                 "static post-training quantization, calibrated on the run's first "
                 "training images (per-channel int8 weights), run by the engine that "
                 "quantized it); binary: the "
                 "XNOR network trained under the same recipe, simulated in fp32 (what "
                 "training evaluates), packed (xnorbench's kernels) and exported to "
                 "OpenVINO (BinaryConvolution). Δ: points against torch eager fp32. Size: "
                 "the weights each deploys (fp32 and bf16 counted, int8 the quantized "
                 "ONNX file, XNOR the packed file and the exported .bin).")
    return Table("What XNOR buys against what you would deploy instead",
                 ["Run", "Network", "Dataset", "Precision", "Engine", "Test accuracy %",
                  "Δ vs fp32", *(f"Latency ms (IQR), batch {b}" for b in batches),
                  "Weights MiB", "Not run because"], rows, notes, records)
