"""No timer contains the kernel build: a run on a machine without a current build
builds the kernels before its first timed step, stores the build time as its own row
(``kernel_build_s``) and the time in its folder, and the next run finds the build.
(That a rebuild's message says how long the last build took is
``tests/test_kernel_build.py``'s.)

The build the run makes here links the objects the session compiled already (copied with
ninja's records, the library left out): the run takes the same path as after a full
compile, and the test pays seconds instead of a third compile of the sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from xnorbench.db import Store

from .conftest import make_mnist


def test_a_fresh_build_is_its_own_row_and_not_in_epoch_one(tmp_path: Path):
    from xnorbench.xnor import kernels

    kernels.load_kernels(build="portable")  # compiled once a session (other tests use it)
    compiled = kernels.build_dir("portable")
    shutil.copytree(compiled, tmp_path / "ext" / compiled.name,  # no library: must build
                    ignore=shutil.ignore_patterns("*.so", "lock", "last_build_seconds"))
    data = make_mnist(tmp_path / "data", n_train=128, n_test=64)
    env = dict(os.environ, XNORBENCH_BUILD_DIR=str(tmp_path / "ext"),
               XNORBENCH_KERNEL_BUILD="portable", PYTHONUNBUFFERED="1")
    db = str(tmp_path / "b.db")
    cmd = [sys.executable, "-m", "xnorbench", "--db", db, "run", "accuracy", "--model",
           "lenet5", "--epochs", "1", "--batch-size", "64", "--data-dir", str(data),
           "--device", "cpu", "--threads", "1", "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "building the XNOR kernels" in out.stderr and "built the XNOR kernels" in out.stderr
    store = Store.open(db)
    (build,) = store.results([1], metric="kernel_build_s")
    assert build.params["build"] == "portable" and build.params["kernel_isa"].startswith("scalar")
    # the build took seconds (a link of the extension, at the least); a LeNet-5 epoch on
    # 128 images takes a fraction of one: an epoch that contained the build could not be
    # shorter
    epochs = store.results([1], metric="epoch_seconds")
    assert len(epochs) == 2 and all(e.value < build.value for e in epochs), (
        build.value, [e.value for e in epochs])
    (folder,) = (tmp_path / "ext").glob("portable-*")  # keyed by what the build depends on
    assert (folder / "last_build_seconds").is_file()
    # a second run finds the build: no row, and no message
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and "building the XNOR kernels" not in out.stderr
    assert not store.results([2], metric="kernel_build_s")
