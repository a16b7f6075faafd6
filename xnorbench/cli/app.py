"""The xnorbench command line: run suites, sweep, list runs, render tables and plots.

Every command reads and writes one results database (--db, env XNORBENCH_DB, default
./xnorbench.db; a SQLite path or any SQLAlchemy URL). Bad input ends with a one-line
"error:" message and exit code 2, before anything is written.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from ..db import DBError, Store, is_in_memory, missing_file, redact


def _paragraphs(text: str) -> str:
    """A docstring reflowed for help output: its paragraphs kept, its line breaks not."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


class _Stderr(logging.Handler):
    """The package's log lines on whatever ``sys.stderr`` is when they are written (a
    test's captured stream, a pipe), bare: the library says what it does, the CLI shows
    it."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def log_to_stderr() -> None:
    """Show the library's INFO lines and above (a kernel build, a busy machine, a
    compile that fell back) on stderr; library code logs, only the command line prints."""
    logger = logging.getLogger("xnorbench")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)


def _with_short_help(command: Any) -> Any:
    """``command`` (and, for a group, its commands) with the line the command lists show:
    the help's first paragraph as one line, so it wraps at the terminal's width rather
    than at the docstring's line breaks."""
    if command is None:
        return None
    if not getattr(command, "short_help", None) and getattr(command, "help", None):
        command.short_help = " ".join(command.help.strip().split("\n\n")[0].split())
    for sub in getattr(command, "commands", {}).values():
        _with_short_help(sub)
    return command


_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
"""Click's usage error (a malformed option or argument), reached through Typer's public
``BadParameter``: Typer vendors Click privately and exports no name for it."""


class AppGroup(TyperGroup):
    """The root command: whatever a command leaves unhandled that a user can act on is
    one ``error:`` line and exit code 2, never a traceback or a usage box: a malformed
    option (``--format xml``), a database locked past the busy timeout or not writable."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _with_short_help(super().get_command(ctx, cmd_name))

    def invoke(self, ctx: Any) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except _USAGE_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help it prints is the answer
                raise
            bad: Any = exc
            where = bad.ctx.command_path if bad.ctx is not None else "xnorbench"
            fail(f"{bad.format_message()} (see `{where} --help`)")
        except DBAPIError as exc:
            fail(database_problem(exc))


def database_problem(exc: BaseException) -> str:
    """One line for a database error a command did not expect: which database, the
    driver's first line (never the SQL or its parameters), and what to do."""
    msg = redact(str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else "",
                 State.db)
    try:
        from ..db import shown_db

        where = shown_db(State.db)
    except DBError:
        where = "the database"
    if "locked" in msg or "busy" in msg:
        return (f"{where}: {msg}: another process held it longer than the busy timeout "
                "(XNORBENCH_BUSY_TIMEOUT_S, default 60 s); try again when it is done")
    if "readonly" in msg or "read-only" in msg:
        return (f"{where}: {msg}: the file (or its folder) cannot be written; make it "
                "writable (chmod, chattr -i) or use another --db")
    return f"{where}: {msg}"


app = typer.Typer(help=_paragraphs(__doc__ or ""), no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, cls=AppGroup)


class State:
    db: str | None = None


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2: the CLI's answer to every bad input."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def open_store(write: bool = False) -> Store:
    """The ``--db`` store; ``write``: for a command that stores something, so an in-memory
    database (which would keep nothing) is refused."""
    if write and is_in_memory(State.db):
        fail(f"--db {State.db}: an in-memory database keeps nothing once the command ends; "
             "give a file or a server URL")
    missing = None if write else missing_file(State.db)
    if missing is not None:
        fail(f"no results database at {missing} (a run creates it: `xnorbench run ...`; "
             "or point --db / XNORBENCH_DB at an existing one)")
    try:
        return Store.open(State.db, write=write)
    except DBError as exc:
        fail(str(exc))


@app.callback()
def main_callback(
    db: Annotated[str | None, typer.Option(
        "--db", envvar="XNORBENCH_DB", metavar="FILE|URL",
        help="Results database: a SQLite file path or a SQLAlchemy URL "
             "\\[default: ./xnorbench.db].")] = None,
) -> None:
    log_to_stderr()
    if db is not None and not db.strip():
        fail("--db is empty: give a SQLite file path or a SQLAlchemy URL (or leave it out "
             "for ./xnorbench.db)")
    State.db = db


def main() -> None:
    """Console entry point."""
    app()
