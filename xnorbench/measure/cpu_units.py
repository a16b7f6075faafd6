"""Which low-precision units this CPU has: what decides whether bf16 runs natively and
which instruction an int8 engine and the int8 peak use.

Read from ``/proc/cpuinfo``'s flags, which list a feature only where the kernel also
enables it (the flags a user would ``grep`` for, named in every row that depends on them).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_unit(flags: frozenset[str] | None = None) -> str | None:
    """The widest int8 dot-product unit: ``amx_int8``, ``avx512_vnni``, ``avx_vnni``, or
    None (an AVX2-only CPU multiplies int8 through 16-bit intermediates)."""
    have = cpu_flags() if flags is None else flags
    return next((f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if f in have), None)


def bf16_unit(flags: frozenset[str] | None = None) -> str | None:
    """The native bf16 unit: ``amx_bf16``, ``avx512_bf16``, or None (bf16 would be
    emulated through fp32, slower than fp32 itself: not a precision a deployer picks)."""
    have = cpu_flags() if flags is None else flags
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in have), None)


NO_BF16 = ("this CPU computes no bf16 natively (it has neither AVX512-BF16 nor AMX-BF16; "
           "emulated bf16 is slower than fp32)")
"""Why a bf16 baseline is left out on a CPU without a bf16 unit."""
