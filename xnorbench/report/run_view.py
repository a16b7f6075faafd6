"""One run, everything stored about it: for people (a rich view) and for machines (JSON).

``runs show ID`` prints the view: the run's status and timings, the exact command, its
options as resolved (a training run's learning rate as the recipe computes it, not the
``None`` a flag left), where it ran (each context field once), and its result rows as a
table. ``runs show ID --json`` prints the same record as one JSON object.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from ..db import Run, Store, is_stale, redact

STALE_AFTER = timedelta(minutes=10)
TRAINING_SUITES = ("accuracy", "compare")
CONTEXT_SHOWN = ("git_commit", "git_dirty", "xnorbench_version", "torch_version",
                 "torchvision_version", "python_version", "os", "hostname", "cpu_model",
                 "threads", "device", "gpu_name", "seed")
"""Run columns describing where and how it ran (``cpu_flags`` is left to --json)."""


def resolved_params(run: Run) -> dict[str, Any]:
    """The run's options; a training run's through its recipe, so lr is a number."""
    params = dict(run.params or {})
    if run.suite in TRAINING_SUITES:
        from ..training.recipes import recipe_from

        try:
            recipe = recipe_from(params)
        except (TypeError, ValueError):  # a run stored by an older version
            return params
        params["lr"] = recipe.learning_rate
    return params


def _iso(t: datetime | None) -> str | None:
    return f"{t:%Y-%m-%d %H:%M:%S}" if t else None


def run_record(store: Store, run: Run) -> dict[str, Any]:
    """Everything stored about ``run`` as plain data (what ``--json`` prints)."""
    columns = {c.key for c in run.__table__.columns}
    context = dict(run.context or {})
    record: dict[str, Any] = {
        "id": run.id, "suite": run.suite, "status": run.status,
        "stale": is_stale(run, STALE_AFTER),
        "started_at": _iso(run.started_at), "ended_at": _iso(run.ended_at),
        "heartbeat_at": _iso(run.heartbeat_at),
        "seconds": (run.ended_at - run.started_at).total_seconds()
        if run.ended_at and run.started_at else None,
        "command": redact(run.command) if run.command else None,
        "error": run.error, "tags": store.tags([run.id]).get(run.id, []),
        "params": resolved_params(run),
    }
    for key in sorted(columns - set(record) - {"context", "owner"}):
        record[key] = getattr(run, key)
    record["context"] = {k: v for k, v in context.items() if k not in columns}
    rows = store.results([run.id])
    record["rows"] = len(rows)
    record["results"] = [
        {"metric": r.metric, "value": r.value, "unit": r.unit or None, "dataset": r.dataset,
         "model": r.model, "variant": r.variant, "seed": r.seed, "epoch": r.epoch,
         "step": r.step, "recipe_key": r.recipe_key, "params": r.params}
        for r in rows]
    return record


def _kv(title: str, items: list[tuple[str, Any]]) -> Table:
    from ..training.recipes import show_value

    t = Table(title=title, title_justify="left", show_header=False, box=None,
              padding=(0, 2))
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in items:
        t.add_row(key, value if isinstance(value, str) else show_value(value))
    return t


POINT_KEYS = ("sweep", "channels", "kernel", "layer", "batch", "threads", "build")
"""Row params that say which point of a run a row belongs to (a sweep's channels and
filter size, a timing's batch or layer, a ceiling's build), shown in ``runs show``."""


def _point(params: dict[str, Any] | None) -> str:
    p = params or {}
    return " ".join(f"{k}={p[k]}" for k in POINT_KEYS if p.get(k) is not None)


def _value(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


def render_run(console: Console, record: dict[str, Any], max_rows: int) -> None:
    """Print ``record`` (from :func:`run_record`) as panels and tables."""
    status = record["status"] + (" (stale: no heartbeat)" if record["stale"] else "")
    head = [("status", status), ("started", record["started_at"] or "-"),
            ("ended", record["ended_at"] or "-")]
    if record["seconds"] is not None:
        head.append(("took", f"{record['seconds']:.1f} s"))
    head += [("command", record["command"] or "-"),
             ("tags", ", ".join(record["tags"]) or "-")]
    if record["error"]:
        head.append(("error", record["error"].strip().splitlines()[0]))
    where = [(k, record.get(k)) for k in CONTEXT_SHOWN if record.get(k) is not None]
    where += sorted(record["context"].items())
    parts: list[Any] = [_kv("", head), "", _kv("Options (as resolved)",
                                                sorted(record["params"].items())),
                        "", _kv("Where it ran", where)]
    console.print(Panel(Group(*parts), title=f"run {record['id']} · {record['suite']}",
                        title_align="left"))
    rows = record["results"]
    t = Table(title=f"Results ({len(rows)} rows)", title_justify="left")
    for col in ("metric", "dataset", "model", "variant", "seed", "epoch", "point", "value",
                "unit"):
        t.add_column(col, justify="right" if col in ("seed", "epoch", "value") else "left")
    for r in rows[:max_rows]:
        t.add_row(r["metric"], r["dataset"] or "", r["model"] or "", r["variant"] or "",
                  "" if r["seed"] is None else str(r["seed"]),
                  "" if r["epoch"] is None else str(r["epoch"]), _point(r["params"]),
                  _value(r["value"]), r["unit"] or "")
    console.print(t)
    if len(rows) > max_rows:
        console.print(f"... and {len(rows) - max_rows} more rows (--rows N shows more, "
                      "--json prints all)")
