"""What the measurement tables read: the rows of the newest finished runs, keyed the
way each table pairs them. Builders (:mod:`.speed_tables`, :mod:`.memory_tables`) only
arrange and format what these return."""

from __future__ import annotations

from typing import Any

from ..db import Result, Run, Store
from .selection import Selection

MACHINE_STATE = ("load1", "steal_pct", "cpu_mhz", "busy")
"""What a timed row stores about the machine while it was measured (load, time stolen by
the hypervisor, clock, why it counted as busy): exported with every timed record, so a
CSV or JSON row carries what makes it trustworthy."""


def machine_state(params: dict[str, Any] | None) -> dict[str, Any]:
    """The machine state a row's params hold (keys of :data:`MACHINE_STATE` it has)."""
    p = params or {}
    return {k: p[k] for k in MACHINE_STATE if k in p}


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
                for k, v in machine_state(p).items():
                    pt.setdefault(k, v)
                if p.get("disturbed"):
                    pt.setdefault("disturbed", {})[r.metric] = p["disturbed"]
                if p.get("busy"):
                    pt["busy"] = p["busy"]
                if r.metric == "fastest_float_ms":
                    pt["fastest_engine"] = p.get("engine")
                    pt["unavailable_engines"] = p.get("unavailable") or {}
                if r.metric in ("fastest_bf16_ms", "fastest_int8_ms"):
                    pt[f"{r.metric[:-3]}_engine"] = p.get("engine")
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
        if r is None or iqr is None or not r.value:
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


def latest_rows(store: Store, suite: str, by_threads: bool = False,
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
        if device is not None and device_kind(run) != device:
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


def device_kind(run: Run) -> str:
    """'cuda' for a run on a GPU, else 'cpu' (runs stored before devices were: cpu)."""
    return "cuda" if (run.device or "cpu").startswith("cuda") else "cpu"


def timing_devices(store: Store, selection: Selection) -> list[str]:
    return sorted({device_kind(r) for r in selection.runs(store, "timing")})


def run_values(store: Store, run_id: int, metric: str, **match: Any) -> list[float]:
    """The values of ``metric`` in run ``run_id``'s rows that match ``match`` (columns:
    variant, model, seed, ...), in row order; rows without a value are left out."""
    return [r.value for r in store.results([run_id], metric=metric, **match)
            if r.value is not None]


LOWP_METRICS = frozenset({"int8_peak_gmacs", "bf16_peak_gmacs", "lowp_peak_unavailable",
                          "binary_over_int8_peak"})
"""A ceilings run's int8 / bf16 rows: one per CPU unit, not per kernel build (the
ceilings table states them in a note)."""


def ceilings_records(store: Store, selection: Selection = Selection()
                     ) -> tuple[list[dict[str, Any]], dict[int, Run]]:
    """One dict per kernel build from the newest ceilings run that measured it (its
    metrics, the shares marked disturbed, the conv point), and those runs by id."""
    records: list[dict[str, Any]] = []
    runs: dict[int, Run] = {}
    seen: set[str] = set()
    for run in selection.runs(store, "ceilings"):  # newest first
        by_build: dict[str, dict[str, Any]] = {}
        for r in store.results([run.id]):
            if r.variant in seen or r.metric in LOWP_METRICS:
                continue
            rec = by_build.setdefault(r.variant or "", {"build": r.variant, "run_id": run.id,
                                                         "disturbed": {}})
            rec[r.metric] = r.value
            p = r.params or {}
            for k, v in machine_state(p).items():
                rec.setdefault(k, v)
            if p.get("disturbed"):
                rec["disturbed"][r.metric] = p["disturbed"]
            for k in ("binary_isa", "fma_isa", "channels", "kernel", "input_size"):
                if p.get(k) is not None:
                    rec.setdefault(k, p[k])
        for build, rec in by_build.items():
            seen.add(build)
            records.append(rec)
            runs[run.id] = run
    return records, runs


def layer_values(store: Store, runs: list[Run], metric: str) -> list[dict[str, Any]]:
    """Per-layer rows of ``metric`` in ``runs``: model, layer, variant, value, run id."""
    return [{"model": r.model, "layer": (r.params or {}).get("layer"), "variant": r.variant,
             "value": r.value, "run_id": run.id}
            for run in runs for r in store.results([run.id], metric=metric)]


def newest_value(store: Store, metric: str) -> float | None:
    """The value of the newest stored row of ``metric`` (any run; None if none)."""
    rows = store.results(metric=metric)
    return rows[-1].value if rows else None


def kernel_path(store: Store, run_id: int) -> str | None:
    """The kernel path (``kernel_isa``) a timing run's inference rows were measured on."""
    for r in store.results([run_id], metric="inference_latency_ms")[:1]:
        return (r.params or {}).get("kernel_isa")
    return None
