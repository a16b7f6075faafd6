"""Suite ``tradeoff``: what XNOR buys against what a deployer would run instead, for one
trained network.

A finished accuracy (or compare) run holds a trained float network (its weights kept as
``*.weights``) and the XNOR network trained under the same recipe (``*.packed``). This
suite takes both and, on the run's own test set, measures every way to deploy them:

* the float network at fp32, bf16 and int8 on every baseline engine that runs here
  (:mod:`..measure.baselines`): int8 quantized statically, calibrated on the run's
  first training images (their count stored), its accuracy the one the quantizing
  engine's graph gives on the test set;
* the XNOR network simulated (what training evaluated), packed (this harness's
  XNOR-popcount kernels) and exported to OpenVINO (``BinaryConvolution``).

For each: test accuracy, latency at each batch size (interleaved, one process, the
thread count stated) and the size of its weights. One row per (precision, engine) and
quantity; ``xnorbench table --suite tradeoff`` shows them side by side.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ..data.datasets import load_dataset
from ..data.loader import BatchLoader
from ..db import Row
from ..errors import InputError
from ..measure import baselines
from ..measure.baselines import ENGINES, engines_ok
from ..measure.machine_state import StateProbe
from ..measure.timing import compare
from ..runs import options as o
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import SuiteContext, register
from ..variants import Variant as V
from ..xnor import load_packed
from ..xnor.inference.openvino_export import save_openvino
from ..xnor.inference.packed_layers import pack_model
from ..xnor.kernels import kernel_isa
from ..xnor.networks import model_spec, models

OPTIONS = (
    Opt("of_run", "int", None, "The finished accuracy or compare run whose trained float "
        "and XNOR networks are compared (its float weights and packed file).",
        check=o.positive),
    Opt("trained_seed", "int", None, "Which seed's networks, where the run trained several "
        "\\[default: the lowest].", check=o.seed_ok),
    Opt("batches", "ints", [1, 64], "Batch sizes timed."),
    Opt("calibration", "int", 512, "Training images int8 quantization calibrates on.",
        check=o.positive),
    Opt("eval_batch", "int", 250, "Batch of the accuracy passes.", check=o.positive),
    Opt("rounds", "int", 3, "Interleaved timing rounds.", check=o.positive),
    Opt("threads", "int", 1, "torch, engine and kernel threads.", check=o.threads_ok),
    Opt("data_dir", "path", None, "The data the run trained on \\[default: the folder the "
        "run read]."),
    Opt("float_engines", "strs", list(ENGINES), "Baselines (engine-precision) the float "
        "network runs on.", check=engines_ok, choices=ENGINES, noun="float engine"),
    Opt("min_run_time", "float", 0.05, "Seconds each timing block runs at least.",
        hidden=True),
)


@dataclass(frozen=True)
class TradeoffParams(SuiteParams):
    """The trained run compared, and how each deployment is measured."""

    of_run: int | None = None
    trained_seed: int | None = None
    batches: tuple[int, ...] = (1, 64)
    calibration: int = 512
    eval_batch: int = 250
    rounds: int = 3
    threads: int = 1
    data_dir: str | None = None
    float_engines: tuple[str, ...] = tuple(ENGINES)
    min_run_time: float = 0.05


@dataclass
class Trained:
    """What a training run left: its networks' files, spec, data and accuracies."""

    run_id: int
    seed: int | None
    model: str
    dataset: str
    weights: Path
    packed: Path
    params: dict[str, Any]
    trained_accuracy: dict[str, float]


def trained(ctx: SuiteContext, p: TradeoffParams) -> Trained:
    """The networks ``--of-run`` trained, or an InputError saying what is missing."""
    if p.of_run is None:
        raise InputError("--of-run: give the id of a finished accuracy or compare run")
    run = ctx.store.run(p.of_run)
    if run is None:
        raise InputError(f"--of-run {p.of_run}: no such run")
    rows = ctx.store.results([p.of_run])

    def pick(metric: str) -> Any:
        found = [r for r in rows if r.metric == metric
                 and (p.trained_seed is None or r.seed == p.trained_seed)]
        return min(found, key=lambda r: r.seed or 0) if found else None

    w, pk = pick("float_weights_file_bytes"), pick("packed_test_accuracy")
    if w is None or pk is None:
        raise InputError(f"--of-run {p.of_run}: it holds no " + (
            "trained float network (runs finished before float weights were kept have "
            "none: train again)" if w is None else "trained XNOR network")
            + ("" if p.trained_seed is None else f" of seed {p.trained_seed}"))
    seed = pk.seed
    accs = {str(r.variant): float(r.value) for r in rows
            if r.metric == "final_test_accuracy" and r.seed == seed and r.variant
            and r.value is not None}
    files = (Path(w.params["weights_file"]), Path(pk.params["packed_file"]))
    for f in files:
        if not f.is_file():
            raise InputError(f"--of-run {p.of_run}: {f} is gone")
    return Trained(p.of_run, seed, str(pk.model), str(pk.dataset), files[0], files[1],
                   dict(run.params or {}), accs)


def _accuracy(predict: Callable[[Tensor], object], images: list[Tensor],
              labels: Tensor) -> float:
    """Top-1 accuracy (%) of ``predict`` over fixed-size batches (the last padded)."""
    hits = 0
    for x, n in images_of(images):
        out = predict(x)
        scores = out if isinstance(out, Tensor) else torch.from_numpy(np.asarray(out))
        hits += int((scores[:n].float().argmax(1) == labels[:n]).sum())
        labels = labels[n:]
    return 100.0 * hits / max(sum(int(b.shape[0]) for b in images), 1)


def images_of(batches: list[Tensor]) -> Iterator[tuple[Tensor, int]]:
    """Each batch padded to the first one's size (an engine built for one shape), with
    how many of its images are real."""
    size = int(batches[0].shape[0])
    for b in batches:
        n = int(b.shape[0])
        if n < size:
            b = torch.cat([b, b.new_zeros(size - n, *b.shape[1:])])
        yield b, n


def _sizes(fmodel: nn.Module, xnor_file: Path, exported: Path | None) -> dict[str, Any]:
    floats = sum(t.numel() for t in fmodel.state_dict().values() if t.is_floating_point())
    return {V.FLOAT: (4 * floats, "float32 parameters and BatchNorm statistics"),
            "bf16": (2 * floats, "the same in bf16"),
            "xnor_packed": (xnor_file.stat().st_size, "the packed file (1-bit weights, "
                            "float first/last layers)"),
            "xnor_openvino": (None if exported is None else
                              exported.with_suffix(".bin").stat().st_size,
                              "the exported model's .bin")}


@register("tradeoff", "Accuracy, latency and size of a trained network at fp32, bf16, "
          "int8 and XNOR, on every engine.", TradeoffParams, options=OPTIONS,
          doc="For one trained run: test accuracy, latency and weights' size of the float "
              "network at fp32, bf16 and int8 on every engine that runs here, beside its "
              "XNOR network simulated, packed and exported to OpenVINO.")
def run_tradeoff(ctx: SuiteContext, p: TradeoffParams) -> Iterator[Row]:
    t = trained(ctx, p)
    torch.set_num_threads(p.threads)
    stored = t.params
    bundle = load_dataset(t.dataset, p.data_dir or stored.get("data_dir"), download=False,
                          limit_train=stored.get("limit_train"),
                          limit_test=stored.get("limit_test"), progress=ctx.progress.track)
    if not hasattr(bundle.test, "images"):
        raise InputError(f"{t.dataset}: file-based datasets are not supported here")
    mean, std = bundle.mean, bundle.std
    tests = [x for x, _ in BatchLoader(bundle.test, p.eval_batch, mean=mean, std=std)]
    labels = bundle.test.labels.cpu()
    calib_x = next(iter(BatchLoader(bundle.train, min(p.calibration, len(bundle.train)),
                                    mean=mean, std=std)))[0]
    calib = list(calib_x.split(32))
    fmodel = models.build(t.model, binary=False, in_channels=bundle.in_channels,
                          input_size=bundle.image_size, num_classes=bundle.num_classes)
    fmodel.load_state_dict(torch.load(t.weights, map_location="cpu", weights_only=True))
    fmodel.eval()
    factory = t.model if model_spec.is_factory(t.model) else None
    xmodel = load_packed(t.packed, factory=factory).float().eval()
    tag: dict[str, Any] = {"dataset": t.dataset, "model": t.model, "seed": t.seed}
    base: dict[str, Any] = {"of_run": t.run_id, "threads": p.threads, "kernel_isa":
                            kernel_isa(), "test_images": len(labels),
                            "trained_final_accuracy": t.trained_accuracy}
    nets = _Deployed(fmodel, xmodel, tests, labels, calib,
                     f"the run's first {calib_x.shape[0]} training images")
    with tempfile.TemporaryDirectory() as folder:  # the files whose sizes are stored
        yield from _measure(ctx, p, t, Path(folder), nets, {"tag": tag, "base": base})


class _Deployed(NamedTuple):
    """What the trade-off scores: the trained float and XNOR networks, the test batches
    and labels, and the calibration batches of the int8 baselines (``source``: which)."""

    fmodel: nn.Module
    xmodel: nn.Module
    tests: list[Tensor]
    labels: Tensor
    calib: list[Tensor]
    source: str


def _measure(ctx: SuiteContext, p: TradeoffParams, t: Trained, folder: Path, nets: _Deployed,
             row: dict[str, dict[str, Any]]) -> Iterator[Row]:
    """Accuracy, size and latency of every deployment (files written to ``folder``);
    ``row``: the rows' columns (``tag``) and common params (``base``)."""
    tag, base = row["tag"], row["base"]
    packed = pack_model(nets.xmodel)
    exported = folder / "model.xml"
    engines = baselines.build(nets.fmodel, nets.tests[0], p.float_engines, p.threads,
                              nets.calib, nets.source)
    xnor_runs = _xnor_runs(nets.xmodel, packed, nets.tests[0], p.threads, exported)
    yield from _accuracy_rows(engines, xnor_runs, nets, tag, base)

    # size of what each deploys
    xml = exported if exported.is_file() else None
    for variant, (size, what) in _sizes(nets.fmodel, t.packed, xml).items():
        if size is not None:
            yield Row("tradeoff_weights_bytes", float(size), "bytes", variant=str(variant),
                      params={**base, "what": what}, **tag)
    int8_bytes = next((e.info["model_file_bytes"] for e in engines.values()
                       if "model_file_bytes" in e.info), None)
    if int8_bytes is not None:  # the QDQ graph the int8 baselines ran
        yield Row("tradeoff_weights_bytes", float(int8_bytes), "bytes", variant="int8",
                  params={**base, "what": "the int8 QDQ ONNX file"}, **tag)

    # latency at each batch size, every deployment interleaved
    first = nets.tests[0]
    for batch in ctx.progress.track(p.batches, "batch sizes"):
        x = torch.cat([first] * (batch // first.shape[0] + 1))[:batch].contiguous()
        engines = baselines.build(nets.fmodel, x, p.float_engines, p.threads, nets.calib,
                                  nets.source)
        fns: dict[str, Callable[[], object]] = dict(baselines.timed(engines))
        for variant, (predict, _info) in _xnor_runs(nets.xmodel, packed, x, p.threads,
                                                    None).items():
            if predict is not None:
                fns[variant] = partial(predict, x)
        state = StateProbe()
        with torch.no_grad():
            times = compare(fns, threads=p.threads, rounds=p.rounds,
                            min_run_time=p.min_run_time)
        prm = {**base, "batch": batch, **state.stop().as_params()}
        for key, tm in times.items():
            own = baselines.row_params(engines, key) or _XNOR_INFO.get(key, {})
            yield Row("tradeoff_latency_ms", tm.median_ms, "ms", variant=key,
                      params={**prm, **tm.spread(), **own}, **tag)


def _accuracy_rows(engines: dict[str, Any], xnor_runs: dict[str, Any], nets: _Deployed,
                   tag: dict[str, Any], base: dict[str, Any]) -> Iterator[Row]:
    """Every deployment's accuracy on the whole test set (or why it did not run)."""
    for name, e in engines.items():
        prm = {**base, "engine": name, **e.info}
        if e.predict is None:
            yield Row("tradeoff_unavailable", 1.0, "", variant=baselines.key(name),
                      params={**prm, "reason": e.reason}, **tag)
            continue
        with torch.no_grad():
            acc = _accuracy(e.predict, nets.tests, nets.labels)
        yield Row("tradeoff_test_accuracy", acc, "%", variant=baselines.key(name),
                  params=prm, **tag)
    for variant, (predict, info) in xnor_runs.items():
        prm = {**base, **info}
        if predict is None:
            yield Row("tradeoff_unavailable", 1.0, "", variant=variant, params=prm, **tag)
            continue
        with torch.no_grad():
            acc = _accuracy(predict, nets.tests, nets.labels)
        yield Row("tradeoff_test_accuracy", acc, "%", variant=variant, params=prm, **tag)


_XNOR_INFO: dict[str, dict[str, Any]] = {
    V.XNOR: {"engine": "torch", "precision": "binary (simulated in fp32)"},
    V.XNOR_PACKED: {"engine": "xnorbench", "precision": "binary"},
    V.XNOR_OPENVINO: {"engine": "openvino", "precision": "binary"}}


def _xnor_runs(xmodel: nn.Module, packed: nn.Module, x: Tensor, threads: int,
               save_to: Path | None
               ) -> dict[str, tuple[Callable[[Tensor], object] | None, dict[str, Any]]]:
    """The XNOR network three ways, each a function of an input shaped like ``x``:
    simulated, packed, and exported to OpenVINO (written to ``save_to`` if given)."""
    from ..measure import openvino_runtime
    from ..xnor.inference.openvino_export import to_openvino

    out: dict[str, tuple[Callable[[Tensor], object] | None, dict[str, Any]]] = {
        V.XNOR: (copy.deepcopy(xmodel), _XNOR_INFO[V.XNOR]),
        V.XNOR_PACKED: (packed, _XNOR_INFO[V.XNOR_PACKED])}
    try:
        if save_to is not None:
            save_openvino(xmodel, x, save_to.parent, save_to.stem)
        compiled = openvino_runtime.compile_model(to_openvino(xmodel, x), threads)
        out[V.XNOR_OPENVINO] = (openvino_runtime.predictor(compiled),
                                _XNOR_INFO[V.XNOR_OPENVINO])
    except (InputError, RuntimeError) as exc:
        out[V.XNOR_OPENVINO] = (None, {**_XNOR_INFO[V.XNOR_OPENVINO],
                                       "reason": str(exc).splitlines()[0]})
    return out
