"""``xnorbench run <suite>`` and ``xnorbench sweep``: each suite's command built from its
declared options, a resume planned (``runs/resume.py``) before the run, torchrun
orchestration, and the outcome of a run mapped to one line and an exit code."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ..db import shown_url
from .app import _paragraphs, app, fail, open_store
from .common import Device, check_folder, check_run_id, check_tags


class SuiteGroup(TyperGroup):
    """``xnorbench run``: its commands are built from the registered suites' declarations
    the first time they are needed, so commands that run no suite (``--help``, ``runs``,
    ``table``) never import the suites (and torch with them)."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from .. import suites  # noqa: F401  (registers the built-in suites)
        from ..runs.registry import REGISTRY

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


run_app = typer.Typer(help="Run a declared suite and store its rows.", no_args_is_help=True,
                      cls=SuiteGroup)
app.add_typer(run_app, name="run")


def given_options(ctx: typer.Context) -> set[str]:
    """The options this command line (or the environment) set explicitly."""
    def source(name: str) -> str:
        src = ctx.get_parameter_source(name)  # click's ParameterSource (vendored by typer)
        return getattr(src, "name", "")

    return {name for name in ctx.params if source(name) in ("COMMANDLINE", "ENVIRONMENT")}


@dataclass(frozen=True)
class RunRequest:
    """One ``run <suite>`` as the command line gave it: the params its options resolved
    to and how to run them. ``given``: the options set explicitly (checked against a
    resumed run's, see :func:`~xnorbench.runs.resume.plan_resume`)."""

    suite: str
    params: dict[str, Any]
    device: Device
    threads: int | None
    seed: int | None
    progress: bool
    checkpoint_dir: Path | None
    resume: int | None
    tags: list[str] | None = None
    given: frozenset[str] = frozenset()


def execute_suite(req: RunRequest) -> int:
    """Validate the device, open the db, run the suite, map outcomes to exit codes.

    Under torchrun, rank 0 does this and the other processes follow it
    (:func:`follow_suite`)."""
    from .. import distributed
    from ..errors import InputError
    from ..runs.environment import resolve_device

    check_folder(req.checkpoint_dir, "--checkpoint-dir")
    check_run_id(req.resume, "--resume")
    if not distributed.launched():
        return _execute_main(req)
    try:
        w = distributed.setup(resolve_device(req.device.value))
    except (ValueError, InputError) as exc:
        fail(str(exc))
    try:
        if not w.main:
            follow_suite(req.suite)
            if not distributed.leave_together():  # rank 0 left after a failure
                raise typer.Exit(1)
            return 0
        try:
            run_id = _execute_main(req)
        finally:  # however rank 0 leaves, the others learn whether there is a run
            distributed.announce(None)
        distributed.leave_together()  # reached only when the run finished
        return run_id
    finally:
        distributed.shutdown()


def _execute_main(req: RunRequest) -> int:
    """Rank 0 (or the only process): open the db, run the suite, report the outcome."""
    from ..errors import InputError, XnorbenchError
    from ..runs.environment import resolve_device
    from ..runs.registry import get_suite
    from ..runs.resume import plan_resume
    from ..runs.runner import RunFailed, RunInterrupted, RunSettings, execute

    store = open_store(write=True)
    threads, dev_name, plan = req.threads, req.device.value, None
    try:
        if req.resume is not None:
            plan = plan_resume(store, get_suite(req.suite), req.resume, given=req.params,
                               named=req.given, threads=threads, device=dev_name,
                               checkpoint_dir=req.checkpoint_dir)
            threads, dev_name = plan.threads, plan.device
        dev = resolve_device(dev_name)
    except (ValueError, InputError) as exc:
        fail(str(exc))
    command = shlex.join(["xnorbench", *sys.argv[1:]]) if sys.argv else None
    try:
        how = RunSettings(device=dev, seed=req.seed, command=command, progress=req.progress,
                          checkpoint_dir=req.checkpoint_dir, threads=threads,
                          tags=tuple(req.tags or ()))
        run_id = execute(store, req.suite, req.params, how, resume=plan)
    except RunInterrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except XnorbenchError as exc:  # each error carries its exit code
        typer.echo(f"error: {exc.line() if isinstance(exc, RunFailed) else exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:
        fail(str(exc))
    n = len(store.results([run_id]))
    typer.echo(f"run {run_id} finished: {n} rows in {shown_url(store.engine.url)}")
    return run_id


def follow_suite(suite: str) -> None:
    """A torchrun process other than rank 0: train in lockstep with it, write nothing;
    one line and a non-zero exit if it fails (torchrun then stops the others)."""
    from ..runs.runner import follow

    try:
        if follow(suite) is None:
            raise typer.Exit(2)  # rank 0 refused the run and said why
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        from ..distributed import world

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

    from ..errors import InputError
    from ..runs.options import defaults

    shown = [o for o in suite.options if not o.hidden]
    hidden = defaults([o for o in suite.options if o.hidden])

    def command(ctx: typer.Context, **kw: Any) -> None:
        try:
            parsed = {o.name: (kw[o.name].value if o.kind == "device" else o.parse(kw[o.name]))
                      for o in shown}
            params = {**hidden, **{o.key: parsed[o.name] for o in shown if o.key}}
            if suite.prepare is not None:
                params = suite.prepare(params)
            tags = check_tags(kw.get("tag"))
        except InputError as exc:
            fail(str(exc))
        seed = parsed.get("seed")
        if seed is None:
            seed = (params.get("seeds") or [0])[0]
        execute_suite(RunRequest(
            suite.name, params, device=Device(parsed.get("device", "cpu")),
            threads=parsed.get("threads", suite.threads), seed=seed, progress=kw["progress"],
            checkpoint_dir=kw.get("checkpoint_dir"), resume=kw.get("resume"), tags=tags,
            given=frozenset(given_options(ctx))))

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


