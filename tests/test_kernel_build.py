"""Building and caching the kernel extension (``xnor/kernels.py``): the first build
announced once, the cache keyed by what a build depends on, no CUDA_HOME notice from
torch's extension loader, every kernel source shipped in an installed package."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace


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
