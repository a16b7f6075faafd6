"""Alembic migrations of the results database (one revision per schema version)."""
