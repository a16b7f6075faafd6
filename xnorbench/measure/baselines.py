"""The baselines: every way a user could deploy the same float network on a CPU, each an
(engine, precision) pair.

A speedup is only as honest as its denominator. torch eager (oneDNN) is one way to run a
float network, rarely the fastest; and a deployer who cares about speed does not stop at
fp32: a CPU with VNNI or AMX runs int8 (and with AVX512-BF16 or AMX, bf16) several times
faster. Each baseline is built for one module and one input, checked against eager's
fp32 output at a tolerance its precision allows (a wrong graph still fails), and then
timed beside the binary kernels in the same interleaved blocks.

==================  ============  =========  ===========================================
name                engine        precision  how
==================  ============  =========  ===========================================
eager               torch         fp32       the module itself (``torch.no_grad``)
compile             torch.compile fp32       inductor with freezing (weights prepacked)
onnxruntime         onnxruntime   fp32       ``torch.onnx`` export, all graph optimizations
openvino            openvino      fp32       the same ONNX graph, precision hint f32
torch-bf16          torch         bf16       the module in bf16, channels_last (oneDNN)
openvino-bf16       openvino      bf16       the ONNX graph, precision hint bf16
onnxruntime-int8    onnxruntime   int8       static QDQ quantization (:mod:`.int8`)
openvino-int8       openvino      int8       the same QDQ graph on OpenVINO's int8 kernels
==================  ============  =========  ===========================================

A bare name is fp32 (the names rows stored before precisions existed). bf16 is left out
on a CPU without a bf16 unit (:mod:`.cpu_units`), with that reason; int8 runs on every
x86 CPU (through VNNI or AMX where present). An engine that cannot be built here, or
whose output is off, is left out with the reason, never timed.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, exception_line, first_line
from ..variants import Variant, float_engine
from . import int8, openvino_runtime
from .cpu_units import NO_BF16, bf16_unit, int8_unit

PRECISIONS = ("fp32", "bf16", "int8")
"""Every precision a baseline runs at, in the order tables list them."""


@dataclass(frozen=True)
class Baseline:
    """One (engine, precision) pair: its row name, the runtime, and the precision."""

    name: str
    engine: str
    precision: str


BASELINES = {b.name: b for b in (
    Baseline("eager", "torch", "fp32"), Baseline("compile", "torch.compile", "fp32"),
    Baseline("onnxruntime", "onnxruntime", "fp32"), Baseline("openvino", "openvino", "fp32"),
    Baseline("torch-bf16", "torch", "bf16"), Baseline("openvino-bf16", "openvino", "bf16"),
    Baseline("onnxruntime-int8", "onnxruntime", "int8"),
    Baseline("openvino-int8", "openvino", "int8"))}

ENGINES = tuple(BASELINES)
"""Every baseline, in the order rows and tables list them."""

RTOL = 1e-3
"""fp32 outputs against eager's: the same float32 arithmetic in another order (other
convolution algorithms, fused BN) differs by rounding, relative to the output's largest
magnitude; a wrong graph differs by far more."""

REL_ERROR = {"bf16": 0.05, "int8": 0.25}
"""bf16 and int8 outputs against eager's fp32: the relative L2 error allowed. bf16 keeps 8
significant bits (about 0.4 % per value, accumulated in fp32); static int8 of a network
with random weights measured 2-5 % here (ResNet-18, LeNet-5, one conv). A wrong graph
(a missing layer, transposed weights) is off by 50 % and more."""


@dataclass
class Engine:
    """One baseline built for the module: ``run()`` computes its output, or ``reason``
    says why it is not available here; ``info`` what its rows carry about how it was
    built (the int8 calibration, the CPU unit)."""

    name: str
    run: Callable[[], object] | None
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    predict: Callable[[Tensor], object] | None = None
    """The engine on another input of the same shape (an accuracy pass over a test
    set, batch by batch)."""

    @property
    def precision(self) -> str:
        return BASELINES[self.name].precision


class _Graphs:
    """The module's ONNX graph and its int8 form, made once per build and only if an
    engine asks for them (in a folder that lives as long as the build)."""

    def __init__(self, module: nn.Module, x: Tensor, calibration: Sequence[Tensor],
                 folder: Path) -> None:
        self.module, self.x, self.calibration, self.folder = module, x, calibration, folder
        self._fp32: Path | None = None
        self._int8: Path | None = None

    def fp32(self) -> Path:
        if self._fp32 is None:
            self._fp32 = int8.export_onnx(self.module, self.x, self.folder / "fp32.onnx")
        return self._fp32

    def int8(self) -> Path:
        if self._int8 is None:
            self._int8 = int8.quantize(self.fp32(), self.folder / "int8.onnx",
                                       self.calibration)
        return self._int8


Predict = Callable[[Tensor], object]
Builder = Callable[[nn.Module, Tensor, int, _Graphs], Predict]


def _eager(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
    def run(t: Tensor) -> Tensor:
        with torch.no_grad():
            return module(t)
    return run


COMPILE_LIMIT = 4096
"""Compiled variants kept per code object: every module of one class shares its
``forward`` code, and past dynamo's default limit (8) a sweep's later points would run
eagerly while labelled ``compile``."""


def _compile(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, COMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, COMPILE_LIMIT)
    compiled = torch.compile(module, dynamic=False, options={"freezing": True})

    def run(t: Tensor) -> Tensor:
        with torch.no_grad():
            return compiled(t)
    return run


def _torch_bf16(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
    if bf16_unit() is None:
        raise RuntimeError(NO_BF16)
    cl = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    half = copy.deepcopy(module).to(dtype=torch.bfloat16).to(memory_format=cl)

    def run(t: Tensor) -> Tensor:  # the fp32 input converted as a deployment would
        with torch.no_grad():
            return half(t.to(dtype=torch.bfloat16, memory_format=cl))
    return run


def _ort_session(path: Path, threads: int, x: Tensor) -> Predict:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(int8.ONNX_INSTALL) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda t: session.run(None, {"x": t.numpy()})[0]


def _onnxruntime(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
    return _ort_session(g.fp32(), threads, x)


def _onnxruntime_int8(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
    return _ort_session(g.int8(), threads, x)


def _openvino(precision: str, quantized: bool) -> Builder:
    def build(module: nn.Module, x: Tensor, threads: int, g: _Graphs) -> Predict:
        openvino_runtime.openvino()  # installed, or one line saying how
        if precision == "bf16" and bf16_unit() is None:
            raise RuntimeError(NO_BF16)
        graph = g.int8() if quantized else g.fp32()
        return openvino_runtime.predictor(
            openvino_runtime.compile_model(graph, threads, precision))
    return build


_BUILDERS: dict[str, Builder] = {
    "eager": _eager, "compile": _compile, "onnxruntime": _onnxruntime,
    "openvino": _openvino("f32", False), "torch-bf16": _torch_bf16,
    "openvino-bf16": _openvino("bf16", False),
    "onnxruntime-int8": _onnxruntime_int8,
    # int8 where the graph is quantized, fp32 (not bf16) for the rest: int8 alone
    "openvino-int8": _openvino("f32", True)}


def _as_tensor(out: object) -> Tensor:
    return out if isinstance(out, Tensor) else torch.from_numpy(out)


def off_by(got: Tensor, ref: Tensor, precision: str) -> str | None:
    """None if ``got`` is ``ref`` (eager fp32) computed at ``precision``, else how far off."""
    if got.shape != ref.shape:
        return f"output shape {tuple(got.shape)}, eager's {tuple(ref.shape)}"
    got, ref = got.float(), ref.float()
    if precision == "fp32":
        scale = max(float(ref.abs().max()), 1e-6)
        diff = float((got - ref).abs().max())
        return None if diff <= RTOL * scale else (
            f"output differs from eager's (max |diff| {diff:.3g} at output scale "
            f"{scale:.3g})")
    err = float((got - ref).norm() / max(float(ref.norm()), 1e-12))
    return None if err <= REL_ERROR[precision] else (
        f"output differs from eager's by {100 * err:.1f} % (relative L2; {precision} "
        f"allows {100 * REL_ERROR[precision]:.0f} %)")


def _info(name: str, calibration: Sequence[Tensor], source: str) -> dict[str, Any]:
    b = BASELINES[name]
    info: dict[str, Any] = {"precision": b.precision, "runtime": b.engine}
    if b.precision == "int8":
        info.update(calibration_images=sum(int(c.shape[0]) for c in calibration),
                    calibration_source=source, quantization="static QDQ, per-channel int8 "
                    "weights, per-tensor uint8 activations", cpu_unit=int8_unit() or
                    "none (AVX2: int8 through 16-bit products)")
    if b.precision == "bf16":
        info["cpu_unit"] = bf16_unit()
    return info


def build(module: nn.Module, x: Tensor, names: Sequence[str], threads: int,
          calibration: Sequence[Tensor] | None = None,
          calibration_source: str = "random normal inputs like the timed one"
          ) -> dict[str, Engine]:
    """The baselines ``names`` for ``module`` on input ``x``, each checked against eager
    (``module`` in eval mode, ``x`` on the CPU). int8 baselines are calibrated on
    ``calibration`` (default: :func:`.int8.random_calibration`, for random weights)."""
    module = module.eval()
    with torch.no_grad():
        ref = module(x)
    calib = list(calibration) if calibration is not None else int8.random_calibration(x)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Engine] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            graphs = _Graphs(module, x, calib, Path(folder))
            for name in names:
                if name not in _BUILDERS:
                    raise ValueError(f"unknown float engine {name!r}; choose from "
                                     f"{', '.join(ENGINES)}")
                info = _info(name, calib, calibration_source)
                try:
                    predict = _BUILDERS[name](module, x, threads, graphs)
                    run = partial(predict, x)
                    got = _as_tensor(run()).detach()
                except Exception as exc:  # not available here: said, not fatal
                    # a plain RuntimeError is this package's own sentence (no bf16 unit,
                    # a runtime not installed); anything else keeps its type's name
                    why = first_line(exc) if type(exc) is RuntimeError else \
                        exception_line(exc)
                    out[name] = Engine(name, None, why, info)
                    continue
                if BASELINES[name].precision == "int8":  # what a deployment ships
                    info["model_file_bytes"] = graphs.int8().stat().st_size
                bad = off_by(got, ref, BASELINES[name].precision)
                out[name] = Engine(name, None if bad else run, bad, info,
                                   None if bad else predict)
    finally:
        torch.set_num_threads(prev)
    return out


def engines_ok(names: list[str], flag: str) -> None:
    """``--float-engines`` must include eager: every other engine is checked against it."""
    if "eager" not in names:
        raise InputError(f"{flag} {','.join(names)}: eager must be among them (every other "
                         "engine is checked against its output)")


def available(engines: dict[str, Engine]) -> dict[str, Callable[[], object]]:
    """``{name: run}`` of the engines that can be timed."""
    return {n: e.run for n, e in engines.items() if e.run is not None}


def key(name: str) -> str:
    """How the timing dicts and rows key a baseline's work: eager is ``float`` (the key
    every suite already times), another ``float_<name>``."""
    return Variant.FLOAT if name == "eager" else float_engine(name)


def timed(engines: dict[str, Engine]) -> dict[str, Callable[[], object]]:
    """The engines that can be timed, keyed by :func:`key`."""
    return {key(n): run for n, run in available(engines).items()}


def fastest(times: dict[str, Any], engines: dict[str, Engine], precision: str = "fp32"
            ) -> tuple[str, dict[str, Any]] | None:
    """(timing key of the fastest engine at ``precision``, the params its rows carry: the
    engine's name and precision, eager's time beside it, every engine left out and why,
    its spread), or None if no engine of that precision ran. ``times`` are
    :func:`.timing.compare`'s results, which timed ``float`` and :func:`timed`."""
    names = [n for n in available(engines) if BASELINES[n].precision == precision]
    if precision == "fp32" and "eager" not in names:
        names.insert(0, "eager")  # the suites time eager whatever ``engines`` holds
    if not names:
        return None
    name = min(names, key=lambda n: times[key(n)].median_s)
    info = engines[name].info if name in engines else {"precision": "fp32"}
    return key(name), {"engine": name, **info, "eager_ms": times["float"].median_ms,
                       "unavailable": unavailable(engines), **times[key(name)].spread()}


def unavailable(engines: dict[str, Engine]) -> dict[str, str]:
    """``{name: reason}`` of the engines left out."""
    return {n: e.reason or "" for n, e in engines.items() if e.run is None}


def row_params(engines: dict[str, Engine], timing_key: str) -> dict[str, Any]:
    """What a baseline's own latency row carries: its name, precision and how it was
    built (empty for keys that are not a baseline)."""
    for n, e in engines.items():
        if key(n) == timing_key:
            return {"engine": n, **e.info}
    return {}
