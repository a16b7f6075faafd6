"""Runs copied from one results database into another.

A device machine returns its own database; importing it is how its runs join the
project's. Each imported run carries its identity (:func:`import_key`) in a unique
column, so importing a file twice, or from two processes at once, adds each run once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .tables import Result, Run, RunTag
from .urls import redact


class RunSource(Protocol):
    """What an import reads from the other database (a :class:`~.store.Store`)."""

    def runs(self, suite: str | None = None, status: str | None = None) -> list[Run]: ...

    def results(self, run_ids: Iterable[int] | None = None) -> list[Result]: ...

    def tags(self, run_ids: Iterable[int] | None = None) -> dict[int, list[str]]: ...


def import_key(run: Run) -> str:
    """A run's identity across databases: its suite, start time, host and (redacted)
    command, hashed. Two copies of one run have the same key."""
    text_ = "|".join(str(v) for v in (run.suite, run.started_at, run.hostname,
                                        run.command and redact(run.command)))
    return hashlib.sha256(text_.encode()).hexdigest()[:40]


def import_runs(target: Engine, source: RunSource, suite: str | None = None
                ) -> dict[int, int]:
    """Copy ``source``'s finished runs and their rows into ``target``: {old: new id}.

    A device machine returns its own database; this is how its runs join the
    project's. A run already here (same suite, start time, host and command) is
    skipped, so importing the same file twice adds nothing, also when two imports run
    at once: an imported run carries its identity in ``import_key``, which is unique,
    so of two processes inserting one run the second's transaction fails and skips it.
    """
    with Session(target) as s:
        have = {import_key(r) for r in s.scalars(select(Run))}
    run_cols = [c.key for c in Run.__table__.columns
                if c.key not in ("id", "owner", "command", "import_key")]
    row_cols = [c.key for c in Result.__table__.columns if c.key not in ("id", "run_id")]
    mapping: dict[int, int] = {}
    for run in reversed(source.runs(suite=suite, status="finished")):  # oldest first
        key = import_key(run)
        if key in have:
            continue
        rows = source.results([run.id])
        tags = source.tags([run.id]).get(run.id, [])
        try:
            with Session(target) as s, s.begin():
                new = Run(**{k: getattr(run, k) for k in run_cols},
                          command=run.command and redact(run.command),  # no secret
                          import_key=key)
                s.add(new)
                s.flush()  # the unique key is checked here, before the rows
                s.add_all(Result(run_id=new.id, **{k: getattr(r, k) for k in row_cols})
                          for r in rows)
                s.add_all(RunTag(run_id=new.id, tag=t) for t in tags)
                mapping[run.id] = new.id
        except IntegrityError:
            with target.connect() as conn:  # the unique key says who won
                taken = conn.execute(select(Run.id).where(Run.import_key == key)).first()
            if taken is None:
                raise  # not the import key: a real constraint failure
            mapping.pop(run.id, None)  # another import inserted it first
    return mapping
