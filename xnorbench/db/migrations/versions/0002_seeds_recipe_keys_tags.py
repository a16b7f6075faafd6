"""Schema version 2: results gain ``seed`` and ``recipe_key``; runs can be tagged.

Version-1 training rows were all trained with momentum 0.9 + Nesterov (sgd), weight decay
on conv/linear weights only, a cosine schedule and crop+flip on CIFAR-10, so their
resolved recipe (and key) follows from the params they stored; it is filled in here.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def legacy_recipe_key(params: dict[str, Any], dataset: str | None,
                      model: str | None) -> str | None:
    """The recipe key of a version-1 training row, frozen as this revision computes it
    (a copy, not an import: a migration must not change when the live recipe code does;
    tests/test_db_migrations.py checks it still equals the live ``recipe_key`` of the same
    recipe). None for a row that is not a training row."""
    if "epochs" not in params or dataset is None or model is None:
        return None
    optimizer = params.get("optimizer", "sgd")
    lr = params.get("lr")
    key: dict[str, Any] = {
        "epochs": params["epochs"], "batch_size": params.get("batch_size", 128),
        "optimizer": optimizer,
        "lr": lr if lr is not None else (0.1 if optimizer == "sgd" else 1e-3),
        "weight_decay": params.get("weight_decay", 5e-4), "decay_scope": "weights",
        "schedule": "cosine", "augment": "crop-flip" if dataset == "cifar10" else "none",
        "bn_clamp": False, "amp": params.get("amp", False),
        "dataset": dataset, "model": model, "train_size": int(params.get("train_size", 0)),
        "test_size": int(params.get("test_size", 0))}
    if optimizer == "sgd":
        key.update(momentum=0.9, nesterov=True)
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def upgrade() -> None:
    from xnorbench.db.migrate import add_column_if_missing

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
