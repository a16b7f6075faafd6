"""Helpers several test modules share (no test module imports another): a CLI in a
child process or in this one, writers racing on one database, a schema-version-1 file,
gradients of a layer, BatchNorm statistics as training leaves them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from xnorbench.db import Row, Store

SWEEP = ["sweep", "--channels", "16,32,64", "--kernel", "1", "--fixed-channels", "32",
         "--input-size", "6", "--rounds", "1", "--no-progress", "--float-engines", "eager"]
"""A sweep of four points on tiny inputs (seconds)."""


def cli(db: str, *args: str, fault: str | None = None, wait: bool = True,
        timeout: float = 300) -> subprocess.Popen | tuple[int, str]:
    """``xnorbench --db DB ARGS`` in a child process, with ``XNORBENCH_FAULT`` if given."""
    env = dict(os.environ, XNORBENCH_HEARTBEAT_S="0.2", PYTHONUNBUFFERED="1")
    env.pop("XNORBENCH_FAULT", None)
    if fault:
        env["XNORBENCH_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, "-m", "xnorbench.cli", "--db", db, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode()


def cli_here(db: str, *args: str) -> tuple[int, str]:
    """``xnorbench --db DB ARGS`` in this process (Typer's runner): for a command after a
    killed or stopped child, which finds on disk (rows, checkpoints) what a new process
    would, without a second interpreter's start (5-9 s on a 2-vCPU Zen 3)."""
    from typer.testing import CliRunner

    from xnorbench.cli import app

    res = CliRunner().invoke(app, ["--db", db, *args])
    return res.exit_code, res.output


WRITER = """
import sys
from xnorbench.db import Row, Store
from xnorbench.runs.environment import capture
store = Store.open(sys.argv[1])
rid = store.start_run("writer", {"i": int(sys.argv[2])}, capture("cpu"))
for j in range(int(sys.argv[3])):
    store.add_rows(rid, [Row("value", float(j), params={"w": int(sys.argv[2])})])
store.finish_run(rid, "finished")
"""


def run_writers(url: str, n_proc: int = 4, rows: int = 150) -> Store:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(i), str(rows)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(n_proc)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()
        assert b"locked" not in out
    return Store.open(url)


def make_v1_db(url: str) -> tuple[int, int]:
    """A database as schema version 1 left it: no seed/recipe_key columns, no run_tags.

    Returns (run id, id of a training row) of one v1 accuracy run.
    """
    from sqlalchemy import text

    store = Store.open(url)
    params = {"epochs": 2, "batch_size": 16, "lr": 0.1, "optimizer": "sgd",
              "weight_decay": 5e-4, "grad_rule": "corrected", "seed": 3, "amp": False,
              "channels_last": False, "train_size": 96, "test_size": 48, "device": "cpu"}
    rid = store.start_run("accuracy", {"dataset": "mnist"}, {})
    store.add_rows(rid, [Row("dataset_size", 96.0, dataset="mnist")])
    store.add_rows(rid, [Row("final_test_accuracy", 91.5, "%", dataset="mnist",
                             model="lenet5", variant="xnor", epoch=2, params=params)])
    row_id = store.results([rid], metric="final_test_accuracy")[0].id
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE run_tags"))
        conn.execute(text("DROP INDEX ix_results_recipe_key"))
        conn.execute(text("ALTER TABLE results DROP COLUMN recipe_key"))
        conn.execute(text("ALTER TABLE results DROP COLUMN seed"))
        conn.execute(text("ALTER TABLE runs DROP COLUMN owner"))
        conn.execute(text("UPDATE xnorbench_meta SET value='1' WHERE key='schema_version'"))
        conn.execute(text("DROP TABLE alembic_version"))  # v1 predates Alembic
    store.engine.dispose()
    return rid, row_id


def check_v1_upgraded(url: str) -> None:
    """A v1 file opened by this version: upgraded through every migration to the current
    schema, rows intact, keys and seeds filled in."""
    from sqlalchemy import inspect, text

    from xnorbench.db import SCHEMA_VERSION
    from xnorbench.training.recipes import Recipe, recipe_key

    rid, row_id = make_v1_db(url)
    store = Store.open(url)
    with store.engine.connect() as conn:
        cols = {c["name"] for c in inspect(conn).get_columns("results")}
        version = conn.execute(text(
            "SELECT value FROM xnorbench_meta WHERE key='schema_version'")).scalar_one()
        run_cols = {c["name"] for c in inspect(conn).get_columns("runs")}
    assert {"seed", "recipe_key"} <= cols and "owner" in run_cols
    assert version == str(SCHEMA_VERSION)
    (row,) = [r for r in store.results([rid]) if r.id == row_id]
    assert row.value == 91.5 and row.seed == 3
    # what v1 trained: sgd, momentum 0.9 + nesterov, decay on weights, cosine schedule
    want = recipe_key(Recipe(epochs=2, batch_size=16, lr=0.1, weight_decay=5e-4),
                      dataset="mnist", model="lenet5", train_size=96, test_size=48)
    assert row.recipe_key == want
    assert [r.recipe_key for r in store.results([rid], metric="dataset_size")] == [None]
    assert store.tag(rid, "old") and store.tags([rid]) == {rid: ["old"]}


def layer_grads(layer: nn.Module, x: torch.Tensor, forward: Callable,
                g: torch.Tensor | None, seed: int):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    torch.manual_seed(seed)
    out = forward(x)
    g = torch.randn_like(out, generator=torch.Generator().manual_seed(1)) if g is None else g
    out.backward(g)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}, g


def close_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Equal to float rounding, relative to each gradient's scale (the reference rule
    multiplies by ~n, and sums of signed terms cancel)."""
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(w.abs().max())), msg=name)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters of both signs (thresholds away
    from 0, some channels flipped), as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.running_mean.shape[0]
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(n, generator=g) * 2 - 0.6)
                m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def db_with_runs(path: Path, host: str) -> Store:
    """Two finished runs (a sweep, a memory run) and a failed one, from host ``host``."""
    store = Store.open(str(path))
    for suite, value in (("sweep", 11.5), ("memory", 29.6)):
        rid = store.start_run(suite, {"threads": 1}, {"hostname": host}, command=f"xb {suite}")
        store.add_rows(rid, [Row("speedup", value, "x", params={"channels": 256}),
                             Row("float_ms", 1.5, "ms")])
        store.finish_run(rid, "finished")
    failed = store.start_run("sweep", {}, {"hostname": host}, command="xb broken")
    store.finish_run(failed, "failed", "boom")
    return store
