"""The xnorbench command line: run suites, sweep, list runs, render tables and plots.

Every command reads and writes one results database (--db, env XNORBENCH_DB, default
./xnorbench.db; a SQLite path or any SQLAlchemy URL). Bad input ends with a one-line
"error:" message and exit code 2, before anything is written.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from .db import DBError, Store, is_in_memory, is_stale, missing_file, redact, shown_url

SQL_INT_MAX = 2**63 - 1
"""The largest id or count a database integer holds (SQLite's and PostgreSQL's bigint)."""


def _paragraphs(text: str) -> str:
    """A docstring reflowed for help output: its paragraphs kept, its line breaks not."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


class SuiteGroup(TyperGroup):
    """``xnorbench run``: its commands are built from the registered suites' declarations
    the first time they are needed, so commands that run no suite (``--help``, ``runs``,
    ``table``) never import the suites (and torch with them)."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from . import suites  # noqa: F401  (registers the built-in suites)
        from .harness.registry import REGISTRY

        built = typer.Typer()
        for suite in REGISTRY.values():
            built.command(suite.name, help=_paragraphs(suite.doc or suite.help))(
                suite_command(suite))
        built.command("_")(lambda: None)  # two commands at least, so it builds a group
        group = typer.main.get_command(built)
        for name, command in group.commands.items():  # type: ignore[attr-defined]
            if name != "_":
                self.add_command(command, name)

    def list_commands(self, ctx: Any) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, name: str) -> Any:
        self._load()
        return super().get_command(ctx, name)


class AppGroup(TyperGroup):
    """The root command: whatever a command leaves unhandled that a user can act on is
    one ``error:`` line and exit code 2, never a traceback or a usage box: a malformed
    option (``--format xml``), a database locked past the busy timeout or not writable."""

    def invoke(self, ctx: Any) -> Any:
        from sqlalchemy.exc import DBAPIError
        from typer._click.exceptions import NoArgsIsHelpError, UsageError

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "xnorbench"
            fail(f"{exc.format_message()} (see `{where} --help`)")
        except DBAPIError as exc:
            fail(database_problem(exc))


def database_problem(exc: BaseException) -> str:
    """One line for a database error a command did not expect: which database, the
    driver's first line (never the SQL or its parameters), and what to do."""
    msg = redact(str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else "")
    try:
        from .db import shown_db

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
run_app = typer.Typer(help="Run a declared suite and store its rows.", no_args_is_help=True,
                      cls=SuiteGroup)
runs_app = typer.Typer(help="List runs, show one, import another db's, mark dead ones.",
                       invoke_without_command=True)
plot_app = typer.Typer(help="Draw figures from stored rows (PNG).", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(runs_app, name="runs")
db_app = typer.Typer(help="The results database's schema: which version, and upgrading it "
                          "(Alembic revisions).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")
app.add_typer(db_app, name="db")

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
        return Store.open(State.db)
    except DBError as exc:
        fail(str(exc))


@app.callback()
def main_callback(
    db: Annotated[str | None, typer.Option(
        "--db", envvar="XNORBENCH_DB",
        help="Results database: a SQLite file path or a SQLAlchemy URL "
             "\\[default: ./xnorbench.db].")] = None,
) -> None:
    if db is not None and not db.strip():
        fail("--db is empty: give a SQLite file path or a SQLAlchemy URL (or leave it out "
             "for ./xnorbench.db)")
    State.db = db


# ----------------------------------------------------------------------------- helpers
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def parse_int_list(text: str, name: str, minimum: int = 1) -> list[int]:
    """'16,32,64' -> [16, 32, 64]; anything else is a one-line error."""
    from .harness.options import int_list
    from .harness.registry import InputError

    try:
        return int_list(text, name, minimum)
    except InputError as exc:
        fail(str(exc))


def _choose(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``; else a one-line error."""
    if value not in choices:
        fail(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def _positive(value: int | float | None, what: str, allow_zero: bool = False,
              maximum: float = SQL_INT_MAX) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"{what} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        fail(f"{what} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    if value > maximum:
        fail(f"{what} {value:g} is too large (at most {maximum:g})")


def _run_id(value: int | None, what: str = "run id") -> None:
    """A run id the database can hold (a positive 64-bit integer)."""
    if value is not None and not 1 <= value <= SQL_INT_MAX:
        fail(f"{what} {value}: no such run (ids are positive whole numbers below 2^63)")


MAX_MINUTES = 10 * 365 * 24 * 60
"""The longest heartbeat age a command accepts (ten years, in minutes)."""


def _path(path: Path | None, what: str) -> None:
    """A path option the file system cannot hold (a name over 255 bytes): one line."""
    from .paths import path_problem

    problem = path_problem(path) if path is not None else None
    if problem:
        fail(f"{what} {str(path)[:60]}...: {problem}")


NOT_STORED = frozenset({"progress", "tag", "resume", "checkpoint_dir", "download"})
"""Options that do not change what a run computes: free to differ on ``--resume``."""


def given_options(ctx: typer.Context) -> set[str]:
    """The options this command line (or the environment) set explicitly."""
    def source(name: str) -> str:
        src = ctx.get_parameter_source(name)  # click's ParameterSource (vendored by typer)
        return getattr(src, "name", "")

    return {name for name in ctx.params if source(name) in ("COMMANDLINE", "ENVIRONMENT")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def resume_settings(store: Store, resume: int, params: dict[str, Any], given: set[str],
                    threads: int | None, device: str) -> tuple[int | None, str]:
    """A resumed run keeps what it started with: refuse an option given beside
    ``--resume`` that differs from the stored run, and return the threads and device it
    ran on (used unless given, and then they must match)."""
    run = store.run(resume)
    if run is None:
        fail(f"--resume {resume}: no such run")
    stored = run.params or {}
    for name in sorted(given - NOT_STORED - {"threads", "device"}):
        key = name if name in params else f"{name}s"  # --seed -> seeds, --kernel -> kernels
        if key not in params:
            continue
        new, old = params[key], stored.get(key)
        if key == "data_dir" and new and old and Path(new).resolve() == Path(old).resolve():
            continue
        if not _same(new, old):
            from .harness.recipes import show_value

            fail(f"--resume {resume}: --{name.replace('_', '-')} {show_value(new)} differs "
                 f"from the run's {show_value(old)}; a resumed run keeps the options it "
                 "started with (start a new run to change them)")
    if "threads" in given and run.threads and threads != run.threads:
        fail(f"--resume {resume}: --threads {threads} differs from the run's {run.threads}; "
             "leave it out to resume on the same thread count")
    if "device" in given and device != "auto" and run.device and device != run.device:
        fail(f"--resume {resume}: --device {device} differs from the run's {run.device}")
    return (threads if "threads" in given else run.threads), (run.device or device)


def execute_suite(suite: str, params: dict[str, Any], *, device: Device, threads: int | None,
                  seed: int | None, progress: bool, checkpoint_dir: Path | None,
                  resume: int | None, tags: list[str] | None = None,
                  given: set[str] | None = None) -> int:
    """Validate the device, open the db, run the suite, map outcomes to exit codes.

    ``given``: the options the command line set explicitly (checked against a resumed
    run's, see :func:`resume_settings`). Under torchrun, rank 0 does this and the other
    processes follow it (:func:`follow_suite`)."""
    from .harness import distributed
    from .harness.environment import resolve_device
    from .harness.registry import InputError

    _path(checkpoint_dir, "--checkpoint-dir")
    _run_id(resume, "--resume")
    if distributed.launched():
        try:
            w = distributed.setup(resolve_device(device.value))
        except (ValueError, InputError) as exc:
            fail(str(exc))
        try:
            if not w.main:
                follow_suite(suite)
                if not distributed.leave_together():  # rank 0 left after a failure
                    raise typer.Exit(1)
                return 0
            try:
                run_id = _execute_main(suite, params, device=device, threads=threads,
                                       seed=seed, progress=progress,
                                       checkpoint_dir=checkpoint_dir, resume=resume,
                                       tags=tags, given=given)
            finally:  # however rank 0 leaves, the others learn whether there is a run
                distributed.announce(None)
            distributed.leave_together()  # reached only when the run finished
            return run_id
        finally:
            distributed.shutdown()
    return _execute_main(suite, params, device=device, threads=threads, seed=seed,
                         progress=progress, checkpoint_dir=checkpoint_dir, resume=resume,
                         tags=tags, given=given)


def _execute_main(suite: str, params: dict[str, Any], *, device: Device, threads: int | None,
                  seed: int | None, progress: bool, checkpoint_dir: Path | None,
                  resume: int | None, tags: list[str] | None, given: set[str] | None) -> int:
    """Rank 0 (or the only process): open the db, run the suite, report the outcome."""
    from .db import DatabaseGone, RunLost
    from .harness.environment import resolve_device
    from .harness.registry import InputError
    from .harness.runner import (
        RunFailed,
        RunInterrupted,
        RunRejected,
        StatusNotSaved,
        execute,
    )

    store = open_store(write=True)
    dev_name = device.value
    if resume is not None:
        threads, dev_name = resume_settings(store, resume, params, given or set(), threads,
                                            device.value)
    try:
        dev = resolve_device(dev_name)
    except ValueError as exc:
        fail(str(exc))
    command = shlex.join(["xnorbench", *sys.argv[1:]]) if sys.argv else None
    try:
        run_id = execute(store, suite, params, device=dev, seed=seed, command=command,
                         progress=progress, checkpoint_dir=checkpoint_dir, resume_run=resume,
                         threads=threads, tags=tags)
    except RunInterrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(130) from None
    except (RunRejected, InputError) as exc:
        fail(str(exc))
    except RunFailed as exc:
        from .harness.checkpoints import CheckpointError
        from .harness.datasets import DatasetError
        from .harness.runner import IncompleteRun
        from .harness.training import NonFiniteLoss

        if isinstance(exc.error, (DatasetError, NonFiniteLoss, CheckpointError)):
            typer.echo(f"error: {exc.error} (run {exc.run_id} marked failed)", err=True)
            raise typer.Exit(2) from None
        if isinstance(exc.error, IncompleteRun):
            typer.echo(f"error: {exc.error} (marked failed)", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (RunLost, StatusNotSaved, DatabaseGone) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        fail(str(exc))
    n = len(store.results([run_id]))
    typer.echo(f"run {run_id} finished: {n} rows in {shown_url(store.engine.url)}")
    return run_id


def follow_suite(suite: str) -> None:
    """A torchrun process other than rank 0: train in lockstep with it, write nothing;
    one line and a non-zero exit if it fails (torchrun then stops the others)."""
    from .harness.runner import follow

    try:
        if follow(suite) is None:
            raise typer.Exit(2)  # rank 0 refused the run and said why
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        from .harness.distributed import world

        typer.echo(f"error: rank {world().rank}: {type(exc).__name__}: "
                   f"{str(exc).splitlines()[0] if str(exc) else ''}", err=True)
        raise typer.Exit(1) from None


ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.", metavar="")]
CkptOpt = Annotated[Path | None, typer.Option(
    help="Where per-epoch checkpoints go: FOLDER/db-<database id>/run-<id>/ (a resume "
         "reads them there; removed once the run finishes; the packed XNOR network, "
         "*.packed, stays) \\[default: ./checkpoints, or the resumed run's].",
    show_default=False, metavar="FOLDER")]
ResumeOpt = Annotated[int | None, typer.Option(
    help="Continue the interrupted or failed run with this id from its checkpoints, with "
         "the options it started with (an option given beside it must match).",
    metavar="ID")]


TagOpt = Annotated[list[str] | None, typer.Option(
    "--tag", help="Name this run (repeatable); `table --tag NAME` shows exactly such runs.",
    metavar="NAME")]


def _tags(tags: list[str] | None) -> list[str]:
    out = []
    for t in tags or []:
        t = t.strip()
        if not t or len(t) > 64 or "," in t or not t.isprintable():
            fail(f"--tag {t!r}: a tag is 1 to 64 printable characters (no commas, no line "
                 "breaks or tabs)")
        out.append(t)
    return out


# ------------------------------------------------------------------ run <suite>
def _typer_option(opt: Any) -> tuple[Any, Any]:
    """(annotation, default) of a declared option as a Typer parameter."""
    base = {"int": int, "float": float, "bool": bool, "path": Path, "device": Device}.get(
        opt.kind, str)
    if opt.kind == "device":
        default: Any = Device(opt.default)
    elif opt.default is None:
        default = None
    elif opt.kind in ("ints", "strs"):
        default = opt.shown()
    else:
        default = opt.default
    annotation = base if default is not None else base | None
    info = typer.Option(*opt.decls, help=opt.help, show_default=opt.show_default,
                        rich_help_panel=opt.panel, metavar=_metavar(opt))
    return Annotated[annotation, info], default


def _metavar(opt: Any) -> str | None:
    """What ``--help`` shows for the value: the choices, or the value's shape (nothing
    for an on/off flag), instead of Typer's ``<str>`` / ``<bool>``."""
    if opt.kind == "bool":
        return ""
    if opt.choices:
        return "|".join(opt.choices)
    return {"int": "N", "float": "X", "path": "PATH", "ints": "N,N,...", "strs": "A,B,...",
            "device": "auto|cpu|cuda"}.get(opt.kind, "TEXT")


def suite_command(suite: Any) -> Any:
    """The ``xnorbench run <suite>`` command of a declared suite: one Typer option per
    declared option, plus --tag, --progress and, where the suite supports them,
    --checkpoint-dir and --resume. The stored params are the parsed options, resolved by
    the suite's ``prepare``."""
    import inspect

    from .harness.options import defaults
    from .harness.registry import InputError

    shown = [o for o in suite.options if not o.hidden]
    hidden = defaults([o for o in suite.options if o.hidden])

    def command(ctx: typer.Context, **kw: Any) -> None:
        try:
            parsed = {o.name: (kw[o.name].value if o.kind == "device" else o.parse(kw[o.name]))
                      for o in shown}
            params = {**hidden, **{o.key: parsed[o.name] for o in shown if o.key}}
            if suite.prepare is not None:
                params = suite.prepare(params)
            tags = _tags(kw.get("tag"))
        except InputError as exc:
            fail(str(exc))
        seed = parsed.get("seed")
        if seed is None:
            seed = (params.get("seeds") or [0])[0]
        execute_suite(suite.name, params, device=Device(parsed.get("device", "cpu")),
                      threads=parsed.get("threads", suite.threads), seed=seed,
                      progress=kw["progress"], checkpoint_dir=kw.get("checkpoint_dir"),
                      resume=kw.get("resume"), tags=tags, given=given_options(ctx))

    kind = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=typer.Context)]
    for opt in shown:
        annotation, default = _typer_option(opt)
        params.append(inspect.Parameter(opt.name, kind, default=default, annotation=annotation))
    params.append(inspect.Parameter("tag", kind, default=None, annotation=TagOpt))
    params.append(inspect.Parameter("progress", kind, default=True, annotation=ProgressOpt))
    if suite.checkpoints:
        params.append(inspect.Parameter("checkpoint_dir", kind, default=None,
                                        annotation=CkptOpt))
    if suite.check is not None:
        params.append(inspect.Parameter("resume", kind, default=None, annotation=ResumeOpt))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = f"run_{suite.name}"
    command.__doc__ = suite.doc or suite.help
    return command


@app.command("sweep", add_help_option=False,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def sweep_alias(ctx: typer.Context) -> None:
    """Speedup of the XNOR conv over float conv vs channels and filter size (Fig. 4 b-c):
    the same as `xnorbench run sweep` (its options, its --help)."""
    run_group = ctx.parent.command.get_command(ctx.parent, "run")  # type: ignore[union-attr]
    command = run_group.get_command(ctx, "sweep")
    with command.make_context("sweep", list(ctx.args), parent=ctx.parent) as sub:
        command.invoke(sub)


# ---------------------------------------------------------------------------- recipes
@app.command("info")
def info_cmd(
    build: Annotated[bool, typer.Option(
        help="Also build (if needed) and load the kernels, to report their real path.",
        metavar="")] = False,
) -> None:
    """This machine as xnorbench sees it: CPU, kernel build and path, where the database,
    data, checkpoints and kernel cache live. Then `xnorbench run ceilings` measures this
    CPU's peaks."""
    import os

    import torch

    from .db import shown_db
    from .harness.datasets import data_dir
    from .harness.environment import cpu_info
    from .xnor.kernels import build_dir, default_build, expected_isa, kernel_isa, needs_build

    cpu, flags = cpu_info()
    kb = default_build()
    try:
        db = shown_db(State.db)
    except DBError as exc:
        db = f"(unusable: {exc})"
    rows = [
        ("CPU", cpu), ("ISA flags", flags or "-"),
        ("torch threads", str(torch.get_num_threads())),
        ("CUDA", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("kernel build", f"{kb} (XNORBENCH_KERNEL_BUILD=native|avx2|portable)"),
        ("kernel path", kernel_isa() if build else
         f"{expected_isa(kb)} (expected; --build loads it)"),
        ("kernel cache", f"{build_dir(kb)} "
                         f"({'not built yet' if needs_build(kb) else 'built'}; "
                         "XNORBENCH_BUILD_DIR)"),
        ("database", f"{db} (--db, XNORBENCH_DB)"),
        ("data", f"{data_dir(None).resolve()} (--data-dir, XNORBENCH_DATA)"),
        ("checkpoints", f"{(Path('checkpoints')).resolve()}/db-<database id>/run-<id>/ "
                        "(--checkpoint-dir)"),
        ("heartbeat", f"every {os.environ.get('XNORBENCH_HEARTBEAT_S', '30')} s "
                      "(XNORBENCH_HEARTBEAT_S)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command("recipes")
def recipes_cmd(
    name: Annotated[str | None, typer.Argument(help="Show only this recipe.",
                                               metavar="NAME")] = None,
) -> None:
    """List the named recipes (--recipe NAME): every value they set, and its source."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from .harness.recipes import PRESETS, show_value

    if name is not None and name not in PRESETS:
        fail(f"unknown recipe {name!r}; choose one of {', '.join(PRESETS)}")
    t = RichTable("recipe", "what", "values", "source", show_lines=True)
    for preset in PRESETS.values():
        if name is not None and preset.name != name:
            continue
        values = "\n".join(f"{k} = {show_value(v)}" for k, v in preset.values.items())
        t.add_row(preset.name, preset.summary, values, preset.source)
    Console(width=160).print(t)
    typer.echo("Options given beside --recipe override it; runs store the resolved values "
               "(`xnorbench runs show ID`).")


# ---------------------------------------------------------------------------- table
class TableFormat(str, Enum):
    markdown = "markdown"
    csv = "csv"
    json = "json"


RunSelOpt = Annotated[str | None, typer.Option(
    "--run", help="Show exactly these runs (comma-separated ids), even subset or "
                  "differently-recipe'd ones; a pair of different recipes is labelled.")]
TagSelOpt = Annotated[str | None, typer.Option(
    "--tag", help="Show exactly the runs with this tag (see `runs tag`).")]


def selection_from(store: Store, run: str | None, tag: str | None) -> Any:
    """The ``--run`` / ``--tag`` selection; an id or tag that matches nothing is an error."""
    from .report.selection import Selection

    ids = tuple(parse_int_list(run, "--run")) if run is not None else None
    for i in ids or ():
        _run_id(i, "--run")
    if ids is not None:
        missing = [i for i in ids if store.run(i) is None]
        if missing:
            fail(f"--run: no run with id {', '.join(map(str, missing))}")
    if tag is not None and not store.runs(tag=tag):
        fail(f"--tag {tag!r}: no run has this tag (`xnorbench runs` lists the tags)")
    return Selection(ids, tag)


TABLE_SOURCES = {"seeds": "accuracy", "cells": "accuracy", "train-step": "timing",
                 "train-memory": "memory", "saved-by-layer": "memory"}
"""The suite whose runs fill a table (when its name differs)."""


@app.command("table")
def table(
    suite: Annotated[str, typer.Option(
        help="accuracy (the mission's table), seeds (its per-seed values), cells (every "
             "trained recipe and variant), sweep, memory, timing, train-step (step time and "
             "operators, float vs XNOR fused vs BinOp), train-memory (bytes kept for "
             "backward, peak RSS), saved-by-layer, ceilings (per-core peaks) or compare.")
    ] = "accuracy",
    format: Annotated[TableFormat, typer.Option("--format", help="Output format.")
                      ] = TableFormat.markdown,
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")
                      ] = None,
    run: RunSelOpt = None,
    tag: TagSelOpt = None,
) -> None:
    """Render a results table from finished runs.

    The accuracy table shows, per dataset and network, one recipe's float and XNOR cells
    (mean ± std over seeds): full-data recipes before subsets, then the most training;
    --run / --tag choose exactly what is shown.
    """
    from .report import tables

    renderers = {"accuracy": tables.accuracy_table, "seeds": tables.per_seed_table,
                 "cells": tables.cells_table,
                 "sweep": tables.sweep_table, "memory": tables.memory_table,
                 "timing": tables.timing_table, "train-step": tables.train_step_table,
                 "train-memory": tables.train_memory_table,
                 "saved-by-layer": tables.saved_by_layer_table,
                 "ceilings": tables.ceilings_table,
                 "compare": tables.compare_table}
    _choose(suite, list(renderers), "table suite")
    store = open_store()
    selection = selection_from(store, run, tag)
    rendered = renderers[suite](store, selection)
    if not rendered.rows:
        source = TABLE_SOURCES.get(suite, suite)
        command = "xnorbench sweep" if source == "sweep" else f"xnorbench run {source}"
        chosen = " among the chosen runs" if run or tag else ""
        fail(f"no finished {source} runs{chosen} yet for `table --suite {suite}`; run "
             f"`{command}` first")
    text = tables.render(rendered, format.value)
    for remark in rendered.remarks:  # on stderr: the table itself stays as chosen
        typer.echo(f"note: {remark}", err=True)
    if output:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        typer.echo(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


# ---------------------------------------------------------------------------- report
@app.command("report")
def report(
    output: Annotated[Path, typer.Option(help="Markdown file; PNG plots go beside it.")
                      ] = Path("REPORT.md"),
    run: RunSelOpt = None,
    tag: TagSelOpt = None,
    notes: Annotated[Path | None, typer.Option(
        help="A markdown file of findings written by hand (citing run ids); appended as "
             "section 3.4, labelled as hand-written.")] = None,
) -> None:
    """Write the report (3.1 results, 3.2 sweeps, 3.3 discussion) from the db alone."""
    from .report.report import write_report

    if notes is not None and not notes.is_file():
        fail(f"--notes {notes}: no such file")
    if notes is not None:
        try:
            notes.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            fail(f"--notes {notes}: not a readable UTF-8 text file "
                 f"({getattr(exc, 'reason', None) or getattr(exc, 'strerror', exc)})")
    _path(output, "--output")
    if output.is_dir() or output.suffix.lower() not in (".md", ".markdown"):
        fail(f"--output {output}: give the report's markdown file, e.g. "
             f"{output / 'REPORT.md'} (its plots go beside it)")
    if output.parent.exists() and not output.parent.is_dir():
        fail(f"--output {output}: {output.parent} is not a folder")
    store = open_store()
    selection = selection_from(store, run, tag)
    try:
        paths = write_report(store, output, selection, notes)
    except OSError as exc:
        fail(f"cannot write {exc.filename or output}: {exc.strerror}")
    for p in paths:
        typer.echo(f"wrote {p}")


# ----------------------------------------------------------------------------- runs
@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    stale_minutes: Annotated[float, typer.Option(
        help="A running run without heartbeat for this long shows as stale.")] = 10,
) -> None:
    """List runs, newest first; a running run without heartbeat shows as stale."""
    if ctx.invoked_subcommand is not None:
        return
    _positive(stale_minutes, "--stale-minutes", maximum=MAX_MINUTES)
    _positive(limit, "--limit")
    from rich.console import Console
    from rich.table import Table

    store = open_store()
    t = Table("id", "suite", "status", "started", "ended", "rows", "device", "threads",
              "commit", "tags")
    runs = store.runs(suite=suite, limit=limit)
    tags = store.tags([r.id for r in runs])
    for r in runs:
        stale = is_stale(r, timedelta(minutes=stale_minutes))
        status = r.status + (" (stale)" if stale else "")
        t.add_row(str(r.id), r.suite, status, f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                  f"{r.ended_at:%H:%M:%S}" if r.ended_at else "",
                  str(len(store.results([r.id]))), r.device or "", str(r.threads or ""),
                  (r.git_commit or "")[:8] + ("+" if r.git_dirty else ""),
                  ",".join(tags.get(r.id, [])))
    Console(width=160).print(t)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run id.", metavar="ID")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the whole record, every result row included, as JSON.",
        metavar="")] = False,
    rows: Annotated[int, typer.Option(help="At most this many result rows in the view.",
                                      metavar="N")] = 60,
) -> None:
    """Everything stored about one run: status, command, resolved options, where it ran,
    and its result rows."""
    from rich.console import Console

    from .report.run_view import render_run, run_record

    _positive(rows, "--rows", allow_zero=True)
    _run_id(run_id)
    store = open_store()
    run = store.run(run_id)
    if run is None:
        fail(f"no run with id {run_id}")
    record = run_record(store, run)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    render_run(Console(width=max(100, Console().width)), record, rows)


@runs_app.command("tag")
def runs_tag(
    run_id: Annotated[int, typer.Argument(help="Run id.", metavar="ID")],
    name: Annotated[str, typer.Argument(help="The tag (1-64 characters, no commas).",
                                        metavar="NAME")],
    remove: Annotated[bool, typer.Option(help="Take the tag away instead.", metavar="")] = False,
) -> None:
    """Tag a run (or --remove a tag); `table --tag NAME` then shows exactly such runs."""
    (name,) = _tags([name])
    _run_id(run_id)
    store = open_store(write=True)
    if store.run(run_id) is None:
        fail(f"no run with id {run_id}")
    changed = store.tag(run_id, name, remove=remove)
    what = ("removed" if changed else "did not have") if remove else \
        ("tagged" if changed else "already tagged")
    typer.echo(f"run {run_id}: {what} {name!r}")


@runs_app.command("mark-stale")
def runs_mark_stale(
    minutes: Annotated[float, typer.Option(help="No heartbeat for this long = dead.")] = 10,
) -> None:
    """Mark running runs whose process died (no heartbeat) as interrupted."""
    _positive(minutes, "--minutes", maximum=MAX_MINUTES)
    ids = open_store().mark_stale(timedelta(minutes=minutes))
    typer.echo(f"marked {len(ids)} stale run(s) interrupted: {ids}")


@runs_app.command("import")
def runs_import(
    source: Annotated[str, typer.Argument(
        help="The other results database: a SQLite file or a SQLAlchemy URL.")],
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
) -> None:
    """Copy the finished runs of another database (a device machine's, say) into this one."""
    if "://" not in source and not Path(source).is_file():
        fail(f"no database file {source}")
    try:
        src = Store.open_source(source)  # read-only: the source is never changed
    except DBError as exc:
        fail(str(exc))
    store = open_store(write=True)
    if _same_database(src, store):
        fail("the source is this database")
    mapping = store.import_runs(src, suite=suite)
    pairs = ", ".join(f"{old} -> {new}" for old, new in mapping.items())
    typer.echo(f"imported {len(mapping)} run(s)" + (f": {pairs}" if pairs else " (none new)"))


def _same_database(a: Store, b: Store) -> bool:
    """Whether two stores are one database (a read-only SQLite URL names its file)."""
    ua, ub = a.engine.url, b.engine.url
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return ua.render_as_string(hide_password=False) == ub.render_as_string(hide_password=False)


# ----------------------------------------------------------------------------- db
def _schema_line(state: Any) -> str:
    at = state.effective or "unknown"
    version = f", schema version {state.version}" if state.version is not None else ""
    where = "the head" if state.current else f"behind the head {state.head}"
    return f"revision {at}{version}: {where}"


@db_app.command("current")
def db_current() -> None:
    """Which schema revision the database is at, and whether an upgrade is waiting (the
    database is not changed)."""
    if is_in_memory(State.db):
        fail("--db: an in-memory database has no schema to show")
    missing = missing_file(State.db)
    if missing is not None:
        fail(f"no database file {missing}")
    try:
        store = Store.open(State.db, upgrade=False)
    except DBError as exc:
        fail(str(exc))
    state = store.schema()
    typer.echo(_schema_line(state) + ("" if state.current or state.revision is None and
                                      state.version is None else
                                      "; `xnorbench db upgrade` upgrades it"))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database's schema in place to this xnorbench's (every other command
    does this too when it opens an older file); rows are kept."""
    try:
        before = Store.open(State.db, upgrade=False)
        old = before.schema()
        new = before.upgrade()
    except DBError as exc:
        fail(str(exc))
    if old.effective == new.effective:
        typer.echo(f"already current: {_schema_line(new)}")
    else:
        typer.echo(f"upgraded from revision {old.effective} to {new.effective}: "
                   f"{_schema_line(new)}")


# ----------------------------------------------------------------------------- plot
@plot_app.command("sweep")
def plot_sweep(
    output_dir: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("."),
) -> None:
    """Draw Fig. 4(b) and 4(c): measured and theoretical speedup (PNG)."""
    from .report.plots import plot_sweeps
    from .report.tables import sweep_points

    _path(output_dir, "--output-dir")
    store = open_store()
    points = sweep_points(store)
    if not points:
        fail("no finished sweep rows in the database; run `xnorbench sweep` first")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {output_dir}: {exc.strerror}")
    for path in plot_sweeps(points, output_dir):
        typer.echo(f"wrote {path}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
