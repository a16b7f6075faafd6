"""Tables read from stored rows only: the mission's accuracy table and the sweep tables.

A table is a :class:`Table` (title, columns, rows, footnotes) rendered as markdown, CSV
or JSON. Cells come from the latest finished run that has them; a cell with no
finished result reads ``n/a (not run)``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..db import Result, Run, Store

NOT_RUN = "n/a (not run)"
DATASET_NAMES = {"mnist": "MNIST", "cifar10": "Cifar10"}
MODEL_NAMES = {"resnet18": "ResNet18", "lenet5": "LeNet-5", "nin": "NIN"}
MISSION_ROWS = [("mnist", "resnet18"), ("cifar10", "resnet18")]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    footnotes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # machine-readable


def latest_finished(store: Store, suite: str, metric: str) -> dict[tuple, tuple[Result, Run]]:
    """{(dataset, model, variant): (result, run)} from the newest finished run having it."""
    out: dict[tuple, tuple[Result, Run]] = {}
    for run in store.runs(suite=suite, status="finished"):  # newest first
        for r in store.results([run.id], metric=metric):
            out.setdefault((r.dataset, r.model, r.variant), (r, run))
    return out


def _recipe(r: Result, run: Run) -> str:
    p = r.params or {}
    parts = [f"run {run.id}", f"{p.get('epochs', '?')} epoch(s)",
             f"train {p.get('train_size', '?')} / test {p.get('test_size', '?')} images",
             f"{p.get('optimizer', '?')} lr {p.get('lr', '?')}",
             f"batch {p.get('batch_size', '?')}", f"grad rule {p.get('grad_rule', '?')}",
             f"device {run.device}" + (f" ({run.gpu_name})" if run.gpu_name else
                                       f" ({run.cpu_model}, {run.threads} threads)")]
    return ", ".join(parts)


def accuracy_table(store: Store) -> Table:
    """The mission's table: Dataset | Network | Accuracy | Accuracy of floating-point."""
    found = latest_finished(store, "accuracy", "final_test_accuracy")
    pairs = list(MISSION_ROWS)
    for ds, model, _ in found:
        if (ds, model) not in pairs:
            pairs.append((ds, model))
    rows, notes, records = [], [], []
    note_index: dict[tuple, int] = {}
    for ds, model in pairs:
        cells = []
        for variant in ("xnor", "float"):
            hit = found.get((ds, model, variant))
            if hit is None:
                cells.append(NOT_RUN)
                records.append({"dataset": ds, "network": model, "variant": variant,
                                "accuracy": None})
                continue
            r, run = hit
            recipe = _recipe(r, run)
            if recipe not in note_index:
                notes.append(recipe)
                note_index[recipe] = len(notes)
            cells.append(f"{r.value:.2f} % [{note_index[recipe]}]")
            records.append({"dataset": ds, "network": model, "variant": variant,
                            "accuracy": r.value, "run_id": run.id, "recipe": recipe,
                            **{k: (r.params or {}).get(k) for k in
                               ("epochs", "train_size", "test_size", "device")}})
        rows.append([DATASET_NAMES.get(ds, ds), MODEL_NAMES.get(model, model), *cells])
    return Table("Accuracy: XNOR-Net vs the same network in float",
                 ["Dataset", "Network", "Accuracy", "Accuracy of floating-point"], rows,
                 [f"[{i + 1}] {n}" for i, n in enumerate(notes)], records)


SWEEP_METRICS = ("float_ms", "binary_ms", "binary_nopack_ms", "speedup", "speedup_nopack",
                 "theoretical_speedup")


def sweep_points(store: Store) -> list[dict[str, Any]]:
    """One dict per (threads, sweep, channels, kernel) from the newest finished runs."""
    points: dict[tuple, dict[str, Any]] = {}
    for run in store.runs(suite="sweep", status="finished"):  # newest first
        for r in store.results([run.id]):
            p = r.params or {}
            if "sweep" not in p:
                continue
            key = (p["threads"], p["sweep"], p["channels"], p["kernel"])
            pt = points.setdefault(key, {"threads": p["threads"], "sweep": p["sweep"],
                                         "channels": p["channels"], "kernel": p["kernel"],
                                         "input_size": p.get("input_size"),
                                         "cpu": p.get("cpu"), "kernel_isa": p.get("kernel_isa"),
                                         "run_id": run.id})
            if pt["run_id"] == run.id and r.metric not in pt:
                pt[r.metric] = r.value
    return sorted(points.values(), key=lambda d: (d["threads"], d["sweep"], d["channels"],
                                                  d["kernel"]))


def _fmt(v: Any, digits: int = 2) -> str:
    return NOT_RUN if v is None else f"{v:.{digits}f}"


def sweep_table(store: Store) -> Table:
    """Both sweeps, per thread count, measured next to the paper's theoretical speedup."""
    pts = sweep_points(store)
    rows, notes = [], []
    for p in pts:
        status = "failed" if p.get("point_failed") else "ok"
        rows.append([p["sweep"], str(p["channels"]), str(p["kernel"]), str(p["threads"]),
                     _fmt(p.get("float_ms"), 3), _fmt(p.get("binary_ms"), 3),
                     _fmt(p.get("binary_nopack_ms"), 3), _fmt(p.get("speedup")),
                     _fmt(p.get("speedup_nopack")), _fmt(p.get("theoretical_speedup")), status])
    machines = sorted({(p["run_id"], p.get("cpu"), p.get("kernel_isa"), p.get("input_size"))
                       for p in pts})
    for run_id, cpu, isa, size in machines:
        notes.append(f"run {run_id}: {cpu}, kernel path {isa}, input {size}x{size}, batch 1; "
                     "medians of interleaved torch.utils.benchmark blocks")
    return Table("Speedup of binary over float convolution (paper Fig. 4 b-c)",
                 ["Sweep", "Channels", "Filter", "Threads", "Float ms", "Binary ms",
                  "Binary ms (packed input)", "Speedup", "Speedup (packed input)",
                  "Theoretical", "Check"], rows, notes, pts)


def to_markdown(t: Table) -> str:
    out = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |",
           "|" + "|".join([":---"] * len(t.columns)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in t.rows]
    if t.footnotes:
        out += [""] + t.footnotes
    return "\n".join(out) + "\n"


def render(t: Table, fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(t)
    if fmt == "json":
        return json.dumps(t.records, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys: list[str] = []
        for rec in t.records:
            keys += [k for k in rec if k not in keys]
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(t.records)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def _latest_rows(store: Store, suite: str,
                 by_threads: bool = False) -> dict[tuple, tuple[Result, Run]]:
    """{(dataset, model, variant, metric, batch, mode, threads): (row, run)}, newest runs.

    A model's rows all come from the newest finished run that measured it. With
    ``by_threads`` (timings) that holds per thread count, batch size and metric: a 2-thread
    run does not hide a 1-thread one, nor a batch-1 run an older batch-64 measurement.
    """
    out: dict[tuple, tuple[Result, Run]] = {}
    seen: dict[tuple, int] = {}
    for run in store.runs(suite=suite, status="finished"):
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


def _machine(run: Run) -> str:
    if run.gpu_name:
        return f"{run.gpu_name} (host {run.cpu_model})"
    return f"{run.cpu_model}, {run.threads} thread(s)"


def memory_table(store: Store) -> Table:
    rows_by = _latest_rows(store, "memory")
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
        rows.append([MODEL_NAMES.get(m, m), _fmt(rec["packed_mib"], 3),
                     _fmt(rec["float32_mib"], 3), _fmt(rec["compression"], 1) + "x",
                     NOT_RUN if fb is None else f"{fb / 2**20:.3f}",
                     NOT_RUN if ff is None else f"{ff / 2**20:.3f}",
                     _fmt(rec["binary_mac_share"], 2) + " %",
                     _fmt(rec["infer_rss_float"], 1), _fmt(rec["infer_rss_xnor_packed"], 1),
                     _fmt(rec["train_rss_float"], 1), _fmt(rec["train_rss_xnor"], 1)])
    notes = [f"run {rid}: {_machine(run)}; RSS columns: peak RSS of a fresh process minus "
             f"its RSS after imports (MiB), batch {(run.params or {}).get('batch')}; XNOR "
             "training keeps latent float weights (and optimizer state) beside binary ones"
             for rid, run in sorted(runs.items())]
    for rec in records:
        if rec["train_cuda_float"] is not None:
            notes.append(f"{MODEL_NAMES.get(rec['model'], rec['model'])} on CUDA "
                         "(max_memory_allocated, MiB): inference float "
                         f"{_fmt(rec['infer_cuda_float'], 1)}, XNOR "
                         f"{_fmt(rec['infer_cuda_xnor'], 1)}; training step float "
                         f"{_fmt(rec['train_cuda_float'], 1)}, XNOR "
                         f"{_fmt(rec['train_cuda_xnor'], 1)}")
    return Table("Memory footprint: packed 1-bit vs float32",
                 ["Network", "Packed MiB", "Float32 MiB", "Compression", "Packed file MiB",
                  "Float32 file MiB", "Binary MACs", "Infer +RSS float",
                  "Infer +RSS XNOR packed", "Train +RSS float", "Train +RSS XNOR"],
                 rows, notes, records)


def timing_table(store: Store) -> Table:
    """Inference latency and training step, float vs XNOR, one row per thread count."""
    rows_by = _latest_rows(store, "timing", by_threads=True)
    keys = sorted({(k[1], k[4], k[6]) for k in rows_by if k[3] == "inference_latency_ms"},
                  key=lambda t: (t[0] or "", t[2] or 0, t[1] or 0))
    rows, records, runs = [], [], {}

    def get(model: str, variant: str, metric: str, batch: int | None,
            threads: int | None) -> float | None:
        for (_, m, v, met, b, _md, t), (r, run) in rows_by.items():
            if m == model and v == variant and met == metric and t == threads \
                    and (batch is None or b == batch):
                runs[run.id] = run
                return r.value
        return None

    for model, batch, threads in keys:
        rec = {"model": model, "batch": batch, "threads": threads,
               "float_ms": get(model, "float", "inference_latency_ms", batch, threads),
               "xnor_packed_ms": get(model, "xnor", "inference_latency_ms", batch, threads),
               "xnor_simulated_ms": get(model, "xnor_simulated", "inference_latency_ms", batch,
                                        threads),
               "speedup": get(model, "xnor", "inference_speedup", batch, threads)}
        records.append(rec)
        rows.append([MODEL_NAMES.get(model, model), f"inference, batch {batch}", str(threads),
                     _fmt(rec["float_ms"], 3), _fmt(rec["xnor_packed_ms"], 3),
                     _fmt(rec["xnor_simulated_ms"], 3), _fmt(rec["speedup"]) + "x"])
    for model, threads in sorted({(k[0], k[2]) for k in keys},
                                 key=lambda t: (t[0] or "", t[1] or 0)):
        f = get(model, "float", "train_step_ms", None, threads)
        x = get(model, "xnor", "train_step_ms", None, threads)
        if f is None and x is None:
            continue
        records.append({"model": model, "threads": threads, "train_step_float_ms": f,
                        "train_step_xnor_ms": x})
        rows.append([MODEL_NAMES.get(model, model), "training step", str(threads), _fmt(f, 1),
                     _fmt(x, 1), "-", "-" if not (f and x) else f"{f / x:.2f}x"])
    isa = {run.id: (r.params or {}).get("kernel_isa") for r, run in rows_by.values()}
    notes = [f"run {rid}: {_machine(run)}, kernel path {isa.get(rid)}; medians of "
             "interleaved torch.utils.benchmark blocks; the training step of XNOR runs "
             "float-simulated binarization (as every training port does)"
             for rid, run in sorted(runs.items())]
    return Table("Running time: float vs XNOR (packed XNOR-popcount kernels)",
                 ["Network", "What", "Threads", "Float ms", "XNOR packed ms",
                  "XNOR simulated ms", "Speedup"], rows, notes, records)


def training_time_table(store: Store) -> Table:
    """Seconds per epoch and images/s of the accuracy runs behind the results table."""
    rows, records, notes = [], [], []
    found = latest_finished(store, "accuracy", "final_test_accuracy")
    for (ds, model, variant), (_r, run) in sorted(found.items(), key=lambda kv: str(kv[0])):
        secs = [x.value for x in store.results([run.id], metric="epoch_seconds",
                                                 variant=variant, model=model)]
        ips = [x.value for x in store.results([run.id], metric="train_images_per_second",
                                                variant=variant, model=model)]
        if not secs:
            continue
        rec = {"dataset": ds, "model": model, "variant": variant, "run_id": run.id,
               "mean_epoch_s": sum(secs) / len(secs), "mean_images_per_s": sum(ips) / len(ips),
               "device": _machine(run)}
        records.append(rec)
        rows.append([DATASET_NAMES.get(ds, ds), MODEL_NAMES.get(model, model), variant,
                     f"{rec['mean_epoch_s']:.1f}", f"{rec['mean_images_per_s']:.0f}",
                     f"run {run.id}: {rec['device']}"])
    return Table("Training time per epoch (accuracy runs)",
                 ["Dataset", "Network", "Variant", "s / epoch", "images / s", "Machine"],
                 rows, notes, records)


def compare_table(store: Store) -> Table:
    rows, records, notes = [], [], []
    for run in store.runs(suite="compare", status="finished"):
        finals = store.results([run.id], metric="final_test_accuracy")
        for r in finals:
            best = store.results([run.id], metric="best_test_accuracy", variant=r.variant)
            secs = [x.value for x in store.results([run.id], metric="epoch_seconds",
                                                     variant=r.variant)]
            rec = {"run_id": run.id, "dataset": r.dataset, "model": r.model,
                   "variant": r.variant, "final": r.value,
                   "best": best[0].value if best else None,
                   "mean_epoch_s": sum(secs) / len(secs) if secs else None}
            records.append(rec)
            rows.append([str(run.id), DATASET_NAMES.get(r.dataset, r.dataset),
                         MODEL_NAMES.get(r.model, r.model), r.variant, _fmt(rec["final"]),
                         _fmt(rec["best"]), _fmt(rec["mean_epoch_s"], 1)])
        if finals:
            notes.append(_recipe(finals[0], run))
    return Table("Vanilla vs binary training, and the three gradient rules",
                 ["Run", "Dataset", "Network", "Variant", "Final acc %", "Best acc %",
                  "s / epoch"], rows, notes, records)
