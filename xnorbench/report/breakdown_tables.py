"""Where a packed network's inference time goes (``run timing --profile``): per network,
batch and thread count, the newest run's parts (binary GEMM, packing, float layers,
copies, Python) with their shares, so a reader sees whether the binary GEMMs, the part
XNOR speeds up, are what the network spends its time on."""

from __future__ import annotations

from typing import Any

from ..db import Run, Store
from ..measure.breakdown import PARTS
from .selection import Selection
from .table_format import MODEL_NAMES, Table, machine_label


def breakdown_records(store: Store, selection: Selection = Selection()
                      ) -> tuple[list[dict[str, Any]], dict[int, Run]]:
    """One record per (network, batch, threads) from the newest timing run that profiled
    it: total, each part's ms and share, and the run."""
    records: dict[tuple, dict[str, Any]] = {}
    runs: dict[int, Run] = {}
    for run in selection.runs(store, "timing"):  # newest first
        for r in store.results([run.id], metric="packed_time_ms"):
            p = r.params or {}
            key = (r.model, p.get("batch"), run.threads)
            rec = records.get(key)
            if rec is None:
                rec = records[key] = {"run_id": run.id, "model": r.model,
                                      "batch": p.get("batch"), "threads": run.threads,
                                      "total_ms": p.get("breakdown_total_ms"), "parts": {},
                                      "shares": {}, "cpu": run.cpu_model}
                runs[run.id] = run
            if rec["run_id"] != run.id:
                continue  # a newer run profiled this one already
            rec["parts"][p.get("part")] = r.value
            rec["shares"][p.get("part")] = p.get("share_pct")
    ordered = sorted(records.values(), key=lambda d: (str(d["model"]), d["threads"] or 0,
                                                      d["batch"] or 0))
    return ordered, runs


def breakdown_table(store: Store, selection: Selection = Selection()) -> Table:
    """The packed networks' time by part, with each part's share."""
    records, runs = breakdown_records(store, selection)
    rows = []
    for rec in records:
        cells = []
        for part in PARTS:
            ms, share = rec["parts"].get(part), rec["shares"].get(part)
            cells.append("-" if ms is None else f"{ms:.3f} ({share or 0:.0f} %)")
        rows.append([str(rec["run_id"]), MODEL_NAMES.get(str(rec["model"]), str(rec["model"])),
                     str(rec["batch"]), str(rec["threads"]),
                     "-" if rec["total_ms"] is None else f"{rec['total_ms']:.3f}", *cells])
    notes = [f"run {rid}: {machine_label(run)}" for rid, run in sorted(runs.items())]
    notes.append(
        "Per call of the packed network, the median of 5 blocks of 5 calls: binary GEMM "
        "(XNOR-popcount and its epilogue) and packing (sign-packing a float input, and the "
        "AVX2 path's nibble-split copy) by the extension's own timers, binary call overhead "
        "the rest of those calls (allocation, checks); the float operators outside them by "
        "torch.profiler's self time in a separate pass; Python and dispatch the wall time "
        "neither accounts for. XNOR speeds up only the first part.")
    return Table("Where the packed network's time goes",
                 ["Run", "Network", "Batch", "Threads", "Total ms",
                  *(f"{p} ms (share)" for p in PARTS)], rows, notes, records)
