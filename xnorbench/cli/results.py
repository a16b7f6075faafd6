"""The commands that read results: ``info``, ``recipes``, ``table``, ``report`` and
``plot``; they never run a model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..db import DBError, Store
from .app import State, app, fail, open_store
from .common import check_path, check_run_id, choose, parse_int_list

plot_app = typer.Typer(help="Draw figures from stored rows (PNG).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


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

    from ..data.files import data_dir
    from ..db import shown_db
    from ..measure.cpu_units import bf16_unit, int8_unit
    from ..runs.environment import cpu_info
    from ..xnor.kernels import build_dir, default_build, expected_isa, kernel_isa, needs_build

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
        ("int8 unit", int8_unit() or "none (AVX2: int8 through 16-bit products)"),
        ("bf16 unit", bf16_unit() or "none (the bf16 baselines are left out here)"),
        ("baselines", _runtimes()),
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


def _runtimes() -> str:
    """Which baseline runtimes are installed, with their versions."""
    from importlib.metadata import PackageNotFoundError, version

    out = ["torch " + version("torch")]
    for name, extra in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} missing (pip install 'xnorbench[{extra}]')")
    return ", ".join(out)


@app.command("recipes")
def recipes_cmd(
    name: Annotated[str | None, typer.Argument(help="Show only this recipe.",
                                               metavar="NAME")] = None,
) -> None:
    """List the named recipes (--recipe NAME): what each sets away from the defaults, and
    the source of every choice."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from ..training.recipes import PRESETS, show_value

    if name is not None and name not in PRESETS:
        fail(f"unknown recipe {name!r}; choose one of {', '.join(PRESETS)}")
    t = RichTable("recipe", "what", "values", "source", show_lines=True)
    for preset in PRESETS.values():
        if name is not None and preset.name != name:
            continue
        values = "\n".join(f"{k} = {show_value(v)}" for k, v in preset.changes().items())
        t.add_row(preset.name, preset.summary, values, preset.source)
    Console(width=160).print(t)
    typer.echo("Every option a recipe does not list keeps its default (`xnorbench run "
               "accuracy --help`). Options given beside --recipe override it; runs store the "
               "resolved values (`xnorbench runs show ID`).")


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
    from ..report.selection import Selection

    ids = tuple(parse_int_list(run, "--run")) if run is not None else None
    for i in ids or ():
        check_run_id(i, "--run")
    if ids is not None:
        missing = [i for i in ids if store.run(i) is None]
        if missing:
            fail(f"--run: no run with id {', '.join(map(str, missing))}")
    if tag is not None and not store.runs(tag=tag):
        fail(f"--tag {tag!r}: no run has this tag (`xnorbench runs` lists the tags)")
    return Selection(ids, tag)


TABLE_SOURCES = {"seeds": "accuracy", "cells": "accuracy", "train-step": "timing",
                 "breakdown": "timing", "train-memory": "memory", "saved-by-layer": "memory"}
"""The suite whose runs fill a table (when its name differs)."""


@app.command("table")
def table(
    suite: Annotated[str, typer.Option(
        help="accuracy (the mission's table), seeds (its per-seed values), cells (every "
             "trained recipe and variant), sweep, memory, timing, train-step (step time and "
             "operators, float vs XNOR fused vs BinOp), breakdown (where the packed "
             "network's time goes: run timing --profile), train-memory (bytes kept for "
             "backward, peak RSS), saved-by-layer, ceilings (per-core peaks), compare or "
             "tradeoff (fp32 / bf16 / int8 / XNOR: accuracy, latency, size).")
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
    from ..report import (
        breakdown_tables,
        memory_tables,
        speed_tables,
        table_format,
        tables,
        tradeoff_tables,
    )

    renderers = {"accuracy": tables.accuracy_table, "seeds": tables.per_seed_table,
                 "cells": tables.cells_table,
                 "sweep": speed_tables.sweep_table, "memory": memory_tables.memory_table,
                 "timing": speed_tables.timing_table, "train-step": speed_tables.train_step_table,
                 "breakdown": breakdown_tables.breakdown_table,
                 "train-memory": memory_tables.train_memory_table,
                 "saved-by-layer": memory_tables.saved_by_layer_table,
                 "ceilings": speed_tables.ceilings_table,
                 "compare": tables.compare_table,
                 "tradeoff": tradeoff_tables.tradeoff_table}
    choose(suite, list(renderers), "table suite")
    store = open_store()
    selection = selection_from(store, run, tag)
    rendered = renderers[suite](store, selection)
    if not rendered.rows:
        source = TABLE_SOURCES.get(suite, suite)
        command = "xnorbench sweep" if source == "sweep" else f"xnorbench run {source}"
        if suite == "breakdown":
            command, source = command + " --profile", "profiled timing"
        chosen = " among the chosen runs" if run or tag else ""
        fail(f"no finished {source} runs{chosen} yet for `table --suite {suite}`; run "
             f"`{command}` first")
    text = table_format.render(rendered, format.value)
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
    from ..report.report import write_report

    if notes is not None and not notes.is_file():
        fail(f"--notes {notes}: no such file")
    if notes is not None:
        try:
            notes.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            fail(f"--notes {notes}: not a readable UTF-8 text file "
                 f"({getattr(exc, 'reason', None) or getattr(exc, 'strerror', exc)})")
    check_path(output, "--output")
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


# ----------------------------------------------------------------------------- plot
@plot_app.command("sweep")
def plot_sweep(
    output_dir: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("."),
) -> None:
    """Draw Fig. 4(b) and 4(c): measured and theoretical speedup (PNG)."""
    from ..report.plots import plot_sweeps
    from ..report.queries import sweep_points

    check_path(output_dir, "--output-dir")
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
