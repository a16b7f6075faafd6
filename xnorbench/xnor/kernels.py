"""Build (once, cached) and load the C++ XNOR + popcount kernels.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` and
``-O3 -march=native``, so AVX-512 VPOPCNTDQ is used where the CPU has it, AVX2 table
lookups (VPSHUFB of a per-nibble ``popcount(a XOR b)`` table) where it has AVX2 only, and
scalar POPCNT elsewhere. ``-fopenmp`` is required for threads: without it
``at::parallel_for`` inside an extension compiles to a serial loop. Set
``XNORBENCH_PORTABLE=1`` to build the portable path on any CPU (tests use it to check
that both paths agree).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from types import ModuleType

_SRC = Path(__file__).parent / "csrc" / "xnor_kernels.cpp"


def _build_dir(portable: bool) -> Path:
    base = os.environ.get("XNORBENCH_BUILD_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "xnorbench", "extensions")
    path = Path(base) / ("portable" if portable else "native")
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=2)
def load_kernels(portable: bool | None = None) -> ModuleType:
    """Compile (first call only) and import the kernel extension."""
    if portable is None:
        portable = os.environ.get("XNORBENCH_PORTABLE", "") not in ("", "0")
    from torch.utils import cpp_extension

    flags = ["-O3"]
    flags += ["-march=x86-64", "-mtune=generic"] if portable else ["-march=native"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cpp_extension.load(
            name="xnorbench_kernels_portable" if portable else "xnorbench_kernels",
            sources=[str(_SRC)],
            extra_cflags=flags + ["-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(_build_dir(portable)),
            verbose=False,
        )


def kernel_isa(portable: bool | None = None) -> str:
    """The popcount path of the loaded kernels: avx512-vpopcntdq, avx2-pshufb or scalar."""
    return str(load_kernels(portable).isa())
