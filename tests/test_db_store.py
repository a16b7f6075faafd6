"""The store keeps secrets out, leaves import sources untouched, and keeps nothing silent.

* passwords in database URLs are redacted in stored commands, in `runs show`, in what
  `runs import` copies, and in the error for a missing driver;
* `runs import` opens its source read-only (its bytes do not change) and refuses a file
  that is not an xnorbench database with one line;
* an in-memory database is refused for commands that write;
* a finished run's rows are in the `.db` file itself (the WAL is checkpointed), so a copy
  of the file alone holds them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store, redact
from xnorbench.db.store import Row

from .helpers import run_writers

runner = CliRunner()
SECRET_URL = "postgresql+psycopg://alice:s3cr3t-pw@db.example:5432/xb"


def _store_with_run(path: Path, command: str) -> Store:
    store = Store.open(str(path))
    rid = store.start_run("sweep", {"threads": 1}, {"hostname": "h"}, command=command)
    store.add_rows(rid, [Row("speedup", 10.0, "x")])
    store.finish_run(rid, "finished")
    return store


def test_redact_hides_url_passwords_only():
    assert redact(f"xnorbench --db {SECRET_URL} run sweep") == \
        "xnorbench --db postgresql+psycopg://alice:***@db.example:5432/xb run sweep"
    assert redact("sqlite:///results.db --lr 0.1") == "sqlite:///results.db --lr 0.1"


QUERY_URL = "postgresql+psycopg://alice@db.example:5432/xb?password=s3cr3t-pw"


@pytest.mark.parametrize("url,hidden", [(SECRET_URL, "alice:***@"),
                                        (QUERY_URL, "password=***")])
def test_passwords_never_stored_shown_or_imported(tmp_path: Path, url: str, hidden: str):
    src = _store_with_run(tmp_path / "src.db", f"xnorbench --db '{url}' run sweep")
    (run,) = src.runs()
    assert "s3cr3t" not in run.command and hidden in run.command
    # a run stored by an older version, with the password in clear
    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("update runs set command = ?", (f"xb --db {url}",))
    shown = runner.invoke(app, ["--db", str(tmp_path / "src.db"), "runs", "show", "1"])
    assert shown.exit_code == 0 and "s3cr3t" not in shown.output
    res = runner.invoke(app, ["--db", str(tmp_path / "dst.db"), "runs", "import",
                              str(tmp_path / "src.db")])
    assert res.exit_code == 0, res.output
    (copied,) = Store.open(str(tmp_path / "dst.db")).runs()
    assert "s3cr3t" not in copied.command
    for args in (["info"], ["runs"]):  # a server that cannot be reached: still hidden
        res = runner.invoke(app, ["--db", url.replace("db.example", "127.0.0.1:1"), *args])
        assert "s3cr3t" not in res.output, args


def test_missing_driver_error_hides_the_password(tmp_path: Path):
    res = runner.invoke(app, ["--db", "mysql+nosuchdriver://bob:hunter22@h/db", "runs"])
    assert res.exit_code == 2
    assert "hunter22" not in res.output and res.output.startswith("error: ")


def test_import_leaves_its_source_untouched(tmp_path: Path):
    _store_with_run(tmp_path / "src.db", "xb sweep").engine.dispose()
    before = hashlib.sha256((tmp_path / "src.db").read_bytes()).hexdigest()
    res = runner.invoke(app, ["--db", str(tmp_path / "dst.db"), "runs", "import",
                              str(tmp_path / "src.db")])
    assert res.exit_code == 0 and "imported 1 run(s)" in res.output
    assert hashlib.sha256((tmp_path / "src.db").read_bytes()).hexdigest() == before


def test_import_refuses_what_is_not_an_xnorbench_database(tmp_path: Path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table things (x int)")
    before = other.read_bytes()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    for source in (other, empty, junk):
        res = runner.invoke(app, ["--db", str(tmp_path / "dst.db"), "runs", "import",
                                  str(source)])
        assert res.exit_code == 2, (source, res.output)
        assert res.output.startswith("error: ") and res.output.count("\n") == 1
    assert other.read_bytes() == before
    with sqlite3.connect(other) as conn:
        assert [r[0] for r in conn.execute("select name from sqlite_master")] == ["things"]


def test_in_memory_database_is_refused_for_writes(tmp_path: Path):
    for db in ("sqlite:///:memory:", "sqlite://"):
        res = runner.invoke(app, ["--db", db, "run", "ceilings", "--builds", "native",
                                  "--channels", "64", "--input-size", "8", "--rounds", "1",
                                  "--no-progress"])
        assert res.exit_code == 2 and "in-memory" in res.output


def test_finished_run_is_in_the_db_file_alone(tmp_path: Path):
    db = tmp_path / "live.db"
    store = _store_with_run(db, "xb sweep")
    wal = Path(str(db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    shutil.copy(db, tmp_path / "copy.db")  # the .db only, the store still open
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute("select count(*) from results").fetchone()[0] == 1
        assert json.loads(conn.execute("select params from runs").fetchone()[0]) == {
            "threads": 1}
    store.engine.dispose()


def test_redact_hides_every_credential_a_url_can_carry():
    from xnorbench.db import parse_url, shown_url

    cases = {
        "postgresql+psycopg://xb@127.0.0.1:5432/xb?password=SECRET":
            "postgresql+psycopg://xb@127.0.0.1:5432/xb?password=***",
        "postgresql://xb@h/xb?sslmode=require&sslpassword=SECRET&passfile=/p/SECRET":
            "postgresql://xb@h/xb?sslmode=require&sslpassword=***&passfile=***",
        "postgresql://xb:hun@ter2SECRET@host:5432/xb": "postgresql://xb:***@host:5432/xb",
        "postgresql://xb:SECRET@host/xb?PASSWORD=SECRET": "postgresql://xb:***@host/xb?PASSWORD=***",
    }
    for url, shown in cases.items():
        assert redact(f"xnorbench --db '{url}' run sweep") == \
            f"xnorbench --db '{shown}' run sweep"
        assert "SECRET" not in shown_url(parse_url(url, "--db"))
    assert redact("sqlite:////data/a@b.db") == "sqlite:////data/a@b.db"


def test_import_says_which_way_a_schema_differs(tmp_path: Path):
    newer = tmp_path / "newer.db"
    _store_with_run(newer, "xb").engine.dispose()
    with sqlite3.connect(newer) as conn:
        conn.execute("update xnorbench_meta set value='99' where key='schema_version'")
    res = runner.invoke(app, ["--db", str(tmp_path / "dst.db"), "runs", "import", str(newer)])
    assert res.exit_code == 2 and "newer than this xnorbench reads" in res.output
    assert "upgrade it" not in res.output
    unknown = tmp_path / "unknown.db"
    _store_with_run(unknown, "xb").engine.dispose()
    with sqlite3.connect(unknown) as conn:  # this version's number, a revision we lack
        conn.execute("update alembic_version set version_num='9999'")
    res = runner.invoke(app, ["--db", str(tmp_path / "dst.db"), "runs", "import",
                              str(unknown)])
    assert res.exit_code == 2 and "newer than this xnorbench reads" in res.output
    assert "revision 9999" in res.output
    assert Store.open(str(tmp_path / "dst.db")).runs() == []


def test_the_finished_line_names_the_file_as_written(tmp_path: Path):
    folder = tmp_path / "a b%20#c"
    folder.mkdir()
    db = folder / "x.db"
    res = runner.invoke(app, ["--db", str(db), "sweep", "--channels", "16", "--kernel", "1",
                              "--fixed-channels", "16", "--input-size", "6", "--rounds", "1",
                              "--no-progress", "--float-engines", "eager"])
    assert res.exit_code == 0, res.output
    assert f"rows in {db}\n" in res.output


def test_a_sqlite_file_of_another_tool_is_left_byte_identical(tmp_path: Path):
    """`db current` (documented as not changing the file), `runs` and `table` added
    xnorbench's tables to another tool's SQLite file and switched it to WAL."""
    other = tmp_path / "notes.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("create table notes (x text)")
        conn.execute("insert into notes values ('kept')")
    conn.close()
    before = other.read_bytes()
    res = runner.invoke(app, ["--db", str(other), "info"])  # names it, never opens it
    assert res.exit_code == 0 and other.read_bytes() == before
    for args in (["db", "current"], ["runs"], ["table"], ["report", "--output", "r.md"],
                 ["run", "ceilings", "--builds", "portable", "--channels", "64",
                  "--input-size", "8", "--rounds", "1", "--no-progress"]):
        res = runner.invoke(app, ["--db", str(other), *args])
        assert res.exit_code == 2, (args, res.output)
        assert "another tool (tables: notes)" in res.output and res.output[-1] == "\n"
        assert other.read_bytes() == before, args
        assert not Path(f"{other}-wal").exists()
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    res = runner.invoke(app, ["--db", str(empty), "runs"])
    assert res.exit_code == 2 and "an empty database" in res.output
    assert empty.read_bytes() == b""


def test_a_password_fragment_is_masked_in_the_driver_error_too():
    """A password with an unencoded '@' was masked in the URL xnorbench printed, but the
    driver's own error quoted the part SQLAlchemy took for the host."""
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://xb:hun@ter2Q5ecret@127.0.0.1:1/xb"
    res = runner.invoke(app, ["--db", url, "runs"])
    assert res.exit_code == 2 and res.output.startswith("error: ")
    assert "ter2Q5ecret" not in res.output and "hun@" not in res.output
    assert "xb:***@" in res.output


def test_concurrent_writers_sqlite_lose_nothing(tmp_path: Path):
    store = run_writers(str(tmp_path / "conc.db"))
    runs = store.runs(suite="writer")
    assert len(runs) == 4 and all(r.status == "finished" for r in runs)
    assert store.count_results() == 600
    for r in runs:
        assert sorted(x.value for x in store.results([r.id])) == [float(j) for j in range(150)]
