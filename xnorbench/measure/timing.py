"""Timing done right: torch.utils.benchmark, explicit threads, interleaved comparisons.

A speedup is the ratio of two medians measured in the same process with the same
thread count, the two candidates timed in alternating rounds so that drift in machine
load hits both alike.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch.utils.benchmark import Timer


@dataclass
class Timing:
    median_s: float
    iqr_s: float
    runs: int
    min_s: float

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    def spread(self) -> dict[str, float]:
        """min / median / IQR over the blocks, in ms (what a stored row carries)."""
        return {"min_ms": self.min_s * 1e3, "iqr_ms": self.iqr_s * 1e3, "runs": self.runs}


def _timer(fn: Callable[[], object], threads: int) -> Timer:
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)


SETTLE_S = 0.05
"""Pause before each block when timing on several threads: another engine's worker
threads (OpenVINO's, ONNX Runtime's) keep spinning for a while after its block ends and
take the cores the next block's threads need (on 2 vCPUs the packed ResNet-18 at batch
1 ran 2.3x slower right after an OpenVINO block than alone)."""


def compare(fns: Mapping[str, Callable[[], object]], threads: int, rounds: int = 5,
            min_run_time: float = 0.05, between: Callable[[], None] | None = None
            ) -> dict[str, Timing]:
    """Time several callables interleaved: ``rounds`` alternating blocks each.

    Returns per-callable median (over every measured block), IQR and fastest block.
    ``between`` runs before each round (e.g. :class:`.ceilings.PeakProbe`, so that the
    peaks are measured in the same rounds as the work they bound).
    """
    prev = torch.get_num_threads()
    timers = {k: _timer(f, threads) for k, f in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    try:
        for f in fns.values():  # warm-up
            f()
        for _ in range(rounds):
            if between is not None:
                between()
            for k, t in timers.items():
                if threads > 1:
                    time.sleep(SETTLE_S)
                samples[k].extend(t.blocked_autorange(min_run_time=min_run_time).times)
    finally:
        torch.set_num_threads(prev)
    out = {}
    for k, xs in samples.items():
        q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
        out[k] = Timing(statistics.median(xs), q[2] - q[0], len(xs), min(xs))
    return out


def dispatched_ops(fn: Callable[[], object]) -> int:
    """How many operators one call of ``fn`` dispatches (torch.profiler, nested included).

    What a GPU pays a launch for: a step that dispatches twice the operators of another
    is launch-bound sooner, whatever their CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm (first calls allocate and pick algorithms)
    with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages())


NO_KERNEL_OPS = frozenset(f"aten::{op}" for op in (
    "as_strided", "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute",
    "slice", "select", "unsqueeze", "squeeze", "flatten", "alias", "detach", "lift_fresh",
    "empty", "empty_like", "empty_strided", "new_empty"))
"""Operators that launch no kernel on a GPU: views of existing memory and allocations."""


def launched_ops(fn: Callable[[], object]) -> int:
    """How many kernels one call of ``fn`` launches, counted as a GPU pays for them.

    Every ATen operator called from outside another one (an operator's own calls run
    inside its launch) except views and allocations (:data:`NO_KERNEL_OPS`), plus every
    kernel a ``torch.compile`` region runs (its generated
    kernels, which :mod:`xnorbench.xnor.sign.compiled` builds with inductor's kernel
    profiling on, and the ATen operators it calls out to); a compiled region's entry is
    not counted beside its kernels. On the CPU within
    :func:`xnorbench.xnor.bitops.torch_ops` this counts what the GPU path launches.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm (first calls compile, allocate and pick algorithms)
    with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    count = 0
    for event in prof.events():
        kernel = "cpp_fused_" in event.name or "triton_" in event.name
        if not (kernel or event.name.startswith("aten::")) or event.name in NO_KERNEL_OPS:
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


_PROFILER_CHATTER = ("profiler_start", "profiler_stop", "gpuGetDeviceCount")


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Drop the profiler library's start/stop chatter from stderr, keep anything else.

    Kineto writes it from C++ straight to file descriptor 2, so the descriptor itself is
    redirected for the profiled call and the other lines are written back afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if not any(c in line for c in _PROFILER_CHATTER):
                    print(line, file=sys.stderr)
