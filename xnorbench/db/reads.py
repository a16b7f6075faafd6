"""What the store reads back: runs, their rows and their tags. Nothing here writes; the
:class:`~.store.Store` adds these reads to the run lifecycle it owns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from .tables import Result, Run, RunTag


class StoreReads:
    """Reads of a results database (``engine``)."""

    engine: Engine

    def tags(self, run_ids: Iterable[int] | None = None) -> dict[int, list[str]]:
        """{run id: its tags, sorted} for ``run_ids`` (every run if None)."""
        q = select(RunTag.run_id, RunTag.tag).order_by(RunTag.tag)
        if run_ids is not None:
            q = q.where(RunTag.run_id.in_(list(run_ids)))
        out: dict[int, list[str]] = {}
        with Session(self.engine) as s:
            for rid, tag in s.execute(q):
                out.setdefault(rid, []).append(tag)
        return out


    def runs(self, suite: str | None = None, status: str | None = None,
             limit: int | None = None, ids: Iterable[int] | None = None,
             tag: str | None = None) -> list[Run]:
        """Runs, newest first; filtered by suite, status, id list and tag when given."""
        q = select(Run).order_by(Run.started_at.desc(), Run.id.desc())  # newest first
        if suite:
            q = q.where(Run.suite == suite)
        if status:
            q = q.where(Run.status == status)
        if ids is not None:
            q = q.where(Run.id.in_(list(ids)))
        if tag is not None:
            q = q.where(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag)))
        if limit:
            q = q.limit(limit)
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(q))

    def run(self, run_id: int) -> Run | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(Run, run_id)

    def results(self, run_ids: Iterable[int] | None = None, **filters: Any) -> list[Result]:
        q = select(Result).order_by(Result.id)
        if run_ids is not None:
            q = q.where(Result.run_id.in_(list(run_ids)))
        for key, value in filters.items():
            if value is not None:
                q = q.where(getattr(Result, key) == value)
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(q))

    def count_results(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM results")).scalar_one())
