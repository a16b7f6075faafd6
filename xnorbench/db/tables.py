"""SQLAlchemy 2.0 models: one ``Run`` per suite invocation, many ``Result`` rows per run.

The run row carries the context a number needs to mean anything (code version, library
versions, machine, threads, device, seed); a result row carries one measured value with
its dataset / model / variant / metric / unit. Tables and reports read these rows only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 5
RUN_STATUSES = ("running", "finished", "failed", "interrupted")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of xnorbench's tables."""


class Meta(Base):
    """Key/value facts about the database itself (``schema_version``)."""

    __tablename__ = "xnorbench_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ux_runs_import_key", "import_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suite: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True, default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the process that may write this run's rows now (a token it drew when it started or
    # resumed the run); a process whose token is no longer here writes nothing more
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # a run copied in by `runs import`: its identity (see store.import_key), unique, so two
    # imports of one file at once cannot both insert it
    import_key: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # context
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    git_dirty: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    xnorbench_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    torch_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    torchvision_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    python_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    os: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cpu_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cpu_flags: Mapped[str | None] = mapped_column(Text, nullable=True)
    threads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    hostname: Mapped[str | None] = mapped_column(String(128), nullable=True)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    results: Mapped[list[Result]] = relationship(back_populates="run",
                                                 cascade="all, delete-orphan")
    tags: Mapped[list[RunTag]] = relationship(back_populates="run",
                                              cascade="all, delete-orphan")


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    dataset: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    model: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    variant: Mapped[str | None] = mapped_column(String(32), nullable=True)
    metric: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # training rows: which seed, and which resolved recipe (see training.recipes)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recipe_key: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)

    run: Mapped[Run] = relationship(back_populates="results")


class RunTag(Base):
    """A name a user gave a run (``--tag``, ``runs tag``); tables can select by it."""

    __tablename__ = "run_tags"
    __table_args__ = (UniqueConstraint("run_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)

    run: Mapped[Run] = relationship(back_populates="tags")


def table(model: type[Base]) -> Table:
    """A model's table, typed as one (SQLAlchemy declares ``__table__`` a ``FromClause``,
    which has no ``insert``/``update``/``delete``)."""
    return cast(Table, model.__table__)


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (``Session.execute`` is typed as returning a
    plain ``Result``; for these statements it is a ``CursorResult``)."""
    return int(cast(CursorResult, result).rowcount)
