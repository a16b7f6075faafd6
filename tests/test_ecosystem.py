"""What a new user sees: the first kernel build announced, no CUDA_HOME noise, progress
lines without a terminal, a readable `runs show`, helpful empty states, `info`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

from .conftest import make_mnist

runner = CliRunner()


def test_first_kernel_build_is_announced_once(tmp_path: Path, monkeypatch, caplog):
    """The library logs the build (INFO, logger ``xnorbench.xnor.kernels``; the CLI shows
    it on stderr), nothing when the build is cached, and how long the last one took when
    it builds again."""
    caplog.set_level(logging.INFO, logger="xnorbench")
    from xnorbench.xnor import kernels

    monkeypatch.setenv("XNORBENCH_BUILD_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "BUILD_SECONDS", {})  # the session's own builds untouched
    built = []

    def fake_load(name: str, build_directory: str, **_: object) -> SimpleNamespace:
        built.append(name)
        lib = Path(build_directory) / f"{name}.so"
        lib.write_bytes(b"")  # what a finished build leaves
        return SimpleNamespace(__name__=name)

    monkeypatch.setattr(kernels, "_import_cpp_extension",
                        lambda: SimpleNamespace(load=fake_load))
    load = kernels._load.__wrapped__
    load("portable")
    err = caplog.text
    assert "building the XNOR kernels for this CPU (scalar, portable build), once" in err
    folder = kernels.build_dir("portable")
    assert folder.parent == tmp_path / "cache" and str(folder) in err
    caplog.clear()
    load("portable")  # cached: silent
    assert caplog.text == "" and built == ["xnorbench_kernels_portable"] * 2
    (folder / "xnorbench_kernels_portable.so").unlink()  # a rebuild says what the last took
    load("portable")
    assert "the last build took 0 s here" in caplog.text, caplog.text
    # a kernel file newer than the library rebuilds: a unit, or a file a unit includes
    # (on a copy of the sources, each file's time set)
    csrc = tmp_path / "csrc"
    shutil.copytree(kernels._CSRC, csrc)
    monkeypatch.setattr(kernels, "_CSRC", csrc)
    for src in kernels._inputs():
        os.utime(src, (1e9, 1e9))
    lib = kernels.build_dir("portable") / "xnorbench_kernels_portable.so"
    lib.write_bytes(b"")
    os.utime(lib, (1e9 + 60, 1e9 + 60))
    assert not kernels.needs_build("portable")
    included = csrc / "xnor_conv.cpp"  # compiled inside all_kernels.cpp
    assert included in kernels._inputs()
    assert included.name not in {p.name for p in kernels._SOURCES}
    os.utime(included, (1e9 + 120, 1e9 + 120))
    assert kernels.needs_build("portable")


def test_the_kernel_cache_is_keyed_by_what_the_build_depends_on(tmp_path: Path, monkeypatch):
    """It was keyed by the build's name only: two installs (or one venv reached through
    another path) rebuilt each other's kernels silently, and needs_build() said False."""

    import torch

    from xnorbench.xnor import kernels

    monkeypatch.setenv("XNORBENCH_BUILD_DIR", str(tmp_path / "cache"))
    here = kernels.build_dir("native")
    assert here.name.startswith("native-") and here != kernels.build_dir("portable")
    (here / "xnorbench_kernels.so").write_bytes(b"")
    assert not kernels.needs_build("native")
    other = tmp_path / "other" / "csrc"  # the same sources installed elsewhere
    shutil.copytree(kernels._CSRC, other)
    monkeypatch.setattr(kernels, "_CSRC", other)
    monkeypatch.setattr(kernels, "_SOURCES", tuple(other / p.name for p in kernels._SOURCES))
    assert kernels.build_dir("native") != here and kernels.needs_build("native")
    (other / "layout.h").write_text((other / "layout.h").read_text() + "\n// changed\n")
    changed = kernels.build_dir("native")
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert len({here, changed, kernels.build_dir("native")}) == 3


def test_no_cuda_home_warning_on_import():
    code = ("import xnorbench.cli; import torch.utils.benchmark; "
            "from xnorbench.xnor.kernels import _import_cpp_extension; "
            "_import_cpp_extension(); import logging; "
            "logging.getLogger('torch.utils.cpp_extension').warning('ours still shows')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "No CUDA runtime is found" not in out.stderr
    assert "ours still shows" in out.stderr


@pytest.fixture
def trained_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A finished one-epoch accuracy run, trained with progress on and no terminal."""
    data = make_mnist(tmp_path / "data", n_train=128, n_test=32)
    db = str(tmp_path / "r.db")
    monkeypatch.setenv("XNORBENCH_PROGRESS_S", "0")
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--epochs", "1", "--batch-size",
                              "32", "--optimizer", "adam", "--data-dir", str(data),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return db, res.output


def test_progress_lines_without_a_terminal(trained_db):
    _, out = trained_db
    lines = [ln for ln in out.splitlines() if "images/s" in ln]
    assert lines, out
    assert any("epoch 1/1" in ln and "ETA" in ln for ln in lines), lines
    # a finished loop has no time left to show, and a slow one is seconds per item
    assert not any("4/4" in ln and "ETA" in ln for ln in lines), lines
    assert "0.00 it/s" not in out, out
    assert "float seed 0 lenet5 epoch 1: loss" in out  # the epoch's summary line stays


def test_runs_show_is_readable_and_json_is_complete(trained_db):
    db, _ = trained_db
    res = runner.invoke(app, ["--db", db, "runs", "show", "1", "--rows", "5"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "run 1 · accuracy" in out and "finished" in out
    assert "Options (as resolved)" in out and "Where it ran" in out
    assert "0.001" in out  # adam's lr, resolved (the stored flag was left out)
    assert "Results (" in out and "dataset_size" in out and "more rows" in out
    assert out.count("git_commit") == 1  # each context field once
    res = runner.invoke(app, ["--db", db, "runs", "show", "1", "--json"])
    record = json.loads(res.output)
    store = Store.open(db)
    assert record["rows"] == len(record["results"]) == len(store.results([1]))
    assert record["params"]["lr"] == 1e-3 and record["status"] == "finished"
    assert {"metric", "value", "epoch", "variant"} <= set(record["results"][0])


@pytest.mark.parametrize("suite,source,command", [
    ("timing", "timing", "xnorbench run timing"),
    ("train-step", "timing", "xnorbench run timing"),
    ("compare", "compare", "xnorbench run compare"),
    ("sweep", "sweep", "xnorbench sweep"),
    ("saved-by-layer", "memory", "xnorbench run memory"),
])
def test_empty_table_says_what_to_run(tmp_path: Path, suite, source, command):
    Store.open(str(tmp_path / "e.db"))  # a database without such runs
    res = runner.invoke(app, ["--db", str(tmp_path / "e.db"), "table", "--suite", suite])
    assert res.exit_code == 2
    assert f"no finished {source} runs yet" in res.output and f"`{command}`" in res.output


def test_help_texts_name_defaults_and_have_no_raw_markup():
    res = runner.invoke(app, ["--help"])
    assert "``" not in res.output and "XNORBENCH_DB" in res.output
    res = runner.invoke(app, ["run", "accuracy", "--help"], env={"COLUMNS": "200"})
    assert "0.1 for sgd, 1e-3 for adam" in res.output
    assert "$XNORBENCH_DATA, else ./data" in res.output
    assert "db-<database id>/run-<id>" in res.output


def test_info_names_kernel_path_and_where_things_live(tmp_path: Path):
    from xnorbench.xnor.kernels import kernel_isa

    res = runner.invoke(app, ["--db", str(tmp_path / "i.db"), "info", "--build"])
    assert res.exit_code == 0, res.output
    assert f"kernel path    {kernel_isa()}" in res.output
    for what in ("CPU", "kernel cache", "XNORBENCH_BUILD_DIR", "XNORBENCH_DATA",
                 "checkpoints", str(tmp_path / "i.db")):
        assert what in res.output, what


def test_a_suite_is_one_declaration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A suite declared in one place gets its `run` command from the declaration, and
    what the run stores is exactly the parsed options (hidden ones at their defaults)."""
    from dataclasses import dataclass

    import typer

    from xnorbench import cli
    from xnorbench.db import Row
    from xnorbench.runs import options as o
    from xnorbench.runs.options import Opt
    from xnorbench.runs.params import SuiteParams
    from xnorbench.runs.registry import REGISTRY, register

    opts = (Opt("size", "int", 3, "How big.", check=o.positive),
            Opt("names", "strs", ["a"], "Which.", choices=("a", "b"), noun="name"),
            Opt("every", "float", 0.5, "Hidden.", hidden=True))

    @dataclass(frozen=True)
    class ToyParams(SuiteParams):
        size: int = 3
        names: tuple[str, ...] = ("a",)
        every: float = 0.5

    @register("toy", "A toy suite.", ToyParams, options=opts)
    def toy(ctx, params):
        yield Row("size", float(params.size))

    try:
        t = typer.Typer()
        t.command("toy")(cli.suite_command(REGISTRY["toy"]))
        t.command("other")(lambda: None)  # a group, so the command is named
        monkeypatch.setattr(cli.State, "db", str(tmp_path / "toy.db"))
        res = runner.invoke(t, ["toy", "--help"])
        assert "--size" in res.output and "--names" in res.output and "--every" not in res.output
        res = runner.invoke(t, ["toy", "--size", "5", "--names", "b,a", "--no-progress"])
        assert res.exit_code == 0, res.output
        (run,) = Store.open(str(tmp_path / "toy.db")).runs()
        assert run.params == {"size": 5, "names": ["b", "a"], "every": 0.5}
        res = runner.invoke(t, ["toy", "--names", "c"])
        assert res.exit_code == 2 and "unknown name 'c'" in res.output
    finally:
        REGISTRY.pop("toy", None)


def test_every_suite_command_matches_its_declaration():
    """No drift: each built-in suite's `run` command offers exactly its declared options;
    every stored option is a field of the suite's params class with the same default, and
    what the command stores given no option (after ``prepare``) has exactly its fields."""
    from xnorbench.runs.options import defaults
    from xnorbench.runs.params import _held
    from xnorbench.runs.registry import REGISTRY

    assert {"accuracy", "compare", "sweep", "timing", "memory", "ceilings"} <= set(REGISTRY)
    for suite in REGISTRY.values():
        res = runner.invoke(app, ["run", suite.name, "--help"], env={"COLUMNS": "250"})
        assert res.exit_code == 0, suite.name
        for opt in suite.options:
            assert (opt.flag in res.output) != opt.hidden, (suite.name, opt.name)
        keys = {o.stored_as or o.key for o in suite.options if o.key}
        fields = set(suite.params.field_names())
        assert keys <= fields, (suite.name, keys - fields)
        for opt in suite.options:
            if opt.key and opt.default is not None:
                assert _held(opt.default) == getattr(suite.params(), opt.key), opt.name
        stored = defaults(suite.options)  # what a run given no option stores
        stored = suite.prepare(stored) if suite.prepare else stored
        assert set(stored) == fields, (suite.name, set(stored) ^ fields)
        assert suite.params.from_stored(stored, strict=True).asdict().keys() == \
            suite.defaults.keys(), suite.name
    registry = Path(__file__).parents[1] / "xnorbench" / "runs" / "registry.py"
    assert "import suites" not in registry.read_text()  # no import back up the layers


def test_commands_that_run_no_suite_do_not_import_them():
    """`--help`, `runs`, `table` stay quick: the suites (and torch) load only when a
    `run` command needs them."""
    code = ("import sys; from typer.testing import CliRunner; from xnorbench.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print('torch' in sys.modules, 'xnorbench.suites' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_a_slow_loop_reads_in_seconds_per_item():
    """An epoch of two minutes is '120.0 s/it', not '0.01 it/s' (or '0.00')."""
    from xnorbench.progress import _rate, _Task

    assert _rate(_Task("epochs", 3, done=1), 120.0) == "120.0 s/it"
    assert _rate(_Task("points", 9, done=6), 2.0) == "3.00 it/s"
    assert _rate(_Task("epoch 1/1", 4, done=2, images=64), 0.5) == "128.0 images/s"


def test_runs_show_says_which_point_a_sweep_row_belongs_to(tmp_path: Path):
    from xnorbench.db import Row

    db = str(tmp_path / "s.db")
    store = Store.open(db)
    rid = store.start_run("sweep", {"threads": 1}, {})
    for c in (64, 256):
        store.add_rows(rid, [Row("speedup", 10.0, "x", model="conv", variant="xnor",
                                 params={"sweep": "channels", "channels": c, "kernel": 3,
                                         "batch": 1, "threads": 1})])
    res = runner.invoke(app, ["--db", db, "runs", "show", str(rid)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "channels=64 kernel=3" in res.output and "channels=256 kernel=3" in res.output


def test_an_installed_package_ships_every_kernel_source():
    """The kernels compile on the user's machine from the files the package ships: every
    file in xnor/csrc (the .cpp units and the headers they include) is package data, so a
    non-editable install builds too."""
    import ast
    import fnmatch
    import re

    root = Path(__file__).parents[1]  # tomllib is 3.11+; the line is read as it stands
    line = re.search(r'^"xnorbench\.xnor" = (\[.*\])$', (root / "pyproject.toml").read_text(),
                     re.M)
    assert line, "pyproject.toml names no package data for xnorbench.xnor"
    patterns = ast.literal_eval(line.group(1))
    csrc = root / "xnorbench" / "xnor" / "csrc"
    files = sorted(p.relative_to(csrc.parent).as_posix() for p in csrc.iterdir() if p.is_file())
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (
        files, patterns)
