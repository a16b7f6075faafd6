"""This core's ceilings: fp32 FMA peak and binary XOR+popcount peak, measured.

A measured speedup means little without the most the hardware allows. Register-only
micro-kernels (``csrc/ceilings.cpp``) give, per core, fp32 FLOP/s and binary MAC/s;
their ratio (binary MACs per float MAC) is the most any binary kernel can gain over a
perfect float conv on this CPU, the honest counterpart of the paper's 64x, which counts
operations rather than cycles. Kernels are then rated in "% of ceiling".
"""

from __future__ import annotations

import statistics
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


def _median_rate(fn, iters: int, repeats: int) -> float:
    fn(iters // 10)  # warm up (clocks, caches)
    return statistics.median(fn(iters) for _ in range(repeats))


def measure(build: str = "native", repeats: int = 5, iters: int = 2_000_000) -> Ceilings:
    """Both peaks of ``build`` on the calling thread (one core)."""
    ops = train_ops(build=build)
    return Ceilings(build=build,
                    fp32_flops=_median_rate(ops.fma_peak, iters, repeats),
                    binary_macs=_median_rate(ops.binary_peak, iters, repeats),
                    fma_isa=str(ops.fma_isa()), binary_isa=str(ops.binary_peak_isa()))


def conv_macs(batch: int, out_channels: int, in_channels: int, kh: int, kw: int, oh: int,
              ow: int) -> int:
    """Multiply-accumulates of a dense 2-D convolution."""
    return batch * out_channels * in_channels * kh * kw * oh * ow
