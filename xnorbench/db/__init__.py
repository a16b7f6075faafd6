"""The results database: SQLAlchemy models, engine setup and the run store."""

from .models import RUN_STATUSES, SCHEMA_VERSION, Result, Run, RunTag
from .store import (
    DEFAULT_DB,
    DatabaseGone,
    DBError,
    Row,
    RunLost,
    Store,
    database_url,
    is_in_memory,
    is_stale,
    missing_file,
    open_engine,
    redact,
    shown_db,
    shown_url,
)

__all__ = ["DEFAULT_DB", "DBError", "DatabaseGone", "RUN_STATUSES", "SCHEMA_VERSION",
           "Result", "Row", "Run", "RunLost", "RunTag", "Store", "database_url",
           "is_in_memory", "is_stale", "missing_file", "open_engine", "redact", "shown_db",
           "shown_url"]
