"""Where a packed network's inference time goes: binary GEMM, packing, the rest of the
binary layers' calls, the float operators around them, and Python in between.

A speedup at the layer does not make a network fast if most of its time is spent
outside the binary GEMMs. Two passes over the same calls, each a median of blocks:
the extension's own timers (``kernel_profile_start`` / ``_stop``: packing and GEMM
inside every binary layer call, the whole call) with nothing else attached, then
``torch.profiler`` for the self time of the ATen operators outside those calls (float
convs, BatchNorm, pooling, copies, allocation), grouped by what they are, and the whole
time of the extension's float layers (their own profiler scopes). What neither
sees (Python between the layers, module dispatch) is the remainder of the measured wall
time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from .timing import _quiet_profiler

PARTS = ("binary GEMM", "packing", "binary call overhead", "float conv / linear",
         "copies and allocation", "other torch ops", "python and dispatch")
"""The parts of a packed network's time, in the order tables show them."""

FLOAT_MATH = ("conv", "addmm", "linear", "matmul", "mm", "bmm")
COPIES = ("copy_", "clone", "contiguous", "empty", "zeros", "zero_", "fill_", "to",
          "_to_copy", "empty_strided", "empty_like", "resize_", "cat")


@dataclass
class Breakdown:
    """Milliseconds per call of each part (:data:`PARTS`), and the measured total."""

    total_ms: float
    parts: dict[str, float]
    binary_calls: int

    def share(self, part: str) -> float:
        """``part`` as a percentage of the total."""
        return 100.0 * self.parts[part] / self.total_ms if self.total_ms > 0 else 0.0


def _aten_group(name: str) -> str:
    op = name.removeprefix("aten::")
    if any(op == c or op.startswith(c + "_") or op.startswith("_" + c) for c in COPIES):
        return "copies and allocation"
    if any(f in op for f in FLOAT_MATH):
        return "float conv / linear"
    return "other torch ops"


SCOPES = {"xnor::layer": "", "xnor::float_conv": "float conv / linear",
          "xnor::float_head": "other torch ops"}
"""The extension's profiler scopes: a binary layer's call (timed by its own counters), the
direct float conv and the pooled head (``csrc/float_layers.cpp``), with the part their
whole time goes to."""


def _inside_layer(event: object) -> bool:
    """Whether a profiler event ran inside one of the extension's scopes (counted there)."""
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if parent.name in SCOPES:
            return True
        parent = parent.cpu_parent
    return False


def packed_breakdown(fn: Callable[[], object], calls: int = 5, blocks: int = 5
                     ) -> Breakdown:
    """Median per-call breakdown of ``fn`` (a packed network on a fixed input) over
    ``blocks`` blocks of ``calls`` calls, on the thread count already set."""
    from torch.profiler import ProfilerActivity, profile

    from ..xnor.kernels import load_kernels

    kern = load_kernels()
    fn()
    fn()  # warm: workspaces, oneDNN primitives
    walls, kernel = [], []
    for _ in range(blocks):
        kern.kernel_profile_start()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        walls.append((time.perf_counter() - t0) * 1e3 / calls)
        counted = kern.kernel_profile_stop()
        kernel.append([counted[0] / calls, *(v / 1e6 / calls for v in counted[1:])])
    best = sorted(range(blocks), key=lambda i: walls[i])[blocks // 2]  # the median block
    total = walls[best]
    ncalls, k_total, k_pack, k_gemm = kernel[best]
    aten: dict[str, list[float]] = {}
    for _ in range(max(1, blocks // 2)):
        with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn()
        sums: dict[str, float] = {}
        for ev in prof.events():
            if SCOPES.get(ev.name):  # the scope's whole time, its ATen calls included
                group, ms = SCOPES[ev.name], ev.cpu_time_total
            elif ev.name.startswith("aten::") and not _inside_layer(ev):
                group, ms = _aten_group(ev.name), ev.self_cpu_time_total
            else:
                continue
            sums[group] = sums.get(group, 0.0) + ms / 1e3 / calls
        for group, v in sums.items():
            aten.setdefault(group, []).append(v)
    parts = {"binary GEMM": k_gemm, "packing": k_pack,
             "binary call overhead": max(0.0, k_total - k_pack - k_gemm)}
    for group in ("float conv / linear", "copies and allocation", "other torch ops"):
        parts[group] = statistics.median(aten.get(group, [0.0]))
    parts["python and dispatch"] = max(0.0, total - sum(parts.values()))
    return Breakdown(total, {p: parts[p] for p in PARTS}, round(ncalls))
