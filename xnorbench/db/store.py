"""The run lifecycle in SQL (the only code that writes rows): a run's owner token and
heartbeat, its rows (one short transaction each, so a crash keeps every row written
before it), its final status, imports from another database; the reads tables use are
:class:`~.reads.StoreReads`'s.
Opening the database is :mod:`.engine`'s job.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, inspect, select
from sqlalchemy.orm import Session

from ..errors import XnorbenchError
from . import faults, migrate
from .engine import (
    DBError,
    busy_timeout_s,
    check_columns,
    check_sqlite_file,
    database_url,
    file_identity,
    init_schema,
    open_engine,
    parse_url,
    set_meta,
    sqlite_file,
)
from .imports import import_runs
from .reads import StoreReads
from .row import Row
from .tables import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    Meta,
    Result,
    Run,
    RunTag,
    rowcount,
    table,
    utcnow,
)
from .urls import redact, shown_url


class RunLost(XnorbenchError):
    """This process no longer owns the run (another process resumed it, or it was marked
    stale); it must write nothing more."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} is no longer this process's: another process "
                         "resumed it or it was marked stale; stopped without writing more")
        self.run_id = run_id


class DatabaseGone(XnorbenchError):
    """The SQLite file this process writes to was deleted or replaced under it: what it
    writes now goes nowhere a reader will find, so the run stops (its checkpoints kept)."""

    def __init__(self, path: Path, how: str) -> None:
        super().__init__(f"the database file {path} was {how} while this process was "
                         "writing to it; the rows written since went with the old file")
        self.path = path
        self.how = how


class Store(StoreReads):
    """Writes and reads runs and results; each write is its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._owned: dict[int, str] = {}  # run id -> this process's owner token
        self.path = sqlite_file(engine)
        self._identity = file_identity(self.path)  # the file this store opened
        self.folded = True  # whether the last finish folded SQLite's log into the file
        # the heartbeat thread's write and an injected fault's signal never overlap: a
        # SIGSTOP "after a row" must not freeze the process inside a heartbeat transaction
        # (the lock would stay held, and a resume would find the database locked)
        self._beating = threading.Lock()

    def check_file(self) -> None:
        """``DatabaseGone`` if the SQLite file this store opened is no longer at its path
        (deleted, or replaced by another file): checked before every write of a run."""
        if self.path is None or self._identity is None:
            return
        now = file_identity(self.path)
        if now != self._identity:
            raise DatabaseGone(self.path, "deleted" if now is None else "replaced")

    def database_id(self) -> str:
        """This database's identity (a random id drawn when it was created): checkpoints
        carry it, so a run of another database never resumes from them.

        A SQLite file is bound to its inode: a copy of it (which would otherwise share the
        id, and with it every run's checkpoint folder) draws a fresh id the first time it
        is used, so two copies' run N never share a folder."""
        here = file_identity(self.path)
        if here is not None:
            with self.engine.begin() as conn:
                bound = conn.execute(select(Meta.value).where(
                    Meta.key == "database_file")).scalar()
                if bound is None:  # a file from before the binding: bind it as it is
                    set_meta(conn, "database_file", here)
                elif bound != here:  # a copy: first statement writes, so one process wins
                    done = rowcount(conn.execute(table(Meta).update().where(
                        Meta.key == "database_file", Meta.value == bound).values(
                        value=here)))
                    if done == 1:
                        set_meta(conn, "database_id", uuid.uuid4().hex)
        with self.engine.connect() as conn:
            value = conn.execute(select(Meta.value).where(Meta.key == "database_id")).scalar()
        return str(value or "")

    @classmethod
    def open(cls, db: str | None = None, upgrade: bool = True, write: bool = True) -> Store:
        """The store of ``db`` (see :func:`~.engine.open_engine`; ``write=False`` for a
        command that only reads)."""
        return cls(open_engine(db, upgrade, write))

    def schema(self) -> migrate.SchemaState:
        """This database's schema state (Alembic revision, recorded version, head)."""
        with self.engine.connect() as conn:
            return migrate.state(conn)

    def upgrade(self) -> migrate.SchemaState:
        """Upgrade an older schema in place (``db upgrade``); the state afterwards."""
        init_schema(self.engine, upgrade=True)
        return self.schema()

    @classmethod
    def open_source(cls, db: str) -> Store:
        """Another database to read from (``runs import``), opened so that nothing in it
        changes: a SQLite file read-only, no tables created, no journal mode switched.
        ``DBError`` if it is not an xnorbench database of this schema version."""
        parsed = parse_url(database_url(db), "")
        shown = shown_url(parsed)
        try:
            if parsed.get_backend_name() == "sqlite":
                path = Path(parsed.database or "")
                if not parsed.database or not path.is_file():
                    raise DBError(f"no database file {shown}")
                uri = URL.create("sqlite", database="file:" + quote(str(path.resolve()),
                                                                     safe="/"),
                                 query={"mode": "ro", "uri": "true"})
                engine = create_engine(uri, connect_args={"timeout": busy_timeout_s()})
                check_sqlite_file(engine)
            else:
                engine = create_engine(parsed, pool_pre_ping=True)
            with engine.connect() as conn:
                if not inspect(conn).has_table(Meta.__tablename__):
                    raise DBError(f"{shown} is not an xnorbench database")
                now = migrate.state(conn)
                if now.version == SCHEMA_VERSION and now.revision in (None, migrate.head()):
                    check_columns(conn, engine)
        except DBError:
            raise
        except Exception as exc:  # not a database at all, damaged, missing driver, ...
            msg = redact(str(getattr(exc, "orig", exc)).splitlines()[0], db)
            raise DBError(f"cannot read {shown}: {msg}") from exc
        newer = (now.version or 0) > SCHEMA_VERSION or (
            now.revision is not None and now.revision not in migrate.known_revisions())
        if newer:
            shown_version = now.version if now.revision in (None, *migrate.known_revisions()) \
                else f"{now.version} (Alembic revision {now.revision})"
            raise DBError(f"{shown} has schema version {shown_version}, newer than this "
                          f"xnorbench reads ({SCHEMA_VERSION}); import it with the newer "
                          "xnorbench that wrote it")
        if now.version != SCHEMA_VERSION or now.revision not in (None, migrate.head()):
            raise DBError(f"{shown} has schema version {now.version}, this xnorbench reads "
                          f"{SCHEMA_VERSION}: upgrade it first with `xnorbench --db ... db "
                          "upgrade` (rows are kept), then import")
        return cls(engine)

    # -- writes -------------------------------------------------------------------
    def start_run(self, suite: str, params: dict[str, Any], context: dict[str, Any],
                  command: str | None = None, own: bool = True) -> int:
        """A new ``running`` run; with ``own`` this store becomes its one writer."""
        columns = {c.key for c in Run.__table__.columns}
        fields = {k: v for k, v in context.items() if k in columns and k != "owner"}
        token = uuid.uuid4().hex if own else None
        with Session(self.engine) as s, s.begin():
            run = Run(suite=suite, params=params, status="running",
                      command=None if command is None else redact(command),
                      started_at=utcnow(), heartbeat_at=utcnow(), context=context,
                      owner=token, **fields)
            s.add(run)
            s.flush()
            run_id = run.id
        if token:
            self._owned[run_id] = token
        return run_id

    def _still_mine(self, s: Session, run_id: int, **values: Any) -> None:
        """Inside a write transaction: touch the heartbeat (and set ``values``) only if
        this store still owns the run; ``RunLost`` (and the transaction rolls back) if not.
        Runs this store never took ownership of (a tool's own writes) are not checked."""
        self.check_file()
        token = self._owned.get(run_id)
        q = table(Run).update().where(Run.id == run_id).values(heartbeat_at=utcnow(),
                                                                     **values)
        if token is None:
            s.execute(q)
            return
        done = rowcount(s.execute(q.where(Run.owner == token, Run.status == "running")))
        if done != 1:
            raise RunLost(run_id)

    def add_rows(self, run_id: int, rows: Iterable[Row]) -> None:
        rows = list(rows)
        metric = rows[-1].metric if rows else ""
        faults.at_row("before", metric)
        with Session(self.engine) as s, s.begin():
            self._still_mine(s, run_id)
            for r in rows:
                s.add(Result(run_id=run_id, dataset=r.dataset, model=r.model,
                             variant=r.variant, metric=r.metric,
                             value=None if r.value is None else float(r.value), unit=r.unit,
                             epoch=r.epoch, step=r.step, params=r.params, seed=r.seed,
                             recipe_key=r.recipe_key))
            s.flush()
            faults.at_row("commit", metric)
        with self._beating:
            faults.at_row("after", metric)

    def claim_run(self, run_id: int) -> None:
        """Take an interrupted or failed run over (``--resume``) in one statement: it
        becomes ``running`` with a new owner token, so a process that held it before can
        write nothing more. ``DBError`` if it is running (another process may own it),
        finished, or gone."""
        token = uuid.uuid4().hex
        with Session(self.engine) as s, s.begin():
            done = rowcount(s.execute(
                table(Run).update()
                .where(Run.id == run_id, Run.status.in_(("interrupted", "failed")))
                .values(status="running", error=None, ended_at=None, owner=token,
                        heartbeat_at=utcnow())))
            if done != 1:
                run = s.get(Run, run_id)
                if run is None:
                    raise DBError(f"no run with id {run_id}")
                if run.status == "running":
                    beat = run.heartbeat_at or run.started_at
                    ago = (utcnow() - beat).total_seconds() if beat else float("nan")
                    raise DBError(f"run {run_id} is running (last heartbeat {ago:.0f} s ago); "
                                  "if its process is gone, close it with `xnorbench runs "
                                  "mark-stale` first")
                raise DBError(f"run {run_id} is {run.status}; only an interrupted or failed "
                              "run can be resumed")
        self._owned[run_id] = token

    def delete_run(self, run_id: int) -> None:
        """Remove a run and its rows (a run that refused its input wrote nothing)."""
        with Session(self.engine) as s, s.begin():
            s.execute(table(Result).delete().where(Result.run_id == run_id))
            s.execute(table(RunTag).delete().where(RunTag.run_id == run_id))
            s.execute(table(Run).delete().where(Run.id == run_id))

    def delete_results_after(self, run_id: int, variant: str, epoch: int,
                             seed: int | None = None, metrics: Iterable[str] = ()) -> int:
        """Drop a training's rows with epoch > ``epoch`` (or no epoch, if 0), and its
        summary rows (``metrics``); ``seed`` narrows it to one seed's training.

        ``--resume`` recomputes those epochs from the checkpoint; their old rows (an
        epoch cut short by the interrupt) must not stand beside the new ones.
        """
        with Session(self.engine) as s, s.begin():
            self._still_mine(s, run_id)
            q = table(Result).delete().where(Result.run_id == run_id,
                                                Result.variant == variant)
            if seed is not None:
                q = q.where(Result.seed == seed)
            cond = Result.epoch > epoch
            if epoch == 0:
                cond = cond | Result.epoch.is_(None)
            metrics = list(metrics)
            if metrics:
                cond = cond | Result.metric.in_(metrics)
            return rowcount(s.execute(q.where(cond)))

    def delete_rows(self, run_id: int, row_ids: Iterable[int]) -> int:
        """Drop these rows of run ``run_id`` (a resumed sweep's half-measured point)."""
        ids = list(row_ids)
        with Session(self.engine) as s, s.begin():
            self._still_mine(s, run_id)
            if not ids:
                return 0
            return rowcount(s.execute(table(Result).delete().where(
                Result.run_id == run_id, Result.id.in_(ids))))

    def heartbeat(self, run_id: int) -> None:
        """Touch the run's heartbeat; ``RunLost`` if this store no longer owns it."""
        with self._beating, Session(self.engine) as s, s.begin():
            self._still_mine(s, run_id)

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        """Close the run with ``status``; ``RunLost`` if this store no longer owns it."""
        assert status in RUN_STATUSES
        with Session(self.engine) as s, s.begin():
            self._still_mine(s, run_id, status=status, error=error, ended_at=utcnow())
        self._owned.pop(run_id, None)
        self.folded = self.fold_log()

    def fold_log(self, wait_s: float = 1.0) -> bool:
        """Fold SQLite's write-ahead log into the ``.db`` file, so that copying the file
        alone copies every committed row. False if it could not within ``wait_s`` (another
        connection holds a read transaction, or the file is not writable): the rows are
        committed, but in the ``-wal`` file beside it until a later fold."""
        if self.path is None:
            return True
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
                try:
                    busy, log, done = conn.exec_driver_sql(
                        "PRAGMA wal_checkpoint(TRUNCATE)").one()
                finally:
                    conn.exec_driver_sql(
                        f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
        except Exception:  # a read-only or immutable file, a full disk, ...
            return False
        return busy == 0 and log == done

    def tag(self, run_id: int, tag: str, remove: bool = False) -> bool:
        """Give run ``run_id`` the name ``tag`` (or take it away); False if nothing changed."""
        with Session(self.engine) as s, s.begin():
            have = s.scalar(select(RunTag).where(RunTag.run_id == run_id, RunTag.tag == tag))
            if remove:
                if have is None:
                    return False
                s.delete(have)
                return True
            if have is not None:
                return False
            s.add(RunTag(run_id=run_id, tag=tag))
            return True

    def mark_stale(self, older_than: timedelta) -> list[int]:
        """Mark ``running`` runs without a heartbeat for ``older_than`` as interrupted."""
        cutoff = utcnow() - older_than
        with Session(self.engine) as s, s.begin():
            ids = list(s.scalars(select(Run.id).where(Run.status == "running",
                                                      Run.heartbeat_at < cutoff)))
            if ids:
                s.execute(table(Run).update().where(Run.id.in_(ids)).values(
                    status="interrupted", ended_at=utcnow(),
                    error="no heartbeat: the process died (marked stale)"))
        return ids

    def import_runs(self, source: Store, suite: str | None = None) -> dict[int, int]:
        """Copy ``source``'s finished runs and their rows here: {old id: new id}
        (:func:`.imports.import_runs`)."""
        return import_runs(self.engine, source, suite)


def is_stale(run: Run, after: timedelta, now: datetime | None = None) -> bool:
    """A ``running`` run whose last heartbeat is older than ``after``."""
    now = now or utcnow()
    beat = run.heartbeat_at or run.started_at
    return run.status == "running" and beat is not None and now - beat > after
