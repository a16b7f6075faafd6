"""Schema version 5: one vocabulary of what a row measured (``xnorbench.variants``).

Before it, ``xnor`` meant three things: the packed kernel in timing rows, the fused
training step (or, in runs made before the fused path existed, the BinOp step) in
training-step and training-memory rows, and the simulated network everywhere else;
timing rows called the simulated network ``xnor_simulated``. Rows are renamed here
(frozen rules, no import of live code), so every reader sees one name per thing:

* sweep, and timing's every metric but ``train_step_*``: ``xnor`` -> ``xnor_packed``,
  then (timing) ``xnor_simulated`` -> ``xnor``;
* timing ``train_step_*`` and memory ``train_*`` / ``layer_saved_activation_kib``:
  ``xnor`` -> ``xnor_fused`` in a run that also has ``xnor_binop`` rows, else
  ``xnor_binop`` (such a run predates the fused path and timed BinOp as ``xnor``);
* runs that stored no device ran on the CPU: ``device`` = ``cpu``.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRAINING = ("(metric LIKE 'train\\_step\\_%' ESCAPE '\\' OR "
            "(metric LIKE 'train\\_%' ESCAPE '\\' AND run_id IN "
            "(SELECT id FROM runs WHERE suite = 'memory')) OR "
            "metric = 'layer_saved_activation_kib')")
"""The rows that measured a training step (timing and memory suites)."""


def upgrade() -> None:
    conn = op.get_bind()
    timing = "run_id IN (SELECT id FROM runs WHERE suite = 'timing')"
    kernel = "run_id IN (SELECT id FROM runs WHERE suite IN ('timing', 'sweep'))"
    memory_or_timing = "run_id IN (SELECT id FROM runs WHERE suite IN ('timing', 'memory'))"
    has_binop = ("run_id IN (SELECT run_id FROM results WHERE variant = 'xnor_binop')")
    conn.execute(sa.text(
        f"UPDATE results SET variant = 'xnor_packed' WHERE variant = 'xnor' AND {kernel} "
        f"AND NOT {TRAINING}"))
    conn.execute(sa.text(
        f"UPDATE results SET variant = 'xnor' WHERE variant = 'xnor_simulated' AND {timing}"))
    conn.execute(sa.text(
        f"UPDATE results SET variant = 'xnor_fused' WHERE variant = 'xnor' AND "
        f"{memory_or_timing} AND {TRAINING} AND {has_binop}"))
    conn.execute(sa.text(
        f"UPDATE results SET variant = 'xnor_binop' WHERE variant = 'xnor' AND "
        f"{memory_or_timing} AND {TRAINING}"))
    conn.execute(sa.text("UPDATE runs SET device = 'cpu' WHERE device IS NULL"))

