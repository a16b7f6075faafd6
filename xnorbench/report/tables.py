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
