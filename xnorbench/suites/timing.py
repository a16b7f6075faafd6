"""Suite ``timing``: inference latency per layer and end to end, and training step time.

Float vs XNOR with the packed kernels (and the float-simulated XNOR model, which is
what a training port without bit operations runs), measured side by side in one
process at a stated thread count. Weights are random: latency does not depend on them.
The XNOR network's BatchNorm statistics come from one training-mode pass over random
input (``settle_batchnorm``), so the packed and exported networks can be checked against
each other: with a fresh BatchNorm every threshold sits at exactly 0, where integer
pre-activations tie and each implementation breaks the tie by its own rounding.
Training steps: float, XNOR through the fused layers, and XNOR through the port's BinOp
workflow, interleaved; with the operators each step dispatches (what a GPU pays a
launch for). On a CUDA device the inference rows compare float with the simulated XNOR
model (there is no GPU bit kernel; packed timings belong to the CPU) and the training
steps run on the GPU; every row says its device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from ..db import Row
from ..measure import baselines, openvino_runtime
from ..measure.baselines import ENGINES, engines_ok
from ..measure.baselines import build as build_engines
from ..measure.baselines import timed as timed_engines
from ..measure.breakdown import packed_breakdown
from ..measure.ceilings import PeakProbe, share
from ..measure.machine_state import StateProbe
from ..measure.timing import compare, dispatched_ops, launched_ops
from ..runs import options as o
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import SuiteContext, register
from ..variants import TRAINING_STEPS
from ..variants import Variant as V
from ..xnor import binary_layers
from ..xnor.inference.packed_layers import pack_model
from ..xnor.kernels import default_build, kernel_isa
from ..xnor.layers.step import step_for, train_step
from ..xnor.networks import models
from ..xnor.networks.models import input_shape, models_ok, native_dataset
from ..xnor.sign import compiled
from .common import fastest_rows

OPTIONS = (
    Opt("model", "strs", ["resnet18", "lenet5", "nin"], "Comma-separated: resnet18, lenet5, "
        "nin, resnet18-imagenet, torchvision:NAME (untrained, binarized by "
        "xnorbench.binarize; 3x224x224 input, or 3x32x32 with torchvision:NAME:cifar) or "
        "module.path:function (your factory returning an nn.Module).",
        param="models", check=models_ok, noun="model"),
    Opt("batches", "ints", [1, 64], "Inference batch sizes."),
    Opt("train_batch", "int", 32, "Batch of the timed training step.", check=o.positive),
    Opt("per_layer", "bool", True, "Also time every binary layer."),
    Opt("profile", "bool", False, "Also store where the packed network's time goes "
        "(binary GEMM, packing, float layers, copies, Python) per batch; `table --suite "
        "breakdown`."),
    Opt("rounds", "int", 3, "Interleaved timing rounds.", check=o.positive),
    Opt("threads", "int", 1, "torch and kernel threads.", check=o.threads_ok),
    Opt("device", "device", "cpu", "cpu: float vs the packed kernels (and per layer); cuda: "
        "float vs the simulated XNOR model (no GPU bit kernel) and the training steps on the "
        "GPU.", param=None),
    Opt("seed", "int", 0, "Random seed (recorded).", check=o.seed_ok),
    Opt("float_engines", "strs", list(ENGINES), "Baselines (engine-precision) timed beside "
        "the packed network and layers on the CPU: eager, compile, onnxruntime, openvino "
        "(fp32), torch-bf16, openvino-bf16, onnxruntime-int8, openvino-int8; speedups are "
        "quoted against the fastest that runs here at each precision, with eager's beside.",
        check=engines_ok, choices=ENGINES, noun="float engine"),
    Opt("min_run_time", "float", 0.05, "Seconds each timing block runs at least.",
        hidden=True),
)


@dataclass(frozen=True)
class TimingParams(SuiteParams):
    """The networks, batches and thread count timed, and how (see the options' help)."""

    models: tuple[str, ...] = ("resnet18", "lenet5", "nin")
    batches: tuple[int, ...] = (1, 64)
    train_batch: int = 32
    per_layer: bool = True
    profile: bool = False
    rounds: int = 3
    threads: int = 1
    seed: int = 0
    float_engines: tuple[str, ...] = tuple(ENGINES)
    min_run_time: float = 0.05


def _layer_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The input tensor each named module sees during one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_pre_hook(
        lambda _m, args, n=n: seen.__setitem__(n, args[0].detach().clone())) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def settle_batchnorm(model: nn.Module, shape: tuple[int, ...], seed: int,
                     batch: int = 8) -> None:
    """Set every BatchNorm's running statistics to those of one training-mode pass over
    ``batch`` standard-normal inputs of ``shape`` (cumulative average, then eval mode),
    and its bias (where it has one) to a random value in [-0.1, 0.1).

    Untrained, every threshold a binary layer folds from its BatchNorm is exactly 0, and
    a third of a percent to a few percent of integer pre-activations land on it; the
    packed kernel's epilogue, OpenVINO and the simulated layers break such ties by their
    own rounding, and in a deep network one broken tie spreads to every output. A mean
    of a few integer pre-activations is often one of them too: the random bias moves the
    thresholds between them, where a trained network has them."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, *shape, generator=g))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
        if m.bias is not None:
            with torch.no_grad():
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.2)
    model.eval()


def _breakdown_rows(fn: Callable[[], object], prm: dict[str, Any], tag: dict[str, Any]
                    ) -> Iterator[Row]:
    """Where the packed network's time goes at this batch: one row per part, and the
    binary GEMMs' share."""
    with torch.no_grad():
        b = packed_breakdown(fn)
    base = {**prm, "breakdown_total_ms": b.total_ms, "binary_calls": b.binary_calls}
    for part, ms in b.parts.items():
        yield Row("packed_time_ms", ms, "ms", variant=V.XNOR_PACKED,
                  params={**base, "part": part, "share_pct": b.share(part)}, **tag)
    yield Row("packed_binary_gemm_pct", b.share("binary GEMM"), "%", variant=V.XNOR_PACKED,
              params=base, **tag)


def _layer_macs(layer: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of a binary conv/linear layer on input ``x``."""
    with torch.no_grad():
        out = layer(x)
    if x.dim() == 4:
        kh, kw = cast(tuple[int, int], layer.kernel_size)
        return out.numel() * x.shape[1] * kh * kw
    return out.numel() * x.flatten(1).shape[1]


@register("timing", "Latency per layer and end to end, float vs packed XNOR; train steps.",
          TimingParams, options=OPTIONS,
          doc="Inference latency (per layer, end to end) and training step, float vs XNOR.")
def run_timing(ctx: SuiteContext, p: TimingParams) -> Iterator[Row]:
    threads = p.threads
    torch.set_num_threads(threads)
    device = ctx.device
    cuda = device.startswith("cuda")
    isa = kernel_isa()
    for name in ctx.progress.track(p.models, "models"):
        torch.manual_seed(p.seed)
        fmodel = models.build(name, binary=False).eval()
        xmodel = models.build(name, binary=True).eval()
        settle_batchnorm(xmodel, input_shape(name), p.seed)
        packed = None if cuda else pack_model(xmodel)
        fmodel, xmodel = fmodel.to(device), xmodel.to(device)
        base = {"threads": threads, "kernel_isa": isa, "input": list(input_shape(name)),
                "device": device}
        tag: dict[str, Any] = {"dataset": native_dataset(name), "model": name}
        nets = _Networks(fmodel, xmodel, packed)
        for batch in p.batches:
            x = torch.randn(batch, *input_shape(name), device=device)
            yield from _network_rows(nets, x, p, {**base, "batch": batch}, tag)
        if p.per_layer and packed is not None:
            names = [n for n, _ in binary_layers(xmodel)]
            inputs = _layer_inputs(xmodel, torch.randn(1, *input_shape(name)), names)
            fmods, pmods = dict(fmodel.named_modules()), dict(packed.named_modules())
            for lname in ctx.progress.track(names, f"{name} layers"):
                yield from _layer_rows(fmods[lname], pmods[lname], inputs[lname], p,
                                       {**base, "batch": 1, "layer": lname}, tag)
        yield from _train_step_rows(name, p, {**base, "batch": p.train_batch}, tag,
                                    device)


class _Networks(NamedTuple):
    """One network three ways: float, XNOR simulated in float, packed (None on CUDA)."""

    float_net: nn.Module
    xnor_net: nn.Module
    packed: nn.Module | None


def _network_rows(nets: _Networks, x: torch.Tensor, p: TimingParams, base: dict[str, Any],
                  tag: dict[str, Any]) -> Iterator[Row]:
    """End-to-end latency of one batch on every engine, side by side, and the speedups."""
    threads, packed = p.threads, nets.packed
    fns: dict[str, Callable[[], object]] = {V.FLOAT: partial(nets.float_net, x),
                                            V.XNOR: partial(nets.xnor_net, x)}
    engines = {} if packed is None else build_engines(nets.float_net, x, p.float_engines, threads)
    fns.update(timed_engines(engines))
    exported: dict[str, Any] = {}
    if packed is not None:
        fns[V.XNOR_PACKED] = partial(packed, x)
        with torch.no_grad():
            ov_run, exported = openvino_runtime.xnor_network(nets.xnor_net, x, threads, packed(x))
        if ov_run is not None:
            fns[V.XNOR_OPENVINO] = ov_run
    state = StateProbe()
    with torch.no_grad():
        t = compare(fns, threads=threads, rounds=p.rounds, min_run_time=p.min_run_time)
    prm = {**base, **state.stop().as_params()}
    if "reason" in exported:
        prm["xnor_openvino_unavailable"] = exported["reason"]
    for variant, tm in t.items():
        own = exported if variant == V.XNOR_OPENVINO else baselines.row_params(
            engines, variant)
        yield Row("inference_latency_ms", tm.median_ms, "ms", variant=variant,
                  params={**prm, **tm.spread(), **own}, **tag)
    fast = V.XNOR_PACKED if packed is not None else V.XNOR
    yield Row("inference_speedup", t[V.FLOAT].median_s / t[fast].median_s, "x",
              variant=fast, params=prm, **tag)
    if engines:
        yield from fastest_rows("inference_", t, fast, engines, prm, tag)
    if p.profile and packed is not None:
        yield from _breakdown_rows(partial(packed, x), prm, tag)


def _layer_rows(fmod: nn.Module, pmod: nn.Module, xin: torch.Tensor, p: TimingParams,
                base: dict[str, Any], tag: dict[str, Any]) -> Iterator[Row]:
    """One binary layer at batch 1, float vs packed (and the float engines), with its
    shares of the core's peaks measured between the rounds."""
    threads = p.threads
    engines = build_engines(fmod, xin, p.float_engines, threads)
    fns: dict[str, Callable[[], object]] = {V.FLOAT: partial(fmod, xin),
                                            V.XNOR_PACKED: partial(pmod, xin)}
    fns.update(timed_engines(engines))
    probe, state = PeakProbe(default_build()), StateProbe()
    with torch.no_grad():
        t = compare(fns, threads=threads, rounds=p.rounds, min_run_time=p.min_run_time / 2,
                    between=probe)
    prm = {**base, "layer_input": list(xin.shape), **state.stop().as_params()}
    for variant, tm in t.items():
        yield Row("layer_latency_ms", tm.median_ms, "ms", variant=variant,
                  params={**prm, **tm.spread(), **baselines.row_params(engines, variant)},
                  **tag)
    macs = _layer_macs(pmod, xin)
    ceil = probe.ceilings()
    cprm = {**prm, **ceil.as_params(), **probe.spread(), "macs": macs,
            "peaks_scaled_by_threads": threads, "note": "the whole unit (BN, sign or ReLU, "
            "conv) against the conv's peak"}
    for metric, rate, peak, variant in (
            ("layer_binary_pct_of_peak", macs / t[V.XNOR_PACKED].median_s, ceil.binary_macs,
             V.XNOR_PACKED),
            ("layer_float_pct_of_peak", 2 * macs / t[V.FLOAT].median_s, ceil.fp32_flops,
             V.FLOAT)):
        pct, disturbed = share(rate, peak * threads)
        yield Row(metric, pct, "%", variant=variant, params={**cprm, "disturbed": disturbed},
                  **tag)
    yield Row("layer_speedup", t[V.FLOAT].median_s / t[V.XNOR_PACKED].median_s, "x",
              variant=V.XNOR_PACKED, params=prm, **tag)
    yield from fastest_rows("layer_", t, V.XNOR_PACKED, engines, prm, tag)


def _train_step_rows(name: str, p: TimingParams, prm: dict[str, Any],
                     tag: dict[str, Any], device: str = "cpu") -> Iterator[Row]:
    """Training step: float autograd vs XNOR fused vs XNOR through BinOp, interleaved."""
    torch.manual_seed(p.seed)
    xb = torch.randn(p.train_batch, *input_shape(name), device=device)
    yb = torch.randint(0, 10, (p.train_batch,), device=device)
    steps: dict[str, Callable[[], object]] = {}
    for variant in TRAINING_STEPS:
        model = models.build(name, binary=variant != V.FLOAT).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        steps[variant] = partial(train_step, model, xb, yb, opt, step_for(model, variant))
    state = StateProbe()
    t = compare(steps, threads=p.threads, rounds=p.rounds, min_run_time=p.min_run_time)
    prm = {**prm, **state.stop().as_params()}
    ops = {variant: dispatched_ops(fn) for variant, fn in steps.items()}
    launches = {variant: launched_ops(fn) for variant, fn in steps.items()}
    for measured, tm in t.items():
        yield Row("train_step_ms", tm.median_ms, "ms", variant=measured,
                  params={**prm, **tm.spread()}, **tag)
        yield Row("train_step_ops", ops[measured], "ops", variant=measured,
                  params={**prm, "counted": "torch.profiler, nested operators included"},
                  **tag)
        yield Row("train_step_launches", launches[measured], "kernels", variant=measured,
                  params={**prm, "counted": "top-level operators + compiled kernels "
                          "(measure.timing.launched_ops)", "xnor_graphs": compiled.mode()},
                  **tag)
    for xnor in (V.XNOR_FUSED, V.XNOR_BINOP):
        yield Row("train_step_ratio", t[xnor].median_s / t[V.FLOAT].median_s, "x",
                  variant=xnor, params=prm, **tag)
        yield Row("train_step_ops_ratio", ops[xnor] / ops[V.FLOAT], "x", variant=xnor,
                  params=prm, **tag)
        yield Row("train_step_launches_ratio", launches[xnor] / launches[V.FLOAT], "x",
                  variant=xnor, params=prm, **tag)
