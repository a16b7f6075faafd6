"""Schema version 4: runs gain ``import_key``, the identity of a run copied in by
``runs import``, under a unique index (two imports of one file at once insert each run
once). Runs imported before keep no key; the import's own check still finds them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from xnorbench.db.migrate import add_column_if_missing

    add_column_if_missing("runs", sa.Column("import_key", sa.String(40), nullable=True))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("runs")}
    if "ux_runs_import_key" not in indexes:
        op.create_index("ux_runs_import_key", "runs", ["import_key"], unique=True)
