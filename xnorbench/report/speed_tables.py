"""The speed tables (sweep, ceilings, timing, training step): each shows the latest
finished run that has its rows (per machine and thread count where that matters), read
by :mod:`.queries`, with the spread and the machine beside every figure."""

from __future__ import annotations

from typing import Any

from ..db import Run, Store
from ..variants import TRAINING_STEPS
from .queries import (
    ceilings_records,
    kernel_path,
    latest_rows,
    machine_state,
    sweep_points,
    timing_devices,
)
from .selection import Selection
from .table_format import (
    MODEL_NAMES,
    Table,
    fmt,
    machine_label,
    pct,
    ratio,
)

BASELINES_NOTE = (
    "Baselines: the same float network on every engine and precision a deployer could "
    "pick (fp32: torch eager, torch.compile with freezing, ONNX Runtime, OpenVINO; bf16: "
    "torch with oneDNN and OpenVINO, only on a CPU with AVX512-BF16 or AMX; int8: ONNX "
    "Runtime and OpenVINO running one statically quantized QDQ graph), each checked against "
    "eager's fp32 output at its precision's tolerance and timed in the same interleaved "
    "blocks; the fastest per precision is named.")


def sweep_table(store: Store, selection: Selection = Selection()) -> Table:
    """Both sweeps, per thread count, measured next to the paper's theoretical speedup.

    The newest run of a point is the one shown; the Run column says which run each
    row comes from, and a footnote per run names its machine.
    """
    pts = sweep_points(store, selection)
    rows, notes = [], []
    for p in pts:
        status = "failed" if p.get("point_failed") else (
            "ok, busy machine" if p.get("busy") else "ok")
        disturbed = p.get("disturbed") or {}
        fastest = (f"{fmt(p.get('fastest_float_ms'), 3)} ({p['fastest_engine']})"
                   if p.get("fastest_engine") else "n/a (eager only)")
        low = [f"{fmt(p.get(f'fastest_{q}_ms'), 3)} ({p[f'fastest_{q}_engine']})"
               if p.get(f"fastest_{q}_engine") else "n/a" for q in ("int8", "bf16")]
        rows.append([str(p["run_id"]), p["sweep"], str(p["channels"]), str(p["kernel"]),
                     str(p["threads"]), fastest, low[0], low[1], fmt(p.get("float_ms"), 3),
                     fmt(p.get("openvino_binaryconv_ms"), 3),
                     fmt(p.get("binary_ms"), 3), fmt(p.get("binary_nopack_ms"), 3),
                     fmt(p.get("speedup_vs_fastest")), fmt(p.get("speedup_vs_fastest_int8")),
                     fmt(p.get("speedup_vs_fastest_bf16")),
                     fmt(p.get("speedup_vs_openvino_binaryconv")),
                     fmt(p.get("speedup_nopack_vs_fastest")),
                     fmt(p.get("speedup")), fmt(p.get("theoretical_speedup")),
                     fmt(p.get("ceiling_speedup"), 1),
                     *("disturbed" if m in disturbed else pct(p.get(m))
                       for m in ("binary_pct_of_peak", "float_pct_of_peak")), status])
    machines = sorted({(p["run_id"], p.get("cpu"), p.get("kernel_isa"), p.get("input_size"))
                       for p in pts})
    for run_id, cpu, isa, size in machines:
        n = sum(1 for p in pts if p["run_id"] == run_id)
        notes.append(f"run {run_id} ({n} row(s)): {cpu}, kernel path {isa}, input "
                     f"{size}x{size}, batch 1; medians of interleaved torch.utils.benchmark "
                     "blocks")
    if any(p.get("fastest_engine") for p in pts):
        notes.append(BASELINES_NOTE + " Speedup vs X is the binary conv (with the packing "
                     "of its input) against the fastest baseline at X; vs eager against "
                     "torch eager (oneDNN, fp32).")
    if any(p.get("openvino_binaryconv_ms") for p in pts):
        notes.append("OpenVINO binary: OpenVINO's BinaryConvolution (openvino-binaryconv: "
                     "the input binarized by a 2-level FakeQuantize, u1 weights, +1 "
                     "padding) on the same operands, its integers checked equal to this "
                     "kernel's; vs OpenVINO binary is its time over ours.")
    if any(p.get("disturbed") for p in pts):
        notes.append("disturbed: the work ran faster than the peak measured between its "
                     "rounds allows, so one of them was disturbed (another process, a clock "
                     "change); the share is kept in the db, flagged, and not shown.")
    if any(p.get("busy") for p in pts):
        notes.append("busy machine: load above the core count or time stolen by the "
                     "hypervisor while the point ran (its rows say which); its times are "
                     "the machine's, not the kernel's alone.")
    twice = [f"{p['sweep']} c={p['channels']} k={p['kernel']} {p['threads']} thr: run "
             f"{p['run_id']} {fmt(p.get('speedup'))}x vs "
             + ", ".join(f"run {rid} {fmt(v)}x" for rid, v in p["disagrees"])
             for p in pts if p.get("disagrees")]
    if twice:
        notes.append("Measured twice by one commit on one CPU, further apart than their "
                     "spreads (the newest is shown): " + "; ".join(twice) + ".")
    missing = sorted({f"{e} ({why})" for p in pts
                      for e, why in (p.get("unavailable_engines") or {}).items()})
    if missing:
        notes.append("Not run here: " + "; ".join(missing) + ".")
    if any(p.get("ceiling_speedup") for p in pts):
        notes.append("Ceiling: binary MACs per float MAC at this core's two register-only "
                     "peaks (`xnorbench run ceilings`), the most a binary conv can gain over "
                     "a perfect float conv; Theoretical is the paper's operation count. "
                     "% of peak: the binary conv on a packed input vs the XOR+popcount peak, "
                     "the float conv vs the fp32 FMA peak (both times the threads).")
    return Table("Speedup of binary over float convolution (paper Fig. 4 b-c)",
                 ["Run", "Sweep", "Channels", "Filter", "Threads", "Fastest fp32 ms",
                  "Fastest int8 ms", "Fastest bf16 ms", "Eager fp32 ms", "OpenVINO binary ms",
                  "Binary ms", "Binary ms (packed input)", "Speedup vs fp32",
                  "Speedup vs int8", "Speedup vs bf16", "vs OpenVINO binary",
                  "Speedup vs fp32 (packed input)", "Speedup vs eager", "Theoretical", "Ceiling",
                  "Binary % of peak", "Float % of peak", "Check"],
                 rows, notes, pts)


def ceilings_table(store: Store, selection: Selection = Selection()) -> Table:
    """Per-core peaks per kernel build and the conv point as a share of them (newest run)."""
    records, runs = ceilings_records(store, selection)
    rows = [[str(r["run_id"]), r["build"], str(r.get("binary_isa")),
             fmt(r.get("fp32_peak_gflops"), 1), fmt(r.get("binary_peak_gmacs"), 0),
             fmt(r.get("peak_ratio"), 1) + "x",
             *("disturbed" if m in r["disturbed"] else pct(r.get(m))
               for m in ("binary_nopack_conv_pct_of_peak", "binary_conv_pct_of_peak",
                         "float_conv_pct_of_peak")),
             "-" if r.get("measured_speedup") is None else f"{r['measured_speedup']:.1f}x"]
            for r in records]
    notes = [f"run {rid}: {machine_label(run)}; one thread; conv point: c={recs[0].get('channels')}"
             f", {recs[0].get('kernel')}x{recs[0].get('kernel')}, "
             f"{recs[0].get('input_size')}x{recs[0].get('input_size')}, batch 1"
             for rid, run in sorted(runs.items())
             for recs in [[r for r in records if r["run_id"] == rid]]]
    for rid in sorted(runs):
        lowp = _lowp_note(store, rid)
        if lowp:
            notes.append(lowp)
    notes.append("Peaks: register-only loops (fp32: 12 independent FMA chains at the build's "
                 "widest vectors; binary: the build's popcount instruction mix), run "
                 "between the rounds of the convs they bound; the best block of each is the "
                 "peak, so a share above 100 % means a disturbed measurement, shown as "
                 "'disturbed' and not as a result. Ratio = "
                 "binary MACs per float MAC at peak, the most a binary conv can gain over a "
                 "perfect float conv on this core. Binary conv on a packed input / with "
                 "packing vs the build's binary peak; float F.conv2d (torch, mkldnn) vs the "
                 "native fp32 peak; speedup = float conv / binary conv on a packed input.")
    return Table("Ceilings: per-core peaks and the conv as a share of them",
                 ["Run", "Build", "Popcount path", "fp32 GFLOP/s", "Binary GMAC/s",
                  "Ratio", "Binary conv % (packed input)", "Binary conv % (with packing)",
                  "Float conv %", "Speedup"], rows, notes, records)


def _lowp_note(store: Store, run_id: int) -> str | None:
    """A ceilings run's int8 and bf16 peaks per unit (or why a unit is missing), and the
    binary peak over the best int8 one, as one sentence."""
    parts, ratio_ = [], None
    for r in store.results([run_id]):
        p = r.params or {}
        if r.metric in ("int8_peak_gmacs", "bf16_peak_gmacs"):
            parts.append(f"{p.get('precision')} {r.variant} ({p.get('instruction')}) "
                         f"{r.value:.0f} GMAC/s")
        elif r.metric == "lowp_peak_unavailable":
            parts.append(f"{p.get('precision')} {r.variant}: none ({p.get('reason')})")
        elif r.metric == "binary_over_int8_peak":
            ratio_ = r.value
    if not parts:
        return None
    tail = (f"; binary peak / best int8 peak = {ratio_:.1f}x, the most a binary conv can "
            "gain over a perfect int8 conv on this core" if ratio_ else "")
    return f"run {run_id}, low-precision peaks per core: " + "; ".join(parts) + tail + "."


class _TimingRows:
    """The latest timing rows of one device, looked up by cell; remembers the runs read."""

    def __init__(self, rows_by: dict[tuple, tuple[Any, Run]], runs: dict[int, Run]) -> None:
        self.rows_by, self.runs = rows_by, runs

    def row(self, model: str, variant: str, metric: str, batch: int | None,
            threads: int | None) -> Any:
        for (_, m, v, met, b, _md, t), (r, run) in self.rows_by.items():
            if m == model and v == variant and met == metric and t == threads \
                    and (batch is None or b == batch):
                self.runs[run.id] = run
                return r
        return None

    def get(self, model: str, variant: str, metric: str, batch: int | None,
            threads: int | None) -> float | None:
        r = self.row(model, variant, metric, batch, threads)
        return None if r is None else r.value


def _timing_record(look: _TimingRows, model: str, batch: int, threads: int,
                   device: str) -> dict[str, Any]:
    """One cell of the timing table: every engine's latency and the speedups."""
    def get(variant: str, metric: str) -> float | None:
        return look.get(model, variant, metric, batch, threads)

    packed = get("xnor_packed", "inference_latency_ms")
    rec: dict[str, Any] = {
        "model": model, "batch": batch, "threads": threads, "device": device,
        "float_ms": get("float", "inference_latency_ms"), "xnor_packed_ms": packed,
        "xnor_simulated_ms": get("xnor", "inference_latency_ms"),
        "speedup": get("xnor_packed" if packed is not None else "xnor", "inference_speedup")}
    timed = look.row(model, "float", "inference_latency_ms", batch, threads)
    rec.update(machine_state(timed.params if timed is not None else None))
    for q in ("int8", "bf16"):
        low = look.row(model, "float", f"inference_fastest_{q}_ms", batch, threads)
        if low is not None:
            rec.update({f"fastest_{q}_ms": low.value,
                        f"fastest_{q}_engine": (low.params or {}).get("engine"),
                        f"speedup_vs_fastest_{q}": get(
                            "xnor_packed", f"inference_speedup_vs_fastest_{q}")})
    rec["xnor_openvino_ms"] = get("xnor_openvino", "inference_latency_ms")
    fastest = look.row(model, "float", "inference_fastest_float_ms", batch, threads)
    if fastest is not None:
        rec.update(fastest_float_ms=fastest.value,
                   fastest_engine=(fastest.params or {}).get("engine"),
                   speedup_vs_fastest=get("xnor_packed", "inference_speedup_vs_fastest"))
    return rec


def _timing_cells(rec: dict[str, Any]) -> list[str]:
    """A timing record as the table's row."""
    best = (f"{fmt(rec['fastest_float_ms'], 3)} ({rec['fastest_engine']})"
            if "fastest_float_ms" in rec else "n/a (eager only)")
    low = [f"{fmt(rec[f'fastest_{q}_ms'], 3)} ({rec[f'fastest_{q}_engine']})"
           if rec.get(f"fastest_{q}_engine") else "n/a" for q in ("int8", "bf16")]
    return [MODEL_NAMES.get(rec["model"], rec["model"]), f"inference, batch {rec['batch']}",
            rec["device"], str(rec["threads"]), best, *low, fmt(rec["float_ms"], 3),
            fmt(rec["xnor_packed_ms"], 3), fmt(rec["xnor_openvino_ms"], 3),
            fmt(rec["xnor_simulated_ms"], 3), ratio(rec.get("speedup_vs_fastest")),
            ratio(rec.get("speedup_vs_fastest_int8")),
            ratio(rec.get("speedup_vs_fastest_bf16")), ratio(rec["speedup"])]


def timing_table(store: Store, selection: Selection = Selection()) -> Table:
    """Inference latency, float vs XNOR, one row per thread count (and device: on a GPU
    the XNOR column is the simulated model, there being no GPU bit kernel)."""
    records: list[dict[str, Any]] = []
    runs: dict[int, Run] = {}
    for device in timing_devices(store, selection):
        rows_by = latest_rows(store, "timing", by_threads=True, selection=selection,
                               device=device)
        keys = sorted({(k[1], k[4], k[6]) for k in rows_by if k[3] == "inference_latency_ms"},
                      key=lambda t: (t[0] or "", t[2] or 0, t[1] or 0))
        look = _TimingRows(rows_by, runs)
        records += [_timing_record(look, model, batch, threads, device)
                    for model, batch, threads in keys]
    isa = {run_id: kernel_path(store, run_id) for run_id in runs}
    notes = [f"run {rid}: {machine_label(run)}, kernel path {isa.get(rid)}; medians of "
             "interleaved torch.utils.benchmark blocks" for rid, run in sorted(runs.items())]
    if any(rec["device"] == "cuda" for rec in records):
        notes.append("On cuda the speedup is float vs the simulated XNOR model: there is no "
                     "GPU bit kernel, the packed kernels run on the CPU.")
    if any(rec.get("fastest_engine") for rec in records):
        notes.append(BASELINES_NOTE + " Speedup vs X is XNOR packed against the fastest "
                     "baseline at X; vs eager against torch eager (fp32).")
    if any(rec.get("xnor_openvino_ms") for rec in records):
        notes.append("XNOR on OpenVINO: the same XNOR network exported by `xnorbench "
                     "export` (binary layers on OpenVINO's BinaryConvolution), its output "
                     "checked against the packed network's.")
    return Table("Running time: float vs XNOR (packed XNOR-popcount kernels)",
                 ["Network", "What", "Device", "Threads", "Fastest fp32 ms",
                  "Fastest int8 ms", "Fastest bf16 ms", "Eager fp32 ms", "XNOR packed ms",
                  "XNOR on OpenVINO ms", "XNOR simulated ms", "Speedup vs fp32",
                  "Speedup vs int8", "Speedup vs bf16", "Speedup vs eager"],
                 [_timing_cells(rec) for rec in records], notes, records)


def train_step_table(store: Store, selection: Selection = Selection()) -> Table:
    """Training step time and dispatched operators: float vs XNOR fused vs XNOR BinOp."""
    cells: dict[tuple, dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    for device in timing_devices(store, selection):
        rows_by = latest_rows(store, "timing", by_threads=True, selection=selection,
                               device=device)
        for (_d, model, variant, metric, batch, _m, threads), (r, run) in rows_by.items():
            if metric not in ("train_step_ms", "train_step_ops", "train_step_launches"):
                continue
            rec = cells.setdefault((device, model, batch, threads), {
                "model": model, "batch": batch, "threads": threads, "device": device,
                "run_id": run.id})
            rec[f"{variant}_{metric}"] = r.value
            if metric == "train_step_ms":
                for k, v in machine_state(r.params).items():
                    rec.setdefault(k, v)
            runs[run.id] = run
    rows, records = [], []
    for (device, model, batch, threads), rec in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1] or "", kv[0][2] or 0, kv[0][3] or 0)):
        f, x, b = (rec.get(f"{v}_train_step_ms") for v in TRAINING_STEPS)
        of, ox, ob = (rec.get(f"{v}_train_step_ops") for v in TRAINING_STEPS)
        lf, lx = (rec.get(f"{v}_train_step_launches") for v in TRAINING_STEPS[:2])
        rec.update(fused_ratio=x / f if f and x else None, binop_ratio=b / f if f and b else None,
                   fused_ops_ratio=ox / of if of and ox else None,
                   fused_launches_ratio=lx / lf if lf and lx else None)
        records.append(rec)
        rows.append([MODEL_NAMES.get(model, model), str(batch), device, str(threads),
                     fmt(f, 1), fmt(x, 1), fmt(b, 1), ratio(rec["fused_ratio"]),
                     ratio(rec["binop_ratio"]), fmt(of, 0), fmt(ox, 0), fmt(ob, 0),
                     ratio(rec["fused_ops_ratio"]), fmt(lf, 0), fmt(lx, 0),
                     ratio(rec["fused_launches_ratio"])])
    notes = [f"run {rid}: {machine_label(run)}; medians of interleaved torch.utils.benchmark "
             "blocks; one SGD step on random data; operators counted with torch.profiler "
             "(nested included); launches: operators called from outside another one plus "
             "the kernels of compiled regions (what a GPU pays a launch for; the fused "
             "layers' GPU path runs compiled graphs)" for rid, run in sorted(runs.items())]
    notes.append("XNOR fused: layers binarize weights in forward, apply the gradient rule in "
                 "backward and keep bits for backward; XNOR BinOp: the original port's "
                 "workflow (binarize in place, restore, rule after backward). Both train "
                 "identically on the CPU, and to rounding on the GPU path (tested).")
    return Table("Training step: float vs XNOR (fused layers, and the port's BinOp)",
                 ["Network", "Batch", "Device", "Threads", "Float ms", "XNOR fused ms",
                  "XNOR BinOp ms",
                  "Fused / float", "BinOp / float", "Ops float", "Ops fused", "Ops BinOp",
                  "Ops fused / float", "Launches float", "Launches fused",
                  "Launches fused / float"], rows, notes, records)
