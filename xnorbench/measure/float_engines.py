"""The float engines a user could run the same network with on a CPU, for the baseline.

A speedup is only as honest as its denominator: torch eager (oneDNN) is one way to run
a float network, rarely the fastest. Each engine here is built for one module and one
input, checked against eager's output before it may be timed, and then timed beside the
binary kernels in the same interleaved blocks:

* ``eager``: the module itself (``torch.no_grad``);
* ``compile``: ``torch.compile`` (inductor, CPU) with freezing, PyTorch's recommended
  setting for CPU inference (weights folded and prepacked for oneDNN);
* ``onnxruntime``: the module exported with ``torch.onnx`` and run by ONNX Runtime's CPU
  provider, all graph optimizations on (an optional extra: ``pip install
  'xnorbench[onnx]'``).

Every engine runs on the thread count given. An engine that cannot be built here, or
whose output differs from eager's, is left out with the reason, never timed.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..variants import Variant, float_engine

ENGINES = ("eager", "compile", "onnxruntime")
"""Every float engine, in the order rows and tables list them."""

RTOL = 1e-3
"""Outputs of an engine against eager's: the same float32 arithmetic in another order
(other convolution algorithms, fused BN) differs by rounding, relative to the output's
largest magnitude; a wrong graph differs by far more."""


@dataclass
class Engine:
    """One way to run the float module: ``run()`` computes its output, or ``reason``
    says why it is not available here."""

    name: str
    run: Callable[[], object] | None
    reason: str | None = None


def _eager(module: nn.Module, x: Tensor, threads: int) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with torch.no_grad():
            return module(x)
    return run


COMPILE_LIMIT = 4096
"""Compiled variants kept per code object: every module of one class shares its
``forward`` code, and past dynamo's default limit (8) a sweep's later points would run
eagerly while labelled ``compile``."""


def _compile(module: nn.Module, x: Tensor, threads: int) -> Callable[[], Tensor]:
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, COMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, COMPILE_LIMIT)
    compiled = torch.compile(module, dynamic=False, options={"freezing": True})

    def run() -> Tensor:
        with torch.no_grad():
            return compiled(x)
    return run


def _onnxruntime(module: nn.Module, x: Tensor, threads: int) -> Callable[[], object]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("ONNX Runtime is not installed (pip install 'xnorbench[onnx]')"
                           ) from None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            tempfile.TemporaryDirectory() as folder:
        warnings.simplefilter("ignore")  # the exporter's notices, not the user's business
        path = Path(folder) / "module.onnx"
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
        graph = path.read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)[0]


_BUILDERS: dict[str, Callable[[nn.Module, Tensor, int], Callable[[], object]]] = {
    "eager": _eager, "compile": _compile, "onnxruntime": _onnxruntime}


def _as_tensor(out: object) -> Tensor:
    return out if isinstance(out, Tensor) else torch.from_numpy(out)


def build(module: nn.Module, x: Tensor, names: Sequence[str], threads: int
          ) -> dict[str, Engine]:
    """The engines ``names`` for ``module`` on input ``x``, each checked against eager
    (``module`` in eval mode, ``x`` on the CPU)."""
    module = module.eval()
    with torch.no_grad():
        ref = module(x)
    scale = max(float(ref.abs().max()), 1e-6)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Engine] = {}
    try:
        for name in names:
            if name not in _BUILDERS:
                raise ValueError(f"unknown float engine {name!r}; choose from "
                                 f"{', '.join(ENGINES)}")
            try:
                run = _BUILDERS[name](module, x, threads)
                got = _as_tensor(run()).detach()
            except Exception as exc:  # not available here: said, not fatal
                out[name] = Engine(name, None, f"{type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
                continue
            diff = float((got.float() - ref).abs().max()) if got.shape == ref.shape else None
            if diff is None or diff > RTOL * scale:
                out[name] = Engine(name, None, "output differs from eager's ("
                                   + ("shape" if diff is None else f"max |diff| {diff:.3g} "
                                      f"at output scale {scale:.3g}") + ")")
                continue
            out[name] = Engine(name, run)
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


def _key(name: str) -> str:
    return Variant.FLOAT if name == "eager" else float_engine(name)


def timed(engines: dict[str, Engine]) -> dict[str, Callable[[], object]]:
    """The engines that can be timed, keyed as the timing dicts key float work: eager is
    ``float`` (the key every suite already times), another engine ``float_<name>``."""
    return {_key(n): run for n, run in available(engines).items()}


def fastest(times: dict[str, Any], engines: dict[str, Engine]) -> tuple[str, dict[str, Any]]:
    """(timing key of the fastest float engine, the params its rows carry: the engine's
    name, eager's time beside it, the engines left out and why, its spread). ``times``
    are :func:`.timing.compare`'s results, which timed ``float`` and :func:`timed`."""
    names = ["eager", *(n for n in available(engines) if n != "eager")]
    name = min(names, key=lambda n: times[_key(n)].median_s)
    return _key(name), {"engine": name, "eager_ms": times["float"].median_ms,
                        "unavailable": unavailable(engines), **times[_key(name)].spread()}


def unavailable(engines: dict[str, Engine]) -> dict[str, str]:
    """``{name: reason}`` of the engines left out."""
    return {n: e.reason or "" for n, e in engines.items() if e.run is None}
