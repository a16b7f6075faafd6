"""Schema version 1: runs, results, xnorbench_meta (the first released layout).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "xnorbench_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256)),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("suite", sa.String(64), index=True),
        sa.Column("params", sa.JSON),
        sa.Column("status", sa.String(16), index=True),
        sa.Column("started_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("heartbeat_at", sa.DateTime, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("command", sa.Text, nullable=True),
        *[sa.Column(name, type_, nullable=True) for name, type_ in (
            ("git_commit", sa.String(64)), ("git_dirty", sa.Boolean),
            ("xnorbench_version", sa.String(32)), ("torch_version", sa.String(64)),
            ("torchvision_version", sa.String(64)), ("python_version", sa.String(32)),
            ("os", sa.String(128)), ("cpu_model", sa.String(128)), ("cpu_flags", sa.Text),
            ("threads", sa.Integer), ("device", sa.String(32)), ("gpu_name", sa.String(128)),
            ("hostname", sa.String(128)), ("seed", sa.Integer))],
        sa.Column("context", sa.JSON),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), index=True),
        sa.Column("dataset", sa.String(32), nullable=True, index=True),
        sa.Column("model", sa.String(32), nullable=True, index=True),
        sa.Column("variant", sa.String(32), nullable=True),
        sa.Column("metric", sa.String(64), index=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.Column("epoch", sa.Integer, nullable=True),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("params", sa.JSON),
        sa.Column("created_at", sa.DateTime),
    )
