"""The same db layer on a live PostgreSQL server (``XNORBENCH_TEST_PG``; CI starts one)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store

from .helpers import check_v1_upgraded, make_v1_db, run_writers

PG_URL = os.environ.get("XNORBENCH_TEST_PG")
runner = CliRunner()


@pytest.fixture()
def pg_url() -> str:
    """The server database, seen through a schema of this test worker's own (PostgreSQL's
    ``search_path``, set per connection by the URL), emptied: tests on two pytest-xdist
    workers share the one database the CI server has, never its tables."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: XNORBENCH_TEST_PG is not set")
        pytest.skip("no PostgreSQL server (set XNORBENCH_TEST_PG)")
    schema = f"xnorbench_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_engine(PG_URL)
    with engine.begin() as conn:  # a clean schema for every test
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return url.render_as_string(hide_password=False)


def test_a_worker_schema_holds_what_a_store_writes(pg_url: str):
    """The tables a store creates land in the worker's schema, not in ``public``."""
    Store.open(pg_url).engine.dispose()
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        here = conn.execute(text("SELECT current_schema()")).scalar()
        tables = set(conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": here}).scalars())
    engine.dispose()
    assert here != "public" and here.startswith("xnorbench_")
    assert {"runs", "results"} <= tables


def test_pg_run_lifecycle_and_rows(pg_url: str):
    store = Store.open(pg_url)
    rid = store.start_run("accuracy", {"epochs": 2, "nested": {"a": [1, 2]}},
                          {"device": "cpu", "threads": 2, "seed": 7, "git_dirty": True})
    store.add_rows(rid, [Row("test_accuracy", 97.5, "%", dataset="mnist", model="lenet5",
                             variant="xnor", epoch=1, params={"k": "v"})])
    store.finish_run(rid, "finished")
    again = Store.open(pg_url)  # a second open of an existing schema
    run = again.run(rid)
    assert run.status == "finished" and run.params["nested"] == {"a": [1, 2]}
    assert run.seed == 7 and run.git_dirty is True
    (r,) = again.results([rid])
    assert (r.metric, r.value, r.params) == ("test_accuracy", 97.5, {"k": "v"})


def test_pg_concurrent_writers(pg_url: str):
    store = run_writers(pg_url)
    assert store.count_results() == 600
    assert len(store.runs(suite="writer", status="finished")) == 4


def test_pg_stale_runs(pg_url: str):
    store = Store.open(pg_url)
    rid = store.start_run("accuracy", {}, {})
    assert store.mark_stale(timedelta(hours=1)) == []
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET heartbeat_at = heartbeat_at - interval '2 hours'"))
    assert store.mark_stale(timedelta(hours=1)) == [rid]
    assert store.run(rid).status == "interrupted"


def test_pg_cli_end_to_end(pg_url: str, mnist_dir: Path):
    res = runner.invoke(app, ["--db", pg_url, "run", "accuracy", "--data-dir", str(mnist_dir),
                              "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    store = Store.open(pg_url)
    finals = {r.variant: r.value for r in store.results(metric="final_test_accuracy")}
    res = runner.invoke(app, ["--db", pg_url, "table"])
    line = next(x for x in res.output.splitlines() if "LeNet-5" in x)
    assert f"{finals['xnor']:.2f} %" in line and f"{finals['float']:.2f} %" in line
    res = runner.invoke(app, ["--db", pg_url, "runs"])
    assert res.exit_code == 0 and "finished" in res.output


def test_pg_bad_server_is_one_line_error():
    res = runner.invoke(app, ["--db", "postgresql+psycopg://nobody:x@127.0.0.1:1/none", "runs"])
    assert res.exit_code == 2
    assert res.output.startswith("error: cannot use database") and "Traceback" not in res.output
    assert "x@" not in res.output  # the password is not printed


def test_pg_schema_v1_upgraded_in_place(pg_url: str):

    check_v1_upgraded(pg_url)


def test_pg_db_current_then_upgrade(pg_url: str):

    make_v1_db(pg_url)
    res = runner.invoke(app, ["--db", pg_url, "db", "current"])
    assert res.exit_code == 0 and "revision 0001, schema version 1: behind" in res.output
    res = runner.invoke(app, ["--db", pg_url, "db", "upgrade"])
    assert res.exit_code == 0 and "upgraded from revision 0001 to 0005" in res.output
    store = Store.open(pg_url)
    assert store.schema().current and [r.value for r in store.results(
        metric="final_test_accuracy")] == [91.5]


def test_pg_password_in_the_query_string_is_never_shown_or_stored(pg_url: str,
                                                                    tmp_path: Path,
                                                                    monkeypatch):
    parsed = make_url(pg_url)
    secret = parsed.password or ""
    url = parsed.set(password=None).update_query_dict({"password": secret})
    url_text = url.render_as_string(hide_password=False)
    assert f"password={secret}" in url_text
    needle = f"password={secret}"
    args = ["--db", url_text, "sweep", "--channels", "16", "--kernel", "1", "--fixed-channels",
            "16", "--input-size", "6", "--rounds", "1", "--no-progress", "--float-engines",
            "eager"]
    monkeypatch.setattr(sys, "argv", ["xnorbench", *args])  # the command a run stores
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "finished" in res.output and needle not in res.output
    assert "password=***" in res.output
    (run,) = Store.open(pg_url).runs()
    assert needle not in (run.command or "") and "password=***" in run.command
    for args in (["runs", "show", str(run.id)], ["info"], ["runs"]):
        res = runner.invoke(app, ["--db", url_text, *args])
        assert res.exit_code == 0 and needle not in res.output, args
    report = tmp_path / "REPORT.md"
    res = runner.invoke(app, ["--db", url_text, "report", "--output", str(report)])
    assert res.exit_code == 0, res.output
    assert needle not in report.read_text()
    res = runner.invoke(app, ["--db", str(tmp_path / "copy.db"), "runs", "import", url_text])
    assert res.exit_code == 0 and needle not in res.output, res.output
    (copied,) = Store.open(str(tmp_path / "copy.db")).runs()
    assert needle not in copied.command
