"""Suites are plugins of one declaration each (``runs/registry.py``, ``runs/options.py``):
the `run` command, its --help and the stored params come from the declaration, and the
commands that run no suite do not import them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store

runner = CliRunner()


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
