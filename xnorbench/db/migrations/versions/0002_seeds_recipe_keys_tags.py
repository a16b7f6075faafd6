"""Schema version 2: results gain ``seed`` and ``recipe_key``; runs can be tagged.

Version-1 training rows were all trained with momentum 0.9 + Nesterov (sgd), weight decay
on conv/linear weights only, a cosine schedule and crop+flip on CIFAR-10, so their
resolved recipe (and key) follows from the params they stored; it is filled in here.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from xnorbench.db.migrate import add_column_if_missing
    from xnorbench.harness.recipes import legacy_recipe_key

    conn = op.get_bind()
    add_column_if_missing("results", sa.Column("seed", sa.Integer, nullable=True))
    add_column_if_missing("results", sa.Column("recipe_key", sa.String(32), nullable=True))
    if "ix_results_recipe_key" not in {i["name"] for i in
                                       sa.inspect(conn).get_indexes("results")}:
        op.create_index("ix_results_recipe_key", "results", ["recipe_key"])
    if not sa.inspect(conn).has_table("run_tags"):
        op.create_table(
            "run_tags",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), index=True),
            sa.Column("tag", sa.String(64), index=True),
            sa.UniqueConstraint("run_id", "tag"),
        )
    runs = sa.table("runs", sa.column("id"), sa.column("suite"))
    results = sa.table("results", sa.column("id"), sa.column("run_id"), sa.column("dataset"),
                       sa.column("model"), sa.column("params", sa.JSON),
                       sa.column("seed"), sa.column("recipe_key"))
    rows = conn.execute(sa.select(results.c.id, results.c.dataset, results.c.model,
                                  results.c.params)
                        .join(runs, runs.c.id == results.c.run_id)
                        .where(runs.c.suite.in_(("accuracy", "compare")))).all()
    for rid, dataset, model, params in rows:
        key = legacy_recipe_key(params or {}, dataset, model)
        if key is None:
            continue
        conn.execute(results.update().where(results.c.id == rid)
                     .values(recipe_key=key, seed=(params or {}).get("seed")))
