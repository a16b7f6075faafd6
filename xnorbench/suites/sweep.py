"""Suite ``sweep``: the paper's Fig. 4 (b) and (c), measured.

(b) speedup against the number of channels at a fixed 3x3 filter, (c) against the
filter size at a fixed channel count (256), both on a 14x14 input, batch 1. Each point
first checks the binary output against a float reference (a point that fails is stored
as failed and never timed), then times float ``F.conv2d`` and the packed XNOR op side
by side (interleaved, same thread count), with the input's sign-packing included and
excluded. The paper's theoretical speedup ``64 c N_W / (c N_W + 64)`` is stored beside
the measured one, and so is this core's ceiling (:mod:`..measure.ceilings`): each point
says what share of the binary peak its binary conv reaches and of the fp32 peak the float
conv reaches (peaks per core times the thread count).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ..db import Row
from ..errors import InputError
from ..measure import baselines, openvino_runtime
from ..measure.baselines import ENGINES, engines_ok
from ..measure.baselines import build as build_engines
from ..measure.baselines import timed as timed_engines
from ..measure.ceilings import PeakProbe, conv_macs, share
from ..measure.machine_state import StateProbe
from ..measure.timing import compare
from ..runs import options as o
from ..runs.environment import cpu_info
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import SuiteContext, register
from ..variants import Variant as V
from ..xnor.kernels import default_build, kernel_isa, load_kernels
from .common import fastest_rows

OPTIONS = (
    Opt("channels", "ints", [16, 32, 64, 128, 256, 512, 1024],
        "Channel counts (3x3 filter sweep)."),
    Opt("kernel", "ints", [1, 2, 3, 4, 5, 6, 7, 9, 11], "Filter sizes (fixed-channel sweep).",
        param="kernels"),
    Opt("input_size", "int", 14, "Input height = width.", check=o.positive),
    Opt("threads", "int", 1, "torch and kernel threads.", check=o.threads_ok),
    Opt("fixed_channels", "int", 256, "Channels of the filter-size sweep.", check=o.positive),
    Opt("fixed_kernel", "int", 3, "Filter size of the channel sweep.", check=o.positive),
    Opt("batch", "int", 1, "Batch size.", check=o.positive),
    Opt("rounds", "int", 5, "Interleaved timing rounds per point.", check=o.positive),
    Opt("shard", "str", None, "Run only points i, i+n, ... (i/n).", convert=o.shard),
    Opt("seed", "int", 0, "Random seed (recorded).", check=o.seed_ok),
    Opt("float_engines", "strs", list(ENGINES), "Baselines (engine-precision) timed beside "
        "the binary conv: eager, compile, onnxruntime, openvino (fp32), torch-bf16, "
        "openvino-bf16, onnxruntime-int8, openvino-int8; speedups are quoted against the "
        "fastest that runs here at each precision, with eager's beside it.",
        check=engines_ok, choices=ENGINES, noun="float engine"),
    Opt("min_run_time", "float", 0.05, "Seconds each timing block runs at least.",
        hidden=True),
)


@dataclass(frozen=True)
class SweepParams(SuiteParams):
    """The two sweeps (channels at ``fixed_kernel``, filter sizes at ``fixed_channels``),
    the point's shape and how each point is timed; ``shard`` (i, n) runs points
    i, i+n, ..."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    kernels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 9, 11)
    input_size: int = 14
    threads: int = 1
    fixed_channels: int = 256
    fixed_kernel: int = 3
    batch: int = 1
    rounds: int = 5
    shard: tuple[int, int] | None = None
    seed: int = 0
    float_engines: tuple[str, ...] = tuple(ENGINES)
    min_run_time: float = 0.05
MAX_SWEEP_CHANNELS = 16384
MAX_SWEEP_BYTES = 8 * 2**30


def prepare(p: dict[str, Any]) -> dict[str, Any]:
    """Filters that fit the input, and points whose operands fit in memory: checked
    before a run exists."""
    ks, size, batch = p["kernels"], p["input_size"], p["batch"]
    biggest = max([*ks, p["fixed_kernel"]])
    if biggest > size:
        raise InputError(f"kernel {biggest} is larger than the {size}x{size} input")
    for c in [*p["channels"], p["fixed_channels"]]:
        k = biggest if c == p["fixed_channels"] else p["fixed_kernel"]
        floats = c * c * k * k + batch * c * size * size
        if c > MAX_SWEEP_CHANNELS or floats * 4 > MAX_SWEEP_BYTES:
            raise InputError(
                f"--channels {c} with a {k}x{k} filter and a {size}x{size} input needs "
                f"{floats * 4 / 2**30:.1f} GiB of float operands; at most "
                f"{MAX_SWEEP_CHANNELS} channels and {MAX_SWEEP_BYTES // 2**30} GiB")
    return p


def theoretical_speedup(c: int, k: int) -> float:
    """The paper's ``S = 64 c N_W / (c N_W + 64)`` with ``N_W = k * k``."""
    nw = k * k
    return 64.0 * c * nw / (c * nw + 64.0)


def sweep_points(p: SweepParams) -> list[tuple[str, int, int]]:
    """(sweep name, channels, kernel) for every point, shard-filtered."""
    points = [("channels", c, p.fixed_kernel) for c in p.channels]
    points += [("kernel", p.fixed_channels, k) for k in p.kernels]
    if p.shard:
        i, n = p.shard
        points = [pt for j, pt in enumerate(points) if j % n == i]
    return points


def check_point(c: int, k: int, size: int, batch: int, pad: int, seed: int) -> str | None:
    """None if the binary op equals the float conv of signs exactly, else the reason."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c, size, size, generator=g)
    w = torch.randn(c, c, k, k, generator=g)
    kern = load_kernels()
    layer = kern.BinaryLayer(kern.pack_weight(w), torch.ones(c), None, None, None,
                             [c, c, k, k, 1, 1, pad, pad])
    got = kern.xnor_conv2d(layer, x, None, True)
    xs = torch.where(x < 0, -1.0, 1.0)
    ws = torch.where(w < 0, -1.0, 1.0)
    ref = F.conv2d(F.pad(xs, (pad,) * 4, value=1.0), ws)
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
    bad = int((got.double() != ref.double()).sum())
    return None if bad == 0 else f"{bad} of {ref.numel()} outputs differ"


POINT_METRICS = ("correct", "float_ms", "binary_ms", "binary_nopack_ms", "speedup",
                 "speedup_nopack", "fastest_float_ms", "speedup_vs_fastest",
                 "speedup_nopack_vs_fastest", "theoretical_speedup", "binary_pct_of_peak",
                 "float_pct_of_peak", "ceiling_speedup")
"""The rows of a measured point (``ceiling_speedup`` last); a failed point has one
``point_failed`` row instead. ``float_ms`` is torch eager's time; each other float engine
that runs here adds its ``float_<engine>_ms`` (:data:`ENGINE_METRICS`)."""

ENGINE_METRICS = (*(f"float_{e}_ms" for e in ENGINES if e != "eager"),
                  *(m for p in baselines.PRECISIONS if p != "fp32"
                    for m in (f"fastest_{p}_ms", f"speedup_vs_fastest_{p}")),
                  "openvino_binaryconv_ms", "speedup_vs_openvino_binaryconv")
"""Rows a point has once at most: each other baseline's time, the fastest bf16 and int8
baselines and the XNOR speedup over them, OpenVINO's binary convolution (the binary
peer) and how much slower than ours it is; each is there where it ran on this CPU."""


Point = tuple[str | None, int | None, int | None]
"""(sweep, channels, kernel) as a row's params say (None where a row has none)."""


def _point_of(row: Any) -> Point:
    prm = row.params or {}
    return prm.get("sweep"), prm.get("channels"), prm.get("kernel")


def point_counts(ctx: SuiteContext) -> dict[Point, Counter[str]]:
    """{(sweep, channels, kernel): rows per metric} of this run's stored rows."""
    out: dict[Point, Counter[str]] = defaultdict(Counter)
    for r in ctx.store.results([ctx.run_id]):
        out[_point_of(r)][r.metric] += 1
    return out


def check_sweep(ctx: SuiteContext, p: SweepParams) -> list[str]:
    """Each point of the sweep: every metric once, or one ``point_failed`` row."""
    counts = point_counts(ctx)
    out = []
    for pt in sweep_points(p):
        have = counts.get(pt, Counter())
        if have == Counter({"point_failed": 1}):
            continue
        bad = [m for m in POINT_METRICS if have[m] != 1]
        bad += [m for m in ENGINE_METRICS if have[m] > 1]
        if bad or set(have) - set(POINT_METRICS) - set(ENGINE_METRICS):
            out.append(f"sweep {pt[0]} c={pt[1]} k={pt[2]}: {', '.join(bad) or 'extra rows'}")
    return out


def done_points(ctx: SuiteContext) -> set[Point]:
    """On ``--resume``: the points already complete; rows of a point cut short are
    dropped (it is measured again)."""
    done: set[Point] = set()
    cut_short: set[Point] = set()
    for pt, have in point_counts(ctx).items():
        if have["ceiling_speedup"] or have["point_failed"]:
            done.add(pt)
        else:
            cut_short.add(pt)
    if cut_short:
        ctx.store.delete_rows(ctx.run_id, [r.id for r in ctx.store.results([ctx.run_id])
                                           if _point_of(r) in cut_short])
    return done


@register("sweep", "Speedup of the XNOR conv over float conv vs channels and filter size "
          "(Fig. 4 b-c).", SweepParams, check=check_sweep, options=OPTIONS, prepare=prepare)
def run_sweep(ctx: SuiteContext, p: SweepParams) -> Iterator[Row]:
    done = done_points(ctx) if ctx.resume else set()
    threads, size, batch = p.threads, p.input_size, p.batch
    kern = load_kernels()
    isa = kernel_isa()
    cpu, _ = cpu_info()
    torch.set_num_threads(1)
    todo = [pt for pt in sweep_points(p) if pt not in done]
    for sweep, c, k in ctx.progress.track(todo, "sweep points"):
        pad = (k - 1) // 2
        base: dict[str, Any] = {"sweep": sweep, "channels": c, "kernel": k, "input_size": size,
                "batch": batch, "threads": threads, "padding": pad, "kernel_isa": isa,
                "cpu": cpu}
        ctx.progress.info(f"c={c} k={k}")
        err = check_point(c, k, size, batch, pad, p.seed)
        if err is not None:
            yield Row("point_failed", 1.0, "", model="conv", variant=V.XNOR_PACKED,
                      params={**base, "error": err})
            continue
        yield Row("correct", 1.0, "", model="conv", variant=V.XNOR_PACKED, params=base)
        yield from _point_rows(kern, p, c, k, base)


def _point_rows(kern: Any, p: SweepParams, c: int, k: int, base: dict[str, Any]
                ) -> Iterator[Row]:
    """One point timed: float engines, the binary conv with and without packing, the
    OpenVINO binary peer; then its speedups and shares of the core's peaks."""
    threads, pad = p.threads, (k - 1) // 2
    g = torch.Generator().manual_seed(p.seed + 1)
    x = torch.randn(p.batch, c, p.input_size, p.input_size, generator=g)
    w = torch.randn(c, c, k, k, generator=g)
    alpha = w.abs().mean(dim=(1, 2, 3))
    packed_x = kern.pack_input(x, pad, pad)
    conv = torch.nn.Conv2d(c, c, k, padding=pad, bias=False)
    conv.weight.data.copy_(w)
    engines = build_engines(conv, x, p.float_engines, threads)
    floats = timed_engines(engines)
    layer = kern.BinaryLayer(kern.pack_weight(w), alpha, None, None, None,
                             [c, c, k, k, 1, 1, pad, pad])
    exact = kern.xnor_conv2d(layer, x, None, True)
    peer, peer_why = openvino_runtime.binary_conv_peer(x, w, alpha, pad, threads, exact)
    probe, state = PeakProbe(default_build()), StateProbe()
    fns: dict[str, Callable[[], object]] = {
        **floats,
        "binary": partial(kern.xnor_conv2d, layer, x, None, False),
        "binary_nopack": partial(kern.xnor_conv2d_packed, layer, packed_x, None, False),
    }
    if peer is not None:
        fns["openvino_binaryconv"] = peer
    t = compare(fns, threads=threads, rounds=p.rounds, min_run_time=p.min_run_time,
                between=probe)
    base = {**base, **state.stop().as_params()}
    common: dict[str, Any] = {"model": "conv", "variant": V.XNOR_PACKED, "params": base}
    for name in (*floats, "binary", "binary_nopack"):
        yield Row(f"{name}_ms", t[name].median_ms, "ms", model="conv",
                  variant=V.FLOAT if name.startswith("float") else V.XNOR_PACKED,
                  params={**base, **t[name].spread(), **baselines.row_params(engines, name)})
    if peer is not None:
        pprm = {**base, "engine": openvino_runtime.BINARY_CONV, "checked": "integers "
                "equal this kernel's", **t["openvino_binaryconv"].spread()}
        yield Row("openvino_binaryconv_ms", t["openvino_binaryconv"].median_ms, "ms",
                  model="conv", variant=V.XNOR_OPENVINO, params=pprm)
        yield Row("speedup_vs_openvino_binaryconv", t["openvino_binaryconv"].median_s
                  / t["binary"].median_s, "x", model="conv", variant=V.XNOR_PACKED,
                  params=pprm)
    yield Row("speedup", t["float"].median_s / t["binary"].median_s, "x", **common)
    yield Row("speedup_nopack", t["float"].median_s / t["binary_nopack"].median_s, "x",
              **common)
    left_out = {**baselines.unavailable(engines),
                **({} if peer_why is None else {openvino_runtime.BINARY_CONV: peer_why})}
    yield from fastest_rows("", t, "binary", engines, base, {"model": "conv"}, left_out,
                            V.XNOR_PACKED)
    found = baselines.fastest(t, engines)
    assert found is not None  # eager is always timed
    fastest, fprm = found
    yield Row("speedup_nopack_vs_fastest", t[fastest].median_s / t["binary_nopack"].median_s,
              "x", model="conv", variant=V.XNOR_PACKED,
              params={**base, **fprm, "unavailable": left_out})
    yield Row("theoretical_speedup", theoretical_speedup(c, k), "x", **common)
    yield from _peak_rows(probe, t, p, c, k, base)


def _peak_rows(probe: PeakProbe, t: dict[str, Any], p: SweepParams, c: int, k: int,
               base: dict[str, Any]) -> Iterator[Row]:
    """The point's binary and float rates as shares of the core's peaks (measured
    between its rounds), and the most a binary conv could gain here."""
    pad, size = (k - 1) // 2, p.input_size
    macs = conv_macs(p.batch, c, c, k, k, size + 2 * pad - k + 1, size + 2 * pad - k + 1)
    ceil = probe.ceilings()
    cprm = {**base, **ceil.as_params(), **probe.spread(), "peaks_scaled_by_threads":
            p.threads, "peaks": "best of the blocks run between this point's rounds"}
    for metric, rate, peak, variant in (
            ("binary_pct_of_peak", macs / t["binary_nopack"].median_s, ceil.binary_macs,
             V.XNOR_PACKED),
            ("float_pct_of_peak", 2 * macs / t["float"].median_s, ceil.fp32_flops,
             V.FLOAT)):
        pct, disturbed = share(rate, peak * p.threads)
        yield Row(metric, pct, "%", model="conv", variant=variant,
                  params={**cprm, "disturbed": disturbed})
    yield Row("ceiling_speedup", ceil.ratio, "x", model="conv", variant=V.XNOR_PACKED,
              params={**cprm, "note": "binary MACs per float MAC at the two peaks: the "
                      "most a binary conv can gain over a perfect float conv here"})
