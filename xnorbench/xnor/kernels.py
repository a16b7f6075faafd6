"""Build (once, cached) and load the C++ XNOR + popcount kernels.

The extension is compiled on first use with ``torch.utils.cpp_extension.load``. Three
builds of the same sources, chosen by flags, so that every path runs on any machine
whose CPU can execute it:

* ``native`` (default): ``-march=native``: AVX-512 VPOPCNTDQ where the CPU has it, AVX2
  table lookups (VPSHUFB of a per-nibble ``popcount(a XOR b)`` table) where it has AVX2
  only, scalar POPCNT elsewhere;
* ``avx2``: ``-march=x86-64-v3``: the AVX2 path, also on an AVX-512 CPU;
* ``portable``: ``-march=x86-64``: the scalar path on any x86-64 CPU.

``XNORBENCH_KERNEL_BUILD=native|avx2|portable`` picks the build the whole program uses
(``XNORBENCH_PORTABLE=1`` is the older spelling of ``portable``); tests load all three
to check that they agree. ``-fopenmp`` is required for threads: without it
``at::parallel_for`` inside an extension compiles to a serial loop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = tuple(_CSRC / name for name in ("bindings.cpp", "all_kernels.cpp"))
"""The two translation units, compiled in parallel: the Python bindings (the longer, so
first) and every kernel file in one unit (``all_kernels.cpp`` says why)."""


def _inputs() -> list[Path]:
    """Every file a build reads: the units, the kernel files they include, the headers."""
    return sorted((*_CSRC.glob("*.cpp"), *_CSRC.glob("*.h")))

BUILDS: dict[str, list[str]] = {
    "native": ["-march=native"],
    "avx2": ["-march=x86-64-v3", "-mtune=generic"],
    "portable": ["-march=x86-64", "-mtune=generic"],
}
"""Compiler flags per build; the module of build B is named ``xnorbench_kernels_B``."""


def _cache_root() -> Path:
    return Path(os.environ.get("XNORBENCH_BUILD_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "xnorbench", "extensions"))


def build_key(build: str) -> str:
    """What a compiled build depends on, as a short hash: the sources' contents and
    where they are (the compiler's build file names them), the torch it compiles against
    (version and install folder: its headers and libraries), the Python, and the flags.
    Two installs, or one venv reached through two paths, get folders of their own
    instead of rebuilding each other's kernels unannounced."""
    import torch

    h = hashlib.sha256()
    for src in _inputs():
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    for part in (str(_CSRC.resolve()), torch.__version__, str(Path(torch.__file__).parent),
                 sys.version, sys.executable, " ".join(BUILDS[build])):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def build_dir(build: str) -> Path:
    """The folder build ``build`` of these sources compiles into (see :func:`build_key`)."""
    path = _cache_root() / f"{build}-{build_key(build)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _choose_build(portable: bool | None, build: str | None) -> str:
    if build is not None:
        if build not in BUILDS:
            raise ValueError(f"unknown kernel build {build!r}; choose {', '.join(BUILDS)}")
        return build
    if portable is not None:
        return "portable" if portable else "native"
    env = os.environ.get("XNORBENCH_KERNEL_BUILD", "")
    if env:
        if env not in BUILDS:
            raise ValueError(f"XNORBENCH_KERNEL_BUILD={env!r}: unknown kernel build; choose "
                             f"{', '.join(BUILDS)}")
        return env
    return "portable" if os.environ.get("XNORBENCH_PORTABLE", "") not in ("", "0") else "native"


def default_build() -> str:
    """The build this program uses unless told otherwise (see the module docstring)."""
    return _choose_build(None, None)


def cpu_has_avx2() -> bool:
    """Whether this CPU can run the ``avx2`` build (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags and " bmi2" in flags


def load_kernels(portable: bool | None = None, build: str | None = None) -> ModuleType:
    """Compile (first call only) and import a build of the kernel extension."""
    return _load(_choose_build(portable, build))


def _import_cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension`` (its CUDA_HOME notice is filtered out by the
    package's ``__init__``)."""
    from torch.utils import cpp_extension

    return cpp_extension


def expected_isa(build: str) -> str:
    """The popcount path a build will have on this CPU (before it is compiled)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if build == "native" and {"avx512f", "avx512bw", "avx512_vpopcntdq"} <= flags:
        return "avx512-vpopcntdq"
    if build in ("native", "avx2") and "avx2" in flags:
        return "avx2-pshufb"
    return "scalar"


def needs_build(build: str) -> bool:
    """Whether loading ``build`` compiles: no library in its cache, or a source newer."""
    lib = build_dir(build) / f"{_module_name(build)}.so"
    if not lib.is_file():
        return True
    built = lib.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _inputs())


def _module_name(build: str) -> str:
    return "xnorbench_kernels" if build == "native" else f"xnorbench_kernels_{build}"


BUILD_SECONDS: dict[str, float] = {}
"""Seconds each build took to compile in this process (only builds that compiled here)."""

_LAST_BUILD = "last_build_seconds"
"""File in a build's folder: how long its last compile took on this machine."""


def last_build_seconds(build: str) -> float | None:
    """How long ``build`` last took to compile here, if known: from its own cache folder,
    else from the newest folder of the same build (other sources or another install)."""
    found = sorted(_cache_root().glob(f"{build}-*/{_LAST_BUILD}"),
                   key=lambda p: p.stat().st_mtime)
    own = build_dir(build) / _LAST_BUILD
    for path in ([own] if own.is_file() else []) + found[::-1]:
        try:
            return float(path.read_text())
        except (OSError, ValueError):
            continue
    return None


@functools.lru_cache(maxsize=3)
def _load(build: str) -> ModuleType:
    cpp_extension = _import_cpp_extension()
    name = _module_name(build)
    compiling = needs_build(build)
    if compiling:  # one line, so a first run's silent minute is explained
        last = last_build_seconds(build)
        took = (f"the last build took {last:.0f} s here" if last is not None
                else "about a minute on 2 cores")
        log.info("building the XNOR kernels for this CPU (%s, %s build), once (%s); cache: %s",
                 expected_isa(build), build, took, build_dir(build))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = cpp_extension.load(
            name=name,
            sources=[str(p) for p in _SOURCES],
            extra_cflags=["-O3", *BUILDS[build], "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir(build)),
            verbose=False,
        )
    if compiling:
        BUILD_SECONDS[build] = seconds = time.perf_counter() - t0
        with contextlib.suppress(OSError):  # a read-only cache still works
            (build_dir(build) / _LAST_BUILD).write_text(f"{seconds:.1f}\n")
        log.info("built the XNOR kernels (%s) in %.0f s", build, seconds)
    return module


def train_ops(portable: bool | None = None, build: str | None = None) -> Any:
    """The dispatcher namespace of the training operators (``csrc/train_ops.cpp``) and the
    ceilings (``csrc/ceilings.cpp``).

    Registered under the extension's own name, so every build can be loaded in one
    process.
    """
    import torch

    module = load_kernels(portable, build)
    return getattr(torch.ops, module.__name__)


def kernel_isa(portable: bool | None = None, build: str | None = None) -> str:
    """The popcount path of the loaded kernels: avx512-vpopcntdq, avx2-pshufb or scalar."""
    return str(load_kernels(portable, build).isa())
