"""``xnorbench runs ...`` (list, show, tag, import, mark-stale) and ``xnorbench db ...``
(the schema: where a file stands, upgrading it)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from ..db import DBError, Store, is_in_memory, is_stale, missing_file
from .app import State, app, fail, open_store
from .common import MAX_MINUTES, check_run_id, check_tags, positive

runs_app = typer.Typer(help="List runs, show one, import another db's, mark dead ones.",
                       invoke_without_command=True)
db_app = typer.Typer(help="The results database's schema: which version, and upgrading it "
                          "(Alembic revisions).", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")


# ----------------------------------------------------------------------------- runs
@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    stale_minutes: Annotated[float, typer.Option(
        help="A running run without heartbeat for this long shows as stale.")] = 10,
) -> None:
    """List runs, newest first; a running run without heartbeat shows as stale."""
    if ctx.invoked_subcommand is not None:
        return
    positive(stale_minutes, "--stale-minutes", maximum=MAX_MINUTES)
    positive(limit, "--limit")
    from rich.console import Console
    from rich.table import Table

    store = open_store()
    t = Table("id", "suite", "status", "started", "ended", "rows", "device", "threads",
              "commit", "tags")
    runs = store.runs(suite=suite, limit=limit)
    tags = store.tags([r.id for r in runs])
    for r in runs:
        stale = is_stale(r, timedelta(minutes=stale_minutes))
        status = r.status + (" (stale)" if stale else "")
        t.add_row(str(r.id), r.suite, status, f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                  f"{r.ended_at:%H:%M:%S}" if r.ended_at else "",
                  str(len(store.results([r.id]))), r.device or "", str(r.threads or ""),
                  (r.git_commit or "")[:8] + ("+" if r.git_dirty else ""),
                  ",".join(tags.get(r.id, [])))
    Console(width=160).print(t)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run id.", metavar="ID")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the whole record, every result row included, as JSON.",
        metavar="")] = False,
    rows: Annotated[int, typer.Option(help="At most this many result rows in the view.",
                                      metavar="N")] = 60,
) -> None:
    """Everything stored about one run: status, command, resolved options, where it ran,
    and its result rows."""
    from rich.console import Console

    from ..report.run_view import render_run, run_record

    positive(rows, "--rows", allow_zero=True)
    check_run_id(run_id)
    store = open_store()
    run = store.run(run_id)
    if run is None:
        fail(f"no run with id {run_id}")
    record = run_record(store, run)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    render_run(Console(width=max(100, Console().width)), record, rows)


@runs_app.command("tag")
def runs_tag(
    run_id: Annotated[int, typer.Argument(help="Run id.", metavar="ID")],
    name: Annotated[str, typer.Argument(help="The tag (1-64 characters, no commas).",
                                        metavar="NAME")],
    remove: Annotated[bool, typer.Option(help="Take the tag away instead.", metavar="")] = False,
) -> None:
    """Tag a run (or --remove a tag); `table --tag NAME` then shows exactly such runs."""
    (name,) = check_tags([name])
    check_run_id(run_id)
    store = open_store(write=True)
    if store.run(run_id) is None:
        fail(f"no run with id {run_id}")
    changed = store.tag(run_id, name, remove=remove)
    what = ("removed" if changed else "did not have") if remove else \
        ("tagged" if changed else "already tagged")
    typer.echo(f"run {run_id}: {what} {name!r}")


@runs_app.command("mark-stale")
def runs_mark_stale(
    minutes: Annotated[float, typer.Option(help="No heartbeat for this long = dead.")] = 10,
) -> None:
    """Mark running runs whose process died (no heartbeat) as interrupted."""
    positive(minutes, "--minutes", maximum=MAX_MINUTES)
    ids = open_store().mark_stale(timedelta(minutes=minutes))
    typer.echo(f"marked {len(ids)} stale run(s) interrupted: {ids}")


@runs_app.command("import")
def runs_import(
    source: Annotated[str, typer.Argument(
        help="The other results database: a SQLite file or a SQLAlchemy URL.")],
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
) -> None:
    """Copy the finished runs of another database (a device machine's, say) into this one."""
    if "://" not in source and not Path(source).is_file():
        fail(f"no database file {source}")
    try:
        src = Store.open_source(source)  # read-only: the source is never changed
    except DBError as exc:
        fail(str(exc))
    store = open_store(write=True)
    if _same_database(src, store):
        fail("the source is this database")
    mapping = store.import_runs(src, suite=suite)
    pairs = ", ".join(f"{old} -> {new}" for old, new in mapping.items())
    typer.echo(f"imported {len(mapping)} run(s)" + (f": {pairs}" if pairs else " (none new)"))


def _same_database(a: Store, b: Store) -> bool:
    """Whether two stores are one database (a read-only SQLite URL names its file)."""
    ua, ub = a.engine.url, b.engine.url
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return ua.render_as_string(hide_password=False) == ub.render_as_string(hide_password=False)


# ----------------------------------------------------------------------------- db
def _schema_line(state: Any) -> str:
    at = state.effective or "unknown"
    version = f", schema version {state.version}" if state.version is not None else ""
    where = "the head" if state.current else f"behind the head {state.head}"
    return f"revision {at}{version}: {where}"


@db_app.command("current")
def db_current() -> None:
    """Which schema revision the database is at, and whether an upgrade is waiting (the
    database is not changed)."""
    if is_in_memory(State.db):
        fail("--db: an in-memory database has no schema to show")
    missing = missing_file(State.db)
    if missing is not None:
        fail(f"no database file {missing}")
    try:
        store = Store.open(State.db, upgrade=False, write=False)
    except DBError as exc:
        fail(str(exc))
    state = store.schema()
    typer.echo(_schema_line(state) + ("" if state.current or state.revision is None and
                                      state.version is None else
                                      "; `xnorbench db upgrade` upgrades it"))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database's schema in place to this xnorbench's (every other command
    does this too when it opens an older file); rows are kept."""
    try:
        before = Store.open(State.db, upgrade=False)
        old = before.schema()
        new = before.upgrade()
    except DBError as exc:
        fail(str(exc))
    if old.effective == new.effective:
        typer.echo(f"already current: {_schema_line(new)}")
    else:
        typer.echo(f"upgraded from revision {old.effective} to {new.effective}: "
                   f"{_schema_line(new)}")
