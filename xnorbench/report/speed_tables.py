"""The measurement tables (sweep, ceilings, memory, timing, training step): each reads
the latest finished run that has its rows (per machine and thread count where that
matters), with the spread and the machine beside every figure."""

from __future__ import annotations

from typing import Any

from ..db import Result, Run, Store
from .selection import Selection
from .table_format import (
    MODEL_NAMES,
    NOT_RUN,
    Table,
    fmt,
    machine_label,
    pct,
    ratio,
)

SWEEP_METRICS = ("float_ms", "binary_ms", "binary_nopack_ms", "speedup", "speedup_nopack",
                 "theoretical_speedup")


def sweep_points(store: Store, selection: Selection = Selection()) -> list[dict[str, Any]]:
    """One dict per (threads, sweep, channels, kernel) from the newest finished runs.

    A point's shares of peak that were marked disturbed are listed under ``disturbed``
    (and never shown as results), a busy machine under ``busy``; an older run of the
    same point whose speedup differs beyond both measurements' spread is listed under
    ``disagrees`` as (run, speedup)."""
    points: dict[tuple, dict[str, Any]] = {}
    spreads: dict[tuple, dict[int, dict[str, Any]]] = {}  # key -> run -> metric -> row
    same: dict[int, tuple] = {}  # run -> (commit, cpu, isa): what makes two runs comparable
    for run in selection.runs(store, "sweep"):  # newest first
        same[run.id] = (run.git_commit, run.git_dirty, run.cpu_model)
        for r in store.results([run.id]):
            p = r.params or {}
            if "sweep" not in p:
                continue
            key = (p["threads"], p["sweep"], p["channels"], p["kernel"])
            if r.metric in ("speedup", "float_ms", "binary_ms"):
                spreads.setdefault(key, {}).setdefault(run.id, {})[r.metric] = r
            pt = points.setdefault(key, {"threads": p["threads"], "sweep": p["sweep"],
                                         "channels": p["channels"], "kernel": p["kernel"],
                                         "input_size": p.get("input_size"),
                                         "cpu": p.get("cpu"), "kernel_isa": p.get("kernel_isa"),
                                         "run_id": run.id})
            if pt["run_id"] == run.id and r.metric not in pt:
                pt[r.metric] = r.value
                if p.get("disturbed"):
                    pt.setdefault("disturbed", {})[r.metric] = p["disturbed"]
                if p.get("busy"):
                    pt["busy"] = p["busy"]
                if r.metric == "fastest_float_ms":
                    pt["fastest_engine"] = p.get("engine")
                    pt["unavailable_engines"] = p.get("unavailable") or {}
    for key, pt in points.items():
        alike = {rid: rows for rid, rows in spreads.get(key, {}).items()
                 if same[rid] == same[pt["run_id"]] and same[rid][0] and not same[rid][1]}
        pt["disagrees"] = _disagreements(pt["run_id"], alike)
    return sorted(points.values(), key=lambda d: (d["threads"], d["sweep"], d["channels"],
                                                  d["kernel"]))


def _relative_spread(rows: dict[str, Any]) -> float | None:
    """The speedup's relative spread from its two times' IQRs (None if not stored)."""
    out = 0.0
    for metric in ("float_ms", "binary_ms"):
        r = rows.get(metric)
        iqr = (r.params or {}).get("iqr_ms") if r is not None else None
        if iqr is None or not r.value:
            return None
        out += iqr / r.value
    return out


def _disagreements(newest: int, by_run: dict[int, dict[str, Any]]) -> list[tuple[int, float]]:
    """Older runs of one point (same clean commit, same CPU) whose speedup lies outside
    the two measurements' spread."""
    new = by_run.get(newest, {})
    if "speedup" not in new:
        return []
    s_new, rel_new = new["speedup"].value, _relative_spread(new)
    out = []
    for run_id, rows in by_run.items():
        if run_id == newest or "speedup" not in rows:
            continue
        s_old, rel_old = rows["speedup"].value, _relative_spread(rows)
        if rel_new is None or rel_old is None:
            continue
        if abs(s_new - s_old) > s_new * rel_new + s_old * rel_old:
            out.append((run_id, s_old))
    return out


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
        rows.append([str(p["run_id"]), p["sweep"], str(p["channels"]), str(p["kernel"]),
                     str(p["threads"]), fastest, fmt(p.get("float_ms"), 3),
                     fmt(p.get("binary_ms"), 3), fmt(p.get("binary_nopack_ms"), 3),
                     fmt(p.get("speedup_vs_fastest")), fmt(p.get("speedup_nopack_vs_fastest")),
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
        notes.append("Fastest float: the fastest of the float engines that ran here (torch "
                     "eager, torch.compile with freezing, ONNX Runtime), timed in the same "
                     "interleaved blocks after its output was checked against eager's; "
                     "Speedup is the binary conv against it, Speedup vs eager against torch "
                     "eager (oneDNN).")
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
                 ["Run", "Sweep", "Channels", "Filter", "Threads", "Fastest float ms",
                  "Eager float ms", "Binary ms", "Binary ms (packed input)", "Speedup",
                  "Speedup (packed input)", "Speedup vs eager", "Theoretical", "Ceiling",
                  "Binary % of peak", "Float % of peak", "Check"],
                 rows, notes, pts)


def ceilings_table(store: Store, selection: Selection = Selection()) -> Table:
    """Per-core peaks per kernel build and the conv point as a share of them (newest run)."""
    records: list[dict[str, Any]] = []
    runs: dict[int, Run] = {}
    seen: set[str] = set()
    for run in selection.runs(store, "ceilings"):  # newest first
        by_build: dict[str, dict[str, Any]] = {}
        for r in store.results([run.id]):
            if r.variant in seen:
                continue
            rec = by_build.setdefault(r.variant or "", {"build": r.variant, "run_id": run.id,
                                                         "disturbed": {}})
            rec[r.metric] = r.value
            p = r.params or {}
            if p.get("disturbed"):
                rec["disturbed"][r.metric] = p["disturbed"]
            for k in ("binary_isa", "fma_isa", "channels", "kernel", "input_size"):
                if p.get(k) is not None:
                    rec.setdefault(k, p[k])
        for build, rec in by_build.items():
            seen.add(build)
            records.append(rec)
            runs[run.id] = run
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


def _latest_rows(store: Store, suite: str, by_threads: bool = False,
                 selection: Selection = Selection(), device: str | None = None
                 ) -> dict[tuple, tuple[Result, Run]]:
    """{(dataset, model, variant, metric, batch, mode, threads): (row, run)}, newest runs.

    A model's rows all come from the newest finished run that measured it. With
    ``by_threads`` (timings) that holds per thread count, batch size and metric: a 2-thread
    run does not hide a 1-thread one, nor a batch-1 run an older batch-64 measurement.
    """
    out: dict[tuple, tuple[Result, Run]] = {}
    seen: dict[tuple, int] = {}
    for run in selection.runs(store, suite):
        if device is not None and _device_kind(run) != device:
            continue
        threads = run.threads if by_threads else None
        for r in store.results([run.id]):
            p = r.params or {}
            scope = (r.model or "", threads) + ((p.get("batch"), r.metric) if by_threads else ())
            if seen.setdefault(scope, run.id) != run.id:
                continue  # an older run of what a newer run already covers
            key = (r.dataset, r.model, r.variant, r.metric, p.get("batch"), p.get("mode"),
                   threads)
            out.setdefault(key, (r, run))
    return out


def _device_kind(run: Run) -> str:
    """'cuda' for a run on a GPU, else 'cpu' (runs stored before devices were: cpu)."""
    return "cuda" if (run.device or "cpu").startswith("cuda") else "cpu"


def _timing_devices(store: Store, selection: Selection) -> list[str]:
    return sorted({_device_kind(r) for r in selection.runs(store, "timing")})


def memory_table(store: Store, selection: Selection = Selection()) -> Table:
    """Packed vs float32 sizes and runtime memory peaks, per network (newest run)."""
    rows_by = _latest_rows(store, "memory", selection=selection)
    models_ = sorted({k[1] for k in rows_by if k[1]})
    rows, records, runs = [], [], {}

    def get(model: str, variant: str, metric: str, mode: str | None = None) -> float | None:
        for (_, m, v, met, _b, md, _t), (r, run) in rows_by.items():
            if m == model and v == variant and met == metric and (mode is None or md == mode):
                runs[run.id] = run
                return r.value
        return None

    for m in models_:
        rec = {
            "model": m,
            "packed_mib": get(m, "xnor", "packed_model_mib"),
            "float32_mib": get(m, "float", "float32_model_mib"),
            "compression": get(m, "xnor", "compression"),
            "packed_file_bytes": get(m, "xnor", "packed_file_bytes"),
            "float32_file_bytes": get(m, "float", "float32_file_bytes"),
            "binary_mac_share": get(m, "xnor", "binary_mac_share"),
            "infer_rss_float": get(m, "float", "inference_rss_increase_mib"),
            "infer_rss_xnor_packed": get(m, "xnor_packed", "inference_rss_increase_mib"),
            "train_rss_float": get(m, "float", "train_rss_increase_mib"),
            "train_rss_xnor": get(m, "xnor", "train_rss_increase_mib"),
            "infer_cuda_float": get(m, "float", "inference_cuda_max_allocated_mib"),
            "infer_cuda_xnor": get(m, "xnor", "inference_cuda_max_allocated_mib"),
            "train_cuda_float": get(m, "float", "train_cuda_max_allocated_mib"),
            "train_cuda_xnor": get(m, "xnor", "train_cuda_max_allocated_mib"),
        }
        records.append(rec)
        fb = rec["packed_file_bytes"]
        ff = rec["float32_file_bytes"]
        rows.append([MODEL_NAMES.get(m, m), fmt(rec["packed_mib"], 3),
                     fmt(rec["float32_mib"], 3), fmt(rec["compression"], 1) + "x",
                     NOT_RUN if fb is None else f"{fb / 2**20:.3f}",
                     NOT_RUN if ff is None else f"{ff / 2**20:.3f}",
                     fmt(rec["binary_mac_share"], 2) + " %",
                     fmt(rec["infer_rss_float"], 1), fmt(rec["infer_rss_xnor_packed"], 1)])
    notes = [f"run {rid}: {machine_label(run)}; RSS columns: peak RSS of a fresh process minus "
             f"its RSS after imports (MiB), batch {(run.params or {}).get('batch')}; training "
             "memory has its own table" for rid, run in sorted(runs.items())]
    for rec in records:
        if rec["train_cuda_float"] is not None:
            notes.append(f"{MODEL_NAMES.get(rec['model'], rec['model'])} on CUDA "
                         "(max_memory_allocated, MiB): inference float "
                         f"{fmt(rec['infer_cuda_float'], 1)}, XNOR "
                         f"{fmt(rec['infer_cuda_xnor'], 1)}; training step float "
                         f"{fmt(rec['train_cuda_float'], 1)}, XNOR "
                         f"{fmt(rec['train_cuda_xnor'], 1)}")
    return Table("Memory footprint: packed 1-bit vs float32",
                 ["Network", "Packed MiB", "Float32 MiB", "Compression", "Packed file MiB",
                  "Float32 file MiB", "Binary MACs", "Infer +RSS float",
                  "Infer +RSS XNOR packed"],
                 rows, notes, records)


def train_memory_table(store: Store, selection: Selection = Selection()) -> Table:
    """Training memory per network: bytes kept for backward and peak RSS, float vs XNOR.

    Runs from before the fused path measured XNOR training through BinOp only, under the
    variant name ``xnor``; such a run (no ``xnor_binop`` rows) shows it as BinOp.
    """
    rows_by = _latest_rows(store, "memory", selection=selection)
    wanted = {"train_saved_activation_mib": "saved", "train_rss_increase_mib": "rss",
              "train_cuda_max_allocated_mib": "cuda"}
    cells: dict[str, dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    for (_d, model, variant, metric, _b, _m, _t), (r, run) in rows_by.items():
        if metric not in wanted:
            continue
        rec = cells.setdefault(model, {"model": model, "run_id": run.id,
                                       "batch": (r.params or {}).get("batch")})
        rec[f"{wanted[metric]}_{variant}"] = r.value
        runs[run.id] = run
    rows, records = [], []
    for model, rec in sorted(cells.items()):
        if not any(k.endswith("_xnor_binop") for k in rec):  # a run from before fused
            for what in ("saved", "rss", "cuda"):
                if f"{what}_xnor" in rec:
                    rec[f"{what}_xnor_binop"] = rec.pop(f"{what}_xnor")
        records.append(rec)
        cols = [rec.get(f"{w}_{v}") for w in ("saved", "rss", "cuda")
                for v in ("float", "xnor", "xnor_binop")]
        rows.append([MODEL_NAMES.get(model, model), str(rec["batch"]),
                     *[fmt(v, 1) for v in cols]])
    notes = [f"run {rid}: {machine_label(run)}; saved for backward: every tensor autograd keeps, "
             "each storage once, parameters excluded (exact); +RSS: peak RSS of a fresh "
             "process minus its RSS after imports, glibc mmap threshold fixed at 64 KiB so "
             "freed tensors leave RSS; CUDA: max_memory_allocated (MiB)"
             for rid, run in sorted(runs.items())]
    notes.append("XNOR fused keeps 2 bits per binarized input (sign, |x| < 1) where float "
                 "keeps the BN output's activation; BinOp also holds a saved copy of every "
                 "latent weight.")
    return Table("Training memory (one SGD step): float vs XNOR fused vs XNOR BinOp",
                 ["Network", "Batch", "Saved float MiB", "Saved XNOR fused MiB",
                  "Saved XNOR BinOp MiB", "+RSS float", "+RSS XNOR fused", "+RSS XNOR BinOp",
                  "CUDA float", "CUDA XNOR fused", "CUDA XNOR BinOp"], rows, notes, records)


def saved_by_layer_table(store: Store, selection: Selection = Selection()) -> Table:
    """Bytes kept for backward per XNOR unit (and its float counterpart), per network."""
    rows_by = _latest_rows(store, "memory", selection=selection)
    layers: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    for run in {id(run): run for _r, run in rows_by.values()}.values():
        for r in store.results([run.id], metric="layer_saved_activation_kib"):
            layer = (r.params or {}).get("layer")
            rec = layers.setdefault((r.model or "", layer), {"model": r.model, "layer": layer,
                                                             "run_id": run.id})
            rec[f"{r.variant}_kib"] = r.value
            runs[run.id] = run
    rows, records = [], []
    for (model, _layer), rec in layers.items():
        f, x = rec.get("float_kib"), rec.get("xnor_kib")
        rec["ratio"] = x / f if f and x is not None else None
        records.append(rec)
        rows.append([MODEL_NAMES.get(model, model), rec["layer"], fmt(f, 1), fmt(x, 1),
                     ratio(rec["ratio"])])
    notes = [f"run {rid}: {machine_label(run)}" for rid, run in sorted(runs.items())]
    return Table("Saved for backward, per layer (KiB): float unit vs XNOR unit",
                 ["Network", "Layer", "Float KiB", "XNOR fused KiB", "XNOR / float"],
                 rows, notes, records)


def timing_table(store: Store, selection: Selection = Selection()) -> Table:
    """Inference latency, float vs XNOR, one row per thread count (and device: on a GPU
    the XNOR column is the simulated model, there being no GPU bit kernel)."""
    rows, records, runs = [], [], {}
    for device in _timing_devices(store, selection):
        rows_by = _latest_rows(store, "timing", by_threads=True, selection=selection,
                               device=device)
        keys = sorted({(k[1], k[4], k[6]) for k in rows_by if k[3] == "inference_latency_ms"},
                      key=lambda t: (t[0] or "", t[2] or 0, t[1] or 0))

        def row(model: str, variant: str, metric: str, batch: int | None,
                threads: int | None, rows_by: dict = rows_by) -> Any:
            for (_, m, v, met, b, _md, t), (r, run) in rows_by.items():
                if m == model and v == variant and met == metric and t == threads \
                        and (batch is None or b == batch):
                    runs[run.id] = run
                    return r
            return None

        def get(model: str, variant: str, metric: str, batch: int | None,
                threads: int | None) -> float | None:
            r = row(model, variant, metric, batch, threads)
            return None if r is None else r.value

        for model, batch, threads in keys:
            packed = get(model, "xnor", "inference_latency_ms", batch, threads)
            rec = {"model": model, "batch": batch, "threads": threads, "device": device,
                   "float_ms": get(model, "float", "inference_latency_ms", batch, threads),
                   "xnor_packed_ms": packed,
                   "xnor_simulated_ms": get(model, "xnor_simulated", "inference_latency_ms",
                                            batch, threads),
                   "speedup": get(model, "xnor" if packed is not None else "xnor_simulated",
                                  "inference_speedup", batch, threads)}
            fastest = row(model, "float", "inference_fastest_float_ms", batch, threads)
            if fastest is not None:
                rec.update(fastest_float_ms=fastest.value,
                           fastest_engine=(fastest.params or {}).get("engine"),
                           speedup_vs_fastest=get(model, "xnor", "inference_speedup_vs_fastest",
                                                  batch, threads))
            records.append(rec)
            best = (f"{fmt(rec['fastest_float_ms'], 3)} ({rec['fastest_engine']})"
                    if fastest is not None else "n/a (eager only)")
            rows.append([MODEL_NAMES.get(model, model), f"inference, batch {batch}", device,
                         str(threads), best, fmt(rec["float_ms"], 3),
                         fmt(rec["xnor_packed_ms"], 3), fmt(rec["xnor_simulated_ms"], 3),
                         ratio(rec.get("speedup_vs_fastest")), ratio(rec["speedup"])])
    isa = {}
    for run in runs.values():
        for r in store.results([run.id], metric="inference_latency_ms")[:1]:
            isa[run.id] = (r.params or {}).get("kernel_isa")
    notes = [f"run {rid}: {machine_label(run)}, kernel path {isa.get(rid)}; medians of "
             "interleaved torch.utils.benchmark blocks" for rid, run in sorted(runs.items())]
    if any(rec["device"] == "cuda" for rec in records):
        notes.append("On cuda the speedup is float vs the simulated XNOR model: there is no "
                     "GPU bit kernel, the packed kernels run on the CPU.")
    if any(rec.get("fastest_engine") for rec in records):
        notes.append("Fastest float: the fastest of torch eager, torch.compile (freezing) and "
                     "ONNX Runtime that ran here, each checked against eager's output and "
                     "timed in the same interleaved blocks; Speedup is XNOR packed against it, "
                     "Speedup vs eager against torch eager.")
    return Table("Running time: float vs XNOR (packed XNOR-popcount kernels)",
                 ["Network", "What", "Device", "Threads", "Fastest float ms", "Eager float ms",
                  "XNOR packed ms", "XNOR simulated ms", "Speedup", "Speedup vs eager"],
                 rows, notes, records)


def train_step_table(store: Store, selection: Selection = Selection()) -> Table:
    """Training step time and dispatched operators: float vs XNOR fused vs XNOR BinOp.

    Runs from before the fused path timed only BinOp, under the variant name ``xnor``;
    such a run (no ``xnor_binop`` rows) is shown in the BinOp column, where it belongs.
    """
    cells: dict[tuple, dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    for device in _timing_devices(store, selection):
        rows_by = _latest_rows(store, "timing", by_threads=True, selection=selection,
                               device=device)
        for (_d, model, variant, metric, batch, _m, threads), (r, run) in rows_by.items():
            if metric not in ("train_step_ms", "train_step_ops", "train_step_launches"):
                continue
            rec = cells.setdefault((device, model, batch, threads), {
                "model": model, "batch": batch, "threads": threads, "device": device,
                "run_id": run.id})
            rec[f"{variant}_{metric}"] = r.value
            runs[run.id] = run
    rows, records = [], []
    for (device, model, batch, threads), rec in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1] or "", kv[0][2] or 0, kv[0][3] or 0)):
        if "xnor_binop_train_step_ms" not in rec and "xnor_train_step_ops" not in rec:
            rec["xnor_binop_train_step_ms"] = rec.pop("xnor_train_step_ms", None)
        f, x, b = (rec.get(f"{v}_train_step_ms") for v in ("float", "xnor", "xnor_binop"))
        of, ox, ob = (rec.get(f"{v}_train_step_ops") for v in ("float", "xnor", "xnor_binop"))
        lf, lx = (rec.get(f"{v}_train_step_launches") for v in ("float", "xnor"))
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
