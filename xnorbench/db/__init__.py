"""The results database: SQLAlchemy models, engine setup and the run store."""

from .engine import (
    DEFAULT_DB,
    DBError,
    database_url,
    is_in_memory,
    missing_file,
    open_engine,
    parse_url,
    shown_db,
)
from .store import DatabaseGone, Row, RunLost, Store, is_stale
from .tables import RUN_STATUSES, SCHEMA_VERSION, Result, Run, RunTag
from .urls import redact, shown_url

__all__ = ["DEFAULT_DB", "DBError", "DatabaseGone", "RUN_STATUSES", "SCHEMA_VERSION",
           "Result", "Row", "Run", "RunLost", "RunTag", "Store", "database_url",
           "is_in_memory", "is_stale", "missing_file", "open_engine", "parse_url", "redact",
           "shown_db", "shown_url"]
