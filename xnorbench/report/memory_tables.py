"""The memory tables: what packed storage saves, runtime peaks of inference and of a
training step, and the bytes a training step keeps for backward (per network and per
layer), float beside each XNOR form."""

from __future__ import annotations

from typing import Any

from ..db import Run, Store
from ..variants import TRAINING_STEPS
from .queries import latest_rows, layer_values
from .selection import Selection
from .table_format import MODEL_NAMES, NOT_RUN, Table, fmt, machine_label, ratio


def memory_table(store: Store, selection: Selection = Selection()) -> Table:
    """Packed vs float32 sizes and runtime memory peaks, per network (newest run)."""
    rows_by = latest_rows(store, "memory", selection=selection)
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
            "train_rss_xnor_fused": get(m, "xnor_fused", "train_rss_increase_mib"),
            "train_rss_xnor_binop": get(m, "xnor_binop", "train_rss_increase_mib"),
            "infer_cuda_float": get(m, "float", "inference_cuda_max_allocated_mib"),
            "infer_cuda_xnor": get(m, "xnor", "inference_cuda_max_allocated_mib"),
            "train_cuda_float": get(m, "float", "train_cuda_max_allocated_mib"),
            "train_cuda_xnor_fused": get(m, "xnor_fused", "train_cuda_max_allocated_mib"),
            "train_cuda_xnor_binop": get(m, "xnor_binop", "train_cuda_max_allocated_mib"),
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
                         f"{fmt(rec['infer_cuda_float'], 1)}, XNOR simulated "
                         f"{fmt(rec['infer_cuda_xnor'], 1)}; training step float "
                         f"{fmt(rec['train_cuda_float'], 1)}"
                         + "".join(f", {v.label} {fmt(rec[f'train_cuda_{v}'], 1)}"
                                   for v in TRAINING_STEPS[1:]
                                   if rec[f"train_cuda_{v}"] is not None))
    return Table("Memory footprint: packed 1-bit vs float32",
                 ["Network", "Packed MiB", "Float32 MiB", "Compression", "Packed file MiB",
                  "Float32 file MiB", "Binary MACs", "Infer +RSS float",
                  "Infer +RSS XNOR packed"],
                 rows, notes, records)


def train_memory_table(store: Store, selection: Selection = Selection()) -> Table:
    """Training memory per network: bytes kept for backward and peak RSS, float vs XNOR
    fused vs XNOR BinOp."""
    rows_by = latest_rows(store, "memory", selection=selection)
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
        records.append(rec)
        cols = [rec.get(f"{w}_{v}") for w in ("saved", "rss", "cuda")
                for v in TRAINING_STEPS]
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
    rows_by = latest_rows(store, "memory", selection=selection)
    layers: dict[tuple[str, str | None], dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    newest = {run.id: run for _r, run in rows_by.values()}
    for v in layer_values(store, list(newest.values()), "layer_saved_activation_kib"):
        rec = layers.setdefault((v["model"] or "", v["layer"]),
                                {"model": v["model"], "layer": v["layer"],
                                 "run_id": v["run_id"]})
        rec[f"{v['variant']}_kib"] = v["value"]
        runs[v["run_id"]] = newest[v["run_id"]]
    rows, records = [], []
    for (model, _layer), rec in layers.items():
        f, x = rec.get("float_kib"), rec.get("xnor_fused_kib")
        rec["ratio"] = x / f if f and x is not None else None
        records.append(rec)
        rows.append([MODEL_NAMES.get(model, model), rec["layer"], fmt(f, 1), fmt(x, 1),
                     ratio(rec["ratio"])])
    notes = [f"run {rid}: {machine_label(run)}" for rid, run in sorted(runs.items())]
    return Table("Saved for backward, per layer (KiB): float unit vs XNOR unit",
                 ["Network", "Layer", "Float KiB", "XNOR fused KiB", "XNOR / float"],
                 rows, notes, records)
