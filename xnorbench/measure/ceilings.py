"""This core's ceilings: fp32 FMA peak and binary XOR+popcount peak, measured.

A measured speedup means little without the most the hardware allows. Register-only
micro-kernels (``csrc/ceilings.cpp``) give, per core, fp32 FLOP/s and binary MAC/s;
their ratio (binary MACs per float MAC) is the most any binary kernel can gain over a
perfect float conv on this CPU, the honest counterpart of the paper's 64x, which counts
operations rather than cycles. Kernels are then rated in "% of ceiling".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..xnor.kernels import train_ops


@dataclass(frozen=True)
class Ceilings:
    """Per-core peaks of one kernel build, medians of repeated register-only loops."""

    build: str
    fp32_flops: float      # FLOP/s, one FMA = 2 FLOP per lane
    binary_macs: float     # binary multiply-accumulates (bit pairs) per second
    fma_isa: str
    binary_isa: str

    @property
    def ratio(self) -> float:
        """Binary MACs per float MAC at peak: the most a binary conv can gain."""
        return self.binary_macs / (self.fp32_flops / 2)

    def as_params(self) -> dict[str, object]:
        return {"ceiling_build": self.build, "fp32_peak_gflops": self.fp32_flops / 1e9,
                "binary_peak_gmacs": self.binary_macs / 1e9, "fma_isa": self.fma_isa,
                "binary_isa": self.binary_isa}


def measure(build: str = "native", repeats: int = 5, iters: int = 2_000_000) -> Ceilings:
    """Both peaks of ``build`` on the calling thread (one core): the best of ``repeats``
    blocks, since a peak is what the core can do, and a slower block only says that
    something else had it then."""
    probe = PeakProbe(build, iters)
    for _ in range(repeats):
        probe()
    return probe.ceilings()


WARMUP_BLOCKS = 2
"""Blocks of each peak loop run and discarded before the first that counts."""


class PeakProbe:
    """The peaks measured between the timing blocks they bound.

    Called before each round of an interleaved comparison (:func:`.timing.compare`'s
    ``between``), it runs both register-only loops, so the peaks see the same machine
    as the work: the same clocks, the same neighbours. The ceiling is the best block of
    each loop; a share of it above 100 % then means a disturbed measurement, never a
    result (:func:`share`)."""

    def __init__(self, build: str = "native", iters: int = 500_000) -> None:
        self.build = build
        self.iters = iters
        self.ops = train_ops(build=build)
        self.fp32: list[float] = []
        self.binary: list[float] = []
        for _ in range(WARMUP_BLOCKS):  # clocks up, loops in the instruction cache
            self.ops.fma_peak(iters)
            self.ops.binary_peak(iters)

    def __call__(self) -> None:
        self.fp32.append(float(self.ops.fma_peak(self.iters)))
        self.binary.append(float(self.ops.binary_peak(self.iters)))

    def ceilings(self) -> Ceilings:
        """The best block of each peak so far."""
        if not self.fp32:
            self()
        return Ceilings(build=self.build, fp32_flops=max(self.fp32),
                        binary_macs=max(self.binary), fma_isa=str(self.ops.fma_isa()),
                        binary_isa=str(self.ops.binary_peak_isa()))

    def spread(self) -> dict[str, float]:
        """Worst block against the best, per peak (1.0: every block alike)."""
        return {"fp32_peak_worst_over_best": min(self.fp32) / max(self.fp32),
                "binary_peak_worst_over_best": min(self.binary) / max(self.binary)}


def share(rate: float, peak: float) -> tuple[float, str | None]:
    """(``rate`` as % of ``peak``, None) or, above 100 % (impossible for a real peak),
    the share and why the measurement is marked disturbed."""
    pct = 100.0 * rate / peak
    if pct <= 100.0:
        return pct, None
    return pct, (f"{pct:.0f} % of a peak measured beside it: the peak loop or the work "
                 "was disturbed (another process, a clock change); not a result")


def conv_macs(batch: int, out_channels: int, in_channels: int, kh: int, kw: int, oh: int,
              ow: int) -> int:
    """Multiply-accumulates of a dense 2-D convolution."""
    return batch * out_channels * in_channels * kh * kw * oh * ow


LOWP_UNITS = {
    "int8": (("avx2", "VPMADDUBSW + VPMADDWD + VPADDD (ymm, no VNNI)"),
             ("avx_vnni", "VEX VPDPBUSD (ymm)"), ("avx512_vnni", "VPDPBUSD (zmm)"),
             ("amx_int8", "TDPBUSD (AMX tiles)")),
    "bf16": (("avx512_bf16", "VDPBF16PS (zmm)"), ("amx_bf16", "TDPBF16PS (AMX tiles)")),
}
"""Per precision, the units whose peak ``run ceilings`` measures (``csrc/lowp_ceilings.cpp``),
named by the ``/proc/cpuinfo`` flag that says a CPU has it."""

LOWP_ITERS = {"amx_int8": 100_000, "amx_bf16": 100_000}
"""Loop iterations per block (AMX: four 16-cycle tile products an iteration)."""

_CHILD = """
import sys
from xnorbench.xnor.kernels import train_ops
ops, unit, iters = train_ops(), sys.argv[1], int(sys.argv[2])
ops.lowp_peak(unit, iters)  # warm: clocks up, tiles configured once
print(max(ops.lowp_peak(unit, iters) for _ in range(5)))
"""


def lowp_peak(unit: str, timeout: float = 300.0) -> tuple[float | None, str | None]:
    """(multiply-adds per second of ``unit`` on one core, None), or (None, why not).

    Measured in a child process, the best of 5 blocks: an instruction the CPU or the
    kernel refuses kills the child, not the run that asked."""
    import subprocess
    import sys

    from .cpu_units import cpu_flags

    flag = "avx2" if unit == "avx2" else unit
    if flag not in cpu_flags():
        return None, f"this CPU has no {flag}"
    try:
        out = subprocess.run([sys.executable, "-c", _CHILD, unit,
                              str(LOWP_ITERS.get(unit, 2_000_000))],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"the {unit} loop did not finish in {timeout:.0f} s"
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return None, f"the {unit} loop failed: {tail[:200]}"
    rate = float(out.stdout.strip().splitlines()[-1])
    if rate == -2:
        return None, "the kernel refused the AMX tile state (arch_prctl)"
    if rate < 0:
        return None, f"{unit}: not an x86-64 build"
    return rate, None
