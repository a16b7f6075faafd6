"""The results schema's versions, kept by Alembic (SQLAlchemy's migration tool).

Each schema version is one Alembic revision in ``migrations/versions`` (``0001`` is
version 1, ...). A new database is created from the models and stamped at the head; an
older one is upgraded in place, inside the store's transaction. Files written before
Alembic carry only ``schema_version`` in ``xnorbench_meta``: they are stamped at the
matching revision first. ``schema_version`` is still written, so an older xnorbench
keeps refusing a newer file with one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
REVISION_OF_VERSION = {1: "0001", 2: "0002", 3: "0003", 4: "0004", 5: "0005"}
"""Schema version -> Alembic revision."""
VERSION_OF_REVISION = {rev: v for v, rev in REVISION_OF_VERSION.items()}


def config(connection: Any | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return str(ScriptDirectory.from_config(config()).get_current_head())


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(config()).walk_revisions()}


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its Alembic revision (None before Alembic), the
    ``schema_version`` it records, and this xnorbench's head."""

    revision: str | None
    version: int | None
    head: str

    @property
    def effective(self) -> str | None:
        """The revision the database is at (from ``schema_version`` before Alembic)."""
        return self.revision or REVISION_OF_VERSION.get(self.version or -1)

    @property
    def current(self) -> bool:
        return self.effective == self.head


def state(conn: sa.Connection) -> SchemaState:
    """The database's schema state (reads only)."""
    revision = MigrationContext.configure(conn).get_current_revision()
    version = None
    if sa.inspect(conn).has_table("xnorbench_meta"):
        raw = conn.execute(sa.text(
            "SELECT value FROM xnorbench_meta WHERE key = 'schema_version'")).scalar()
        version = int(raw) if raw is not None and str(raw).isdigit() else None
    return SchemaState(revision, version, head())


def stamp(conn: sa.Connection, revision: str) -> None:
    command.stamp(config(conn), revision)


def upgrade(conn: sa.Connection) -> None:
    """Run every revision after the database's own, up to the head."""
    command.upgrade(config(conn), "head")


def add_column_if_missing(table: str, column: sa.Column) -> None:
    """``op.add_column`` unless the column is there: SQLite's driver commits DDL on its
    own, so a migration cut short must be safe to run again."""
    from alembic import op

    if column.name not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
        op.add_column(table, column)

