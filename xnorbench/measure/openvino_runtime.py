"""OpenVINO's CPU runtime, set up the same way wherever xnorbench runs a model with it.

One compiled model per (graph, precision, thread count): latency mode, one stream, the
thread count given, and the precision asked for explicitly (on a CPU with AMX, OpenVINO
runs a float model in bf16 unless told ``f32``). Every call into the plugin keeps the
calling thread's signal state (:func:`signal_state_kept`): compiling installs an
alternate signal stack on the thread and releasing the model puts back a stale one, so
after a bf16 and an f32 model were compiled and released (openvino 2026.4, Zen 4), the
next Ctrl-C ran Python's handler on freed memory and the process died with a
segmentation fault instead of stopping the run cleanly. OpenVINO is an optional extra
(``pip install 'xnorbench[openvino]'``); a missing one is said in one line, never a
traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import exception_line
from ..xnor.inference.openvino_binary import binary_conv_node, openvino

BINARY_CONV = "openvino-binaryconv"
"""OpenVINO's own binary convolution (``BinaryConvolution``, xnor-popcount), the peer
of this harness's kernel in the sweep."""


def config(threads: int, precision: str = "f32") -> dict[str, Any]:
    """The CPU plugin's settings for a single-stream latency measurement at ``threads``
    threads in ``precision`` (``f32`` or ``bf16``: the inference precision hint)."""
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


def _sigaltstack(new: _Stack | None) -> _Stack | None:
    """Set the calling thread's alternate signal stack (None: only read it); the previous
    one, or None where the C library offers no ``sigaltstack``."""
    try:
        libc = ctypes.CDLL(None)
        old = _Stack()
        if libc.sigaltstack(None if new is None else ctypes.byref(new), ctypes.byref(old)):
            return None
        return old
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def signal_state_kept() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM blocked (threads a library starts in it
    inherit the mask, so these signals reach the main thread, where Python handles them)
    and put the thread's alternate signal stack back as it was afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stack = _sigaltstack(None)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        if stack is not None:
            _sigaltstack(stack)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def compile_model(model: Any, threads: int, precision: str = "f32") -> Any:
    """``model`` (an ``ov.Model`` or a path to an ONNX / IR file) compiled for the CPU."""
    ov = openvino()
    with signal_state_kept():
        core = ov.Core()
        if isinstance(model, (str, Path)):
            model = core.read_model(str(model))
        return core.compile_model(model, "CPU", config(threads, precision))


def predictor(compiled: Any) -> Callable[[Tensor], np.ndarray]:
    """``compiled`` as a function of its input (one infer request, the input shared, not
    copied). It returns the request's own output buffer, not a copy (what a deployment
    reads, and no copy is timed): valid until the next call. The first call, which
    starts the plugin's threads, runs inside :func:`signal_state_kept`."""
    with signal_state_kept():
        request = compiled.create_infer_request()
    started = False

    def run(x: Tensor) -> np.ndarray:
        nonlocal started
        feed = {0: np.ascontiguousarray(x.detach().cpu().numpy())}
        if started:
            request.infer(feed, share_inputs=True)
        else:
            with signal_state_kept():
                request.infer(feed, share_inputs=True)
            started = True
        return request.get_output_tensor(0).data
    return run


def runner(compiled: Any, x: Tensor) -> Callable[[], np.ndarray]:
    """A call that runs ``compiled`` on ``x`` and returns its first output."""
    predict = predictor(compiled)
    return lambda: predict(x)


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says it computes here (``FP32``, ``BF16``, ``INT8``,
    ``BIN``, ...)."""
    return list(openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def binary_conv(x: Tensor, weight: Tensor, alpha: Tensor | None, padding: int,
                threads: int) -> Any:
    """OpenVINO's ``BinaryConvolution`` of sign(x) with sign(weight), +1 padding, times
    ``alpha`` per filter (the exact +-1 dot products with ``alpha`` None), compiled for
    ``x``'s shape."""
    ov = openvino()
    import openvino.opset13 as ops

    c = weight.shape[1]
    param = ops.parameter(list(x.shape), ov.Type.f32)
    node = binary_conv_node(param, weight, torch.zeros(c), torch.zeros(c, dtype=torch.uint8),
                            (1, 1), (padding, padding), alpha)
    return compile_model(ov.Model([ops.result(node)], [param]), threads)


def binary_conv_peer(x: Tensor, weight: Tensor, alpha: Tensor, padding: int, threads: int,
                     exact: Tensor) -> tuple[Callable[[], object] | None, str | None]:
    """(a call running OpenVINO's binary conv on ``x``, None), after its integers were
    checked to equal ``exact`` (this harness's integer output for the same operands), or
    (None, why it cannot be timed here)."""
    try:
        got = runner(binary_conv(x, weight, None, padding, threads), x)()
        if got.shape != tuple(exact.shape):
            return None, f"output shape {got.shape}, expected {tuple(exact.shape)}"
        bad = int((torch.from_numpy(got).double() != exact.double()).sum())
        if bad:
            return None, f"{bad} of {exact.numel()} integer outputs differ"
        return runner(binary_conv(x, weight, alpha, padding, threads), x), None
    except Exception as exc:  # not available here: said, not fatal
        return None, exception_line(exc)


EXPORT_REL_ERROR = 0.05
"""An exported XNOR network's output against the packed network's, relative L2 per
sample: the binary layers compute the same integers, but the float layers (first conv,
classifier) round differently in OpenVINO, and a value within rounding of a sign
threshold can flip; a wrong graph is off by far more."""

EXPORT_SAMPLES_OFF = 0.25
"""The share of a batch's samples that may be off by more than ``EXPORT_REL_ERROR``:
a flipped sign changes one sample (and in a deep untrained network, all of its output),
a wrong graph changes every sample."""


def xnor_network(model: torch.nn.Module, x: Tensor, threads: int, packed_out: Tensor
                 ) -> tuple[Callable[[], object] | None, dict[str, Any]]:
    """(a call running the XNOR ``model`` exported to OpenVINO on ``x``, what its rows
    carry), after its output was checked against the packed network's ``packed_out``;
    (None, {"reason": why}) where it cannot run here."""
    from ..xnor.inference.openvino_export import to_openvino

    try:
        run = runner(compile_model(to_openvino(model, x), threads), x)
        got = torch.from_numpy(np.array(run())).float()
        ref = packed_out.float()
        if got.shape != ref.shape:
            return None, {"reason": f"output shape {tuple(got.shape)}, the packed "
                          f"network's {tuple(ref.shape)}"}
        per = ((got - ref).flatten(1).norm(dim=1)
               / ref.flatten(1).norm(dim=1).clamp_min(1e-12))
        off = int((per > EXPORT_REL_ERROR).sum())
        if off > EXPORT_SAMPLES_OFF * len(per):
            return None, {"reason": f"output differs from the packed network's in {off} "
                          f"of {len(per)} samples by more than {100 * EXPORT_REL_ERROR:.0f} "
                          f"% (relative L2; worst {100 * float(per.max()):.1f} %)"}
        return run, {"engine": "openvino", "precision": "binary",
                     "rel_error_vs_packed": float(per.median()),
                     "samples_off_vs_packed": off}
    except Exception as exc:  # not available here: said, not fatal
        return None, {"reason": exception_line(exc)}
