"""Opening the results database: ``--db`` to a URL, the engine (SQLite configured for
several writer processes: WAL journal, a busy timeout, foreign keys), the schema created
or upgraded through Alembic, and the checks that refuse a damaged, foreign or newer file
with one line. A SQLite file's identity (its inode) is what a run checks its file by.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)

from ..errors import XnorbenchError
from ..paths import path_problem
from . import migrate
from .tables import SCHEMA_VERSION, Base, Meta, table
from .urls import redact, shown_url, sqlite_path

DEFAULT_DB = "xnorbench.db"


class DBError(XnorbenchError):
    """A database problem a user can fix; the CLI prints it as one line."""


def database_url(db: str | None) -> str:
    """A SQLAlchemy URL from ``--db`` / ``XNORBENCH_DB``: a URL, or a SQLite file path."""
    if db is not None and not db.strip():
        raise DBError("--db is empty: give a SQLite file path or a SQLAlchemy URL (or leave "
                      f"it out for ./{DEFAULT_DB})")
    db = db or os.environ.get("XNORBENCH_DB") or DEFAULT_DB
    if "://" in db:
        return db
    path = Path(db).expanduser()
    problem = path_problem(path)
    if problem:
        raise DBError(f"--db {db[:60]}...: {problem}")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise DBError(f"--db {db}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) and not (path.exists() and os.access(path, os.W_OK)):
        raise DBError(f"--db {db}: folder {parent} is not writable")
    return f"sqlite:///{quote(str(path.resolve()), safe='/')}"  # '%', '#', '?' are kept


def shown_db(db: str | None) -> str:
    """How ``--db`` is named to the user: its file path, or its URL without secrets."""
    return shown_url(parse_url(database_url(db), "--db"))


def busy_timeout_s() -> float:
    """How long a SQLite write waits for another process's lock before giving up
    (``XNORBENCH_BUSY_TIMEOUT_S``, default 60 s)."""
    raw = os.environ.get("XNORBENCH_BUSY_TIMEOUT_S", "60")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 86400:
        raise DBError(f"XNORBENCH_BUSY_TIMEOUT_S={raw!r}: give seconds from 0 to 86400")
    return value


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def init_schema(engine: Engine, attempts: int = 8, upgrade: bool = True) -> None:
    """Create or upgrade the schema; retried, since several processes may race to create it."""
    for attempt in range(attempts):
        try:
            init_schema_once(engine, upgrade)
            return
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            text_ = str(exc).lower()
            racing = any(k in text_ for k in ("already exists", "locked", "unique", "duplicate"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def set_meta(conn: Any, key: str, value: str, replace: bool = True) -> None:
    have = conn.execute(select(Meta.value).where(Meta.key == key)).first()
    if have is None:
        conn.execute(table(Meta).insert().values(key=key, value=value))
    elif replace and have[0] != value:
        conn.execute(table(Meta).update().where(Meta.key == key).values(value=value))


def init_schema_once(engine: Engine, upgrade: bool = True) -> None:
    """A new database: tables from the models, stamped at Alembic's head. An older one:
    upgraded in place through the Alembic revisions (unless ``upgrade`` is False, for
    ``db current``). A newer one, or one that is not xnorbench's: ``DBError``."""
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        if "runs" in tables and "xnorbench_meta" not in tables:
            raise DBError(f"{shown_url(engine.url)}: has a 'runs' table but no xnorbench schema "
                          "version; not an xnorbench database")
        now = migrate.state(conn) if "runs" in tables else None
        if now is None or (now.version is None and now.revision is None):
            # new, or being created by another process right now (SQLite's driver commits
            # each CREATE TABLE on its own, so the tables can show before the version)
            Base.metadata.create_all(conn)
            set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            set_meta(conn, "database_id", uuid.uuid4().hex, replace=False)
            here = file_identity(sqlite_file(engine))
            if here is not None:
                set_meta(conn, "database_file", here, replace=False)
            migrate.stamp(conn, "head")
            return
        if (now.version or 0) > SCHEMA_VERSION or (
                now.revision is not None and now.revision not in migrate.known_revisions()):
            shown = now.revision if now.version is None else now.version
            raise DBError(f"{shown_url(engine.url)}: schema version {shown} is newer than this "
                          f"xnorbench understands ({SCHEMA_VERSION}); upgrade xnorbench")
        if now.effective is None:
            raise DBError(f"{shown_url(engine.url)}: no migration from schema version "
                          f"{now.version}")
        if not upgrade:
            return
        if now.revision is None:  # written before Alembic: stamp what it records
            migrate.stamp(conn, now.effective)
        if not now.current:
            migrate.upgrade(conn)
        set_meta(conn, "schema_version", str(SCHEMA_VERSION))
        set_meta(conn, "database_id", uuid.uuid4().hex, replace=False)
        check_columns(conn, engine)


def check_columns(conn: Any, engine: Engine) -> None:
    """Every column the models use is there (a hand-edited file may have lost one)."""
    insp = inspect(conn)
    for tbl in Base.metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(tbl.name)}
        missing = [c.name for c in tbl.columns if c.name not in have]
        if missing:
            raise DBError(f"{shown_url(engine.url)}: table {tbl.name} lacks column(s) "
                          f"{', '.join(missing)}; not a usable xnorbench database")


def check_sqlite_file(engine: Engine) -> None:
    """Refuse a SQLite file with damaged pages (PRAGMA quick_check), naming the file."""
    path = sqlite_file(engine)
    if path is None or not path.is_file():
        return
    try:
        with engine.connect() as conn:
            verdict = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check(3)")]
    except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
        msg = str(getattr(exc, "orig", exc)).splitlines()[0]
        if "locked" in msg or "busy" in msg:
            return  # a writer holds it; damage, if any, shows on the next open
        verdict = [msg]
    if verdict != ["ok"]:
        raise DBError(f"{path}: the database file is damaged ({verdict[0]}); restore it from "
                      "a copy, or salvage it with `sqlite3 FILE .recover`")


def sqlite_tables(path: Path) -> list[str] | None:
    """The tables of an existing SQLite file, read without writing a byte (read-only, no
    journal mode switched); None if it cannot be read that way (not SQLite, locked, a
    WAL file this process cannot see: the usual open then says what is wrong)."""
    if not path.is_file():
        return None
    uri = "file:" + quote(str(path.resolve()), safe="/") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return [r[0] for r in rows]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def foreign_sqlite(path: Path, write: bool) -> str | None:
    """Why xnorbench must not open an existing SQLite file (None: it may): a database of
    another tool (tables, none of them xnorbench's) is never written to; an empty one
    only by a command that stores something (it creates the schema)."""
    tables = sqlite_tables(path)
    if tables is None or "xnorbench_meta" in tables:
        return None
    if tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return (f"{path}: a SQLite database of another tool (tables: {shown}), not an "
                "xnorbench database; it is left as it is: give another --db")
    if not write:
        return (f"{path}: an empty database, no xnorbench results in it yet (a run creates "
                "them: `xnorbench run ...`)")
    return None


def open_engine(db: str | None = None, upgrade: bool = True, write: bool = True) -> Engine:
    """Open (and create or upgrade) the results database; ``DBError`` if it cannot.
    ``upgrade=False`` leaves an older schema as it is (``db current`` reports it).
    ``write=False`` (a command that only reads): an empty SQLite file is refused rather
    than given a schema. A SQLite file of another tool is refused before anything is
    written to it (not even its journal mode)."""
    url = database_url(db)
    parsed = parse_url(url, "--db")
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None:
        refused = foreign_sqlite(Path(path), write)
        if refused:
            raise DBError(refused)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s()})
            event.listen(engine, "connect", sqlite_pragmas)
            check_sqlite_file(engine)
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
        init_schema(engine, upgrade=upgrade)
    except DBError:
        raise
    except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
        msg = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise DBError(f"cannot use database {shown_url(parsed)}: {redact(msg, url)}") \
            from exc
    except Exception as exc:  # missing driver, unknown dialect, ...
        raise DBError(f"cannot open database {shown_url(parsed)}: {redact(str(exc), url)}") \
            from exc
    return engine


def parse_url(url: str, what: str) -> Any:
    """SQLAlchemy's URL object of ``url``; ``DBError`` (credentials hidden) if it is not
    one (a bad port, an unknown shape)."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        named = f"{what} {redact(url)!r}".strip()
        raise DBError(f"{named} is not a valid database URL or path "
                      f"({redact(str(exc), url)})") \
            from None


def missing_file(db: str | None) -> Path | None:
    """The SQLite file ``db`` names when it does not exist yet (None for a server URL, an
    in-memory database or a file that is there): a command that only reads refuses it
    rather than creating an empty database under a mistyped name."""
    try:
        parsed = parse_url(database_url(db), "--db")
    except DBError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def is_in_memory(db: str | None) -> bool:
    """Whether ``db`` names an in-memory SQLite database (which keeps nothing)."""
    try:
        parsed = parse_url(database_url(db), "--db")
    except DBError:
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None for a server or an in-memory database)."""
    path = sqlite_path(engine.url)
    return None if path is None else Path(path)


def file_identity(path: Path | None) -> str | None:
    """The inode of a database file: a copy (``cp``, a restored backup) has another one,
    a move within one file system keeps it."""
    if path is None:
        return None
    try:
        return str(os.stat(path).st_ino)
    except OSError:
        return None
