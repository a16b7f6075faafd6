"""Schema version 3: runs gain ``owner``, the token of the one process that may write
their rows (``--resume`` takes it over in one statement).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from xnorbench.db.migrate import add_column_if_missing

    add_column_if_missing("runs", sa.Column("owner", sa.String(36), nullable=True))
