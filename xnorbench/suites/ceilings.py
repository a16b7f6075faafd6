"""Suite ``ceilings``: this core's fp32 and binary peaks, and how close the convs come.

Per kernel build (``native``: the CPU's best path, AVX-512 VPOPCNTDQ where it has it;
``avx2``: the VPSHUFB table path, on any AVX2 CPU): the register-only peaks of
:mod:`..measure.ceilings`, their ratio (the most a binary conv can gain over a perfect
float conv on this core), and one conv point (default c=256, 3x3, 14x14, batch 1, the
paper's Fig. 4 setting) timed as binary on a packed input, binary with packing, and
float ``F.conv2d``, each stated as a share of its ceiling. One thread: per core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ..db import Row
from ..errors import InputError
from ..measure.ceilings import LOWP_UNITS, PeakProbe, conv_macs, lowp_peak, share
from ..measure.machine_state import StateProbe
from ..measure.timing import compare
from ..runs import options as o
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import SuiteContext, register
from ..xnor.kernels import BUILDS, cpu_has_avx2, kernel_isa, load_kernels

OPTIONS = (
    Opt("builds", "strs", ["native", "avx2"], "Kernel builds to measure: native (this CPU's "
        "best path), avx2 (the VPSHUFB path, on any AVX2 CPU), portable (scalar).",
        choices=tuple(BUILDS), noun="kernel build"),
    Opt("channels", "int", 256, "Channels of the conv point.", check=o.positive),
    Opt("kernel", "int", 3, "Filter size of the conv point.", check=o.positive),
    Opt("input_size", "int", 14, "Input height = width.", check=o.positive),
    Opt("rounds", "int", 5, "Interleaved timing rounds.", check=o.positive),
    Opt("batch", "int", 1, "Batch of the conv point.", hidden=True),
    Opt("min_run_time", "float", 0.05, "Seconds each timing block runs at least.",
        hidden=True),
    Opt("seed", "int", 0, "Random seed.", hidden=True),
)


@dataclass(frozen=True)
class CeilingsParams(SuiteParams):
    """The kernel builds measured and the conv point timed against their peaks."""

    builds: tuple[str, ...] = ("native", "avx2")
    channels: int = 256
    kernel: int = 3
    input_size: int = 14
    rounds: int = 5
    batch: int = 1
    min_run_time: float = 0.05
    seed: int = 0



def prepare(p: dict[str, Any]) -> dict[str, Any]:
    """A point that fits in memory and finishes, with a filter that fits the input."""
    if p["channels"] > 4096 or p["kernel"] > 15 or p["input_size"] > 256:
        raise InputError("--channels <= 4096, --kernel <= 15, --input-size <= 256 (a point "
                         "must fit in memory and finish)")
    if p["kernel"] > p["input_size"] + 2 * ((p["kernel"] - 1) // 2):
        raise InputError("--kernel is larger than the padded input")
    return p


@register("ceilings", "fp32 FMA and binary popcount peaks per core; convs as % of them.",
          CeilingsParams, options=OPTIONS, prepare=prepare, threads=1,
          doc="This core's fp32 FMA and binary XOR+popcount peaks, and the convs as % of "
              "them; the int8 (AVX2, VNNI, AMX) and bf16 (AVX512-BF16, AMX) peaks of the "
              "units this CPU has, and a row saying why for each it lacks. One thread. The "
              "ratio of the fp32 and binary peaks is the most a binary conv can gain over a "
              "perfect float conv on this CPU; binary over int8 the most against int8.")
def run_ceilings(ctx: SuiteContext, p: CeilingsParams) -> Iterator[Row]:
    torch.set_num_threads(1)
    c, k, size, batch = p.channels, p.kernel, p.input_size, p.batch
    pad = (k - 1) // 2
    g = torch.Generator().manual_seed(p.seed)
    x = torch.randn(batch, c, size, size, generator=g)
    w = torch.randn(c, c, k, k, generator=g)
    alpha = w.abs().mean(dim=(1, 2, 3))
    macs = conv_macs(batch, c, c, k, k, size, size)
    point = {"channels": c, "kernel": k, "input_size": size, "batch": batch, "threads": 1,
             "macs": macs}
    native_fp32 = native_binary = None
    for build in ctx.progress.track(p.builds, "kernel builds"):
        if build == "avx2" and not cpu_has_avx2():
            ctx.progress.log("skipping the avx2 build: this CPU has no AVX2")
            continue
        isa = kernel_isa(build=build)
        kern = load_kernels(build=build)
        wp = kern.pack_weight(w)
        packed_x = kern.pack_input(x, pad, pad)
        layer = kern.BinaryLayer(wp, alpha, None, None, None, [c, c, k, k, 1, 1, pad, pad])
        fns: dict[str, Callable[[], object]] = {
            "binary_nopack": partial(kern.xnor_conv2d_packed, layer, packed_x, None, False),
            "binary": partial(kern.xnor_conv2d, layer, x, None, False),
        }
        if build == "native":
            fns["float"] = lambda: F.conv2d(x, w, None, 1, pad)
        # the peaks run between the rounds of the work they bound, best block kept
        probe, state = PeakProbe(build), StateProbe()
        t = compare(fns, threads=1, rounds=p.rounds, min_run_time=p.min_run_time,
                    between=probe)
        machine = state.stop()
        ceil = probe.ceilings()
        if build == "native":
            native_fp32, native_binary = ceil.fp32_flops, ceil.binary_macs
        prm = {**ceil.as_params(), **probe.spread(), **machine.as_params(), "kernel_isa": isa,
               "threads": 1}
        tag: dict[str, Any] = {"model": "conv", "variant": build}
        yield Row("fp32_peak_gflops", ceil.fp32_flops / 1e9, "GFLOP/s", params=prm, **tag)
        yield Row("binary_peak_gmacs", ceil.binary_macs / 1e9, "GMAC/s", params=prm, **tag)
        yield Row("peak_ratio", ceil.ratio, "x", params=prm, **tag)
        cprm = {**prm, **point}
        for name in ("binary_nopack", "binary"):
            rate = macs / t[name].median_s
            pct, disturbed = share(rate, ceil.binary_macs)
            yield Row(f"{name}_conv_gmacs", rate / 1e9, "GMAC/s",
                      params={**cprm, "ms": t[name].median_ms, **t[name].spread()}, **tag)
            yield Row(f"{name}_conv_pct_of_peak", pct, "%",
                      params={**cprm, "disturbed": disturbed}, **tag)
        if "float" in t and native_fp32:
            flops = 2 * macs / t["float"].median_s
            pct, disturbed = share(flops, native_fp32)
            yield Row("float_conv_gflops", flops / 1e9, "GFLOP/s",
                      params={**cprm, "ms": t["float"].median_ms, **t["float"].spread()},
                      **tag)
            yield Row("float_conv_pct_of_peak", pct, "%",
                      params={**cprm, "disturbed": disturbed}, **tag)
            yield Row("measured_speedup", t["float"].median_s / t["binary_nopack"].median_s,
                      "x", params={**cprm, "note": "float conv vs binary conv on a packed "
                                   "input"}, **tag)
    yield from _lowp_rows(ctx, native_binary)


def _lowp_rows(ctx: SuiteContext, native_binary: float | None) -> Iterator[Row]:
    """The int8 and bf16 peaks of every unit this CPU has (a row saying why not for each
    it lacks), and the binary peak against the best int8 one."""
    best_int8 = None
    for precision, units in LOWP_UNITS.items():
        for unit, instruction in ctx.progress.track(units, f"{precision} peaks"):
            rate, why = lowp_peak(unit)
            prm = {"precision": precision, "unit": unit, "instruction": instruction,
                   "threads": 1}
            tag: dict[str, Any] = {"model": "core", "variant": unit}
            if rate is None:
                yield Row("lowp_peak_unavailable", 1.0, "", params={**prm, "reason": why},
                          **tag)
                continue
            yield Row(f"{precision}_peak_gmacs", rate / 1e9, "GMAC/s", params=prm, **tag)
            if precision == "int8":
                best_int8 = max(best_int8 or 0.0, rate)
    if best_int8 and native_binary:
        yield Row("binary_over_int8_peak", native_binary / best_int8, "x",
                  params={"threads": 1, "note": "binary MACs per int8 MAC at the two "
                          "peaks of this core (native build, best int8 unit)"},
                  model="core", variant="native")
