"""Schema upgrades (db/migrate.py, db/migrations/): files of every older version upgraded
in place with nothing lost, a newer or unknown file refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store

from .helpers import check_v1_upgraded

runner = CliRunner()

def test_pre_alembic_v2_file_upgraded_through_alembic(tmp_path: Path):
    """A version-2 file (before Alembic: no alembic_version table) is stamped at its
    revision, then upgraded in place; `db current` reports before and after."""
    import sqlite3

    path = tmp_path / "v2.db"
    s = Store.open(str(path))
    rid = s.start_run("accuracy", {}, {})
    s.add_rows(rid, [Row("m", 1.0)])
    s.engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN owner")
        conn.execute("DROP TABLE alembic_version")
        conn.execute("UPDATE xnorbench_meta SET value='2' WHERE key='schema_version'")
    res = runner.invoke(app, ["--db", str(path), "db", "current"])
    assert res.exit_code == 0 and "revision 0002, schema version 2: behind the head" in \
        res.output and "db upgrade" in res.output, res.output
    res = runner.invoke(app, ["--db", str(path), "db", "upgrade"])
    assert res.exit_code == 0 and "upgraded from revision 0002 to 0005" in res.output
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        assert "owner" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert [r.value for r in Store.open(str(path)).results([rid])] == [1.0]  # nothing lost
    res = runner.invoke(app, ["--db", str(path), "db", "current"])
    assert "revision 0005, schema version 5: the head" in res.output


def test_unknown_alembic_revision_refused_as_newer(tmp_path: Path):
    import sqlite3

    path = tmp_path / "new.db"
    Store.open(str(path)).engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num='9999'")
    res = runner.invoke(app, ["--db", str(path), "runs"])
    assert res.exit_code == 2 and "newer than this xnorbench understands" in res.output


def test_schema_v1_file_upgraded_with_recipe_keys(tmp_path: Path):
    check_v1_upgraded(str(tmp_path / "v1.db"))


def test_the_migrations_frozen_recipe_key_equals_the_live_one():
    """Revision 0002 carries its own copy of the v1 recipe key (no import of the live
    recipe code); today both give the same key for every kind of v1 training row."""
    import importlib.util

    from xnorbench.db.migrate import MIGRATIONS_DIR
    from xnorbench.training.recipes import Recipe, recipe_key

    path = MIGRATIONS_DIR / "versions" / "0002_seeds_recipe_keys_tags.py"
    spec = importlib.util.spec_from_file_location("rev0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for params, dataset in (
            ({"epochs": 2, "batch_size": 16, "lr": 0.1, "train_size": 96, "test_size": 48},
             "mnist"),
            ({"epochs": 5, "optimizer": "adam", "amp": True, "train_size": 9,
              "test_size": 3}, "cifar10"),
            ({"epochs": 1, "weight_decay": 0.0}, "mnist")):
        known = {k: params[k] for k in ("epochs", "batch_size", "optimizer", "lr",
                                        "weight_decay", "amp") if k in params}
        live = recipe_key(Recipe(**known), dataset=dataset, model="lenet5",
                          train_size=params.get("train_size", 0),
                          test_size=params.get("test_size", 0))
        assert module.legacy_recipe_key(params, dataset, "lenet5") == live, params
    assert module.legacy_recipe_key({"x": 1}, "mnist", "lenet5") is None


def test_db_without_migration_path_refused(tmp_path: Path):
    from sqlalchemy import text

    from xnorbench.db import DBError

    path = str(tmp_path / "old2.db")
    s = Store.open(path)
    with s.engine.begin() as conn:  # a version no revision stands for, before Alembic
        conn.execute(text("UPDATE xnorbench_meta SET value='0' WHERE key='schema_version'"))
        conn.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(DBError, match="no migration from schema version 0"):
        Store.open(path)


def test_version_4_variant_names_renamed_to_one_vocabulary(tmp_path: Path):
    """Schema 5 renames what v4 rows called ``xnor`` by what was measured: the packed
    kernel (timing, sweep), the fused step, or the BinOp step of a run that predates the
    fused path; the simulated network keeps ``xnor``; a run without a device ran on the
    CPU. Training rows of other suites are untouched."""
    import sqlite3

    path = tmp_path / "v4.db"
    store = Store.open(str(path))
    old = {}  # (suite, tag) -> run id
    for suite, tag, rows in (
            ("timing", "new", [("inference_latency_ms", "xnor"),
                               ("inference_latency_ms", "xnor_simulated"),
                               ("layer_binary_pct_of_peak", "xnor"),
                               ("train_step_ms", "xnor"), ("train_step_ms", "xnor_binop")]),
            ("timing", "pre-fused", [("train_step_ms", "xnor"), ("train_step_ms", "float")]),
            ("memory", "new", [("train_rss_increase_mib", "xnor"),
                               ("train_rss_increase_mib", "xnor_binop"),
                               ("inference_rss_increase_mib", "xnor"),
                               ("layer_saved_activation_kib", "xnor"),
                               ("packed_model_mib", "xnor")]),
            ("memory", "pre-fused", [("train_saved_activation_mib", "xnor")]),
            ("sweep", "new", [("binary_ms", "xnor"), ("float_ms", "float")]),
            ("accuracy", "new", [("final_test_accuracy", "xnor"),
                                 ("train_loss", "xnor")])):
        rid = store.start_run(suite, {}, {})
        store.add_rows(rid, [Row(m, 1.0, variant=v) for m, v in rows])
        store.finish_run(rid, "finished")
        old[(suite, tag)] = rid
    store.engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET device = NULL")
        conn.execute("UPDATE alembic_version SET version_num='0004'")
        conn.execute("UPDATE xnorbench_meta SET value='4' WHERE key='schema_version'")
    store = Store.open(str(path))  # upgraded on open

    def names(key: tuple[str, str]) -> list[tuple[str, str]]:
        return [(r.metric, r.variant) for r in store.results([old[key]])]

    assert names(("timing", "new")) == [
        ("inference_latency_ms", "xnor_packed"), ("inference_latency_ms", "xnor"),
        ("layer_binary_pct_of_peak", "xnor_packed"), ("train_step_ms", "xnor_fused"),
        ("train_step_ms", "xnor_binop")]
    assert names(("timing", "pre-fused")) == [("train_step_ms", "xnor_binop"),
                                              ("train_step_ms", "float")]
    assert names(("memory", "new")) == [
        ("train_rss_increase_mib", "xnor_fused"), ("train_rss_increase_mib", "xnor_binop"),
        ("inference_rss_increase_mib", "xnor"), ("layer_saved_activation_kib", "xnor_fused"),
        ("packed_model_mib", "xnor")]
    assert names(("memory", "pre-fused")) == [("train_saved_activation_mib", "xnor_binop")]
    assert names(("sweep", "new")) == [("binary_ms", "xnor_packed"), ("float_ms", "float")]
    assert names(("accuracy", "new")) == [("final_test_accuracy", "xnor"),
                                          ("train_loss", "xnor")]
    assert {r.device for r in store.runs()} == {"cpu"}
