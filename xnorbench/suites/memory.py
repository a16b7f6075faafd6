"""Suite ``memory``: what packed 1-bit storage saves, counted and measured.

For each model: the per-layer summary (parameters by bit width, memory, MACs by
precision) and its totals; the bytes of the packed file written by ``save_packed`` next
to the float32 ``state_dict`` file; peak runtime memory of inference and of a training
step, each in a fresh subprocess; the bytes a training step keeps for backward, per
layer (float vs XNOR: where training memory goes); and the paper's Fig. 4(a) figure for
ResNet-18 stored beside ours.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..db import Row
from ..measure.memprobe import measure
from ..measure.saved import training_step_saved
from ..measure.summary import summarize
from ..runs import options as o
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import SuiteContext, register
from ..variants import TRAINING_STEPS
from ..variants import Variant as V
from ..xnor import save_packed
from ..xnor.networks import model_spec, models
from ..xnor.networks.binarize import BinarizeWarning
from ..xnor.networks.models import input_shape, models_ok, native_dataset

OPTIONS = (
    Opt("model", "strs", ["resnet18", "lenet5", "nin"], "Comma-separated: resnet18, lenet5, "
        "nin, resnet18-imagenet, torchvision:NAME (untrained, binarized by "
        "xnorbench.binarize; 3x224x224 input, or 3x32x32 with torchvision:NAME:cifar) or "
        "module.path:function (your factory returning an nn.Module).",
        param="models", check=models_ok, noun="model"),
    Opt("batch", "int", 64, "Batch of the runtime-memory probes.", check=o.positive),
    Opt("runtime", "bool", True, "Also measure runtime peaks (subprocesses)."),
    Opt("device", "device", "auto", "Where to compute: auto picks cuda if present.",
        param=None),
    Opt("seed", "int", 0, "Random seed (recorded).", param=None, check=o.seed_ok),
)


@dataclass(frozen=True)
class MemoryParams(SuiteParams):
    """The networks measured and the batch of the runtime probes (if ``runtime``)."""

    models: tuple[str, ...] = ("resnet18", "lenet5", "nin")
    batch: int = 64
    runtime: bool = True


MIB = 1024 * 1024


def file_sizes(name: str) -> tuple[int, int]:
    """(packed file bytes, float32 state_dict file bytes) for ``name`` as XNOR."""
    torch.manual_seed(0)
    model = models.build(name, binary=True)
    with tempfile.TemporaryDirectory() as tmp:
        packed = save_packed(model, Path(tmp) / "m.xnb")
        fp = Path(tmp) / "m.pt"
        torch.save(models.build(name, binary=False).state_dict(), fp)
        return packed, fp.stat().st_size


@register("memory", "Model size packed vs float32 (counted, files) and runtime peaks.",
          MemoryParams, options=OPTIONS,
          doc="Packed vs float32 size (counted per layer, and as files) and runtime memory "
              "peaks.")
def run_memory(ctx: SuiteContext, p: MemoryParams) -> Iterator[Row]:
    for name in ctx.progress.track(p.models, "models"):
        tag: dict[str, Any] = {"dataset": native_dataset(name), "model": name}
        s = summarize(models.build(name, binary=True), input_shape(name))
        for layer in s.layers:
            yield Row("layer_memory_kib", layer.memory_bytes / 1024, "KiB", variant="xnor",
                      params={"layer": layer.name, "kind": layer.kind,
                              "input_bits": layer.input_bits,
                              "output_shape": list(layer.output_shape),
                              "params_1bit": layer.params_1bit,
                              "params_32bit": layer.params_32bit,
                              "macs_binary": layer.macs_binary, "macs_float": layer.macs_float},
                      **tag)
        counts = {"params_1bit": s.params_1bit, "params_32bit": s.params_32bit,
                  "buffers_32bit": s.buffers_32bit, "macs_binary": s.macs_binary,
                  "macs_float": s.macs_float}
        yield Row("packed_model_mib", s.packed_bytes / MIB, "MiB", variant="xnor",
                  params=counts, **tag)
        yield Row("float32_model_mib", s.float32_bytes / MIB, "MiB", variant="float",
                  params=counts, **tag)
        yield Row("compression", s.compression, "x", variant="xnor", params=counts, **tag)
        yield Row("binary_mac_share", 100 * s.binary_mac_share, "%", variant="xnor",
                  params=counts, **tag)
        yield Row("network_theoretical_speedup", s.theoretical_speedup, "x", variant="xnor",
                  params={**counts, "note": "the paper's estimate for the whole network: "
                          "binary MACs at 1/64, one float operation per binary output"},
                  **tag)
        if model_spec.is_spec(name):
            yield _binarize_row(name, tag)
        packed_file, float_file = file_sizes(name)
        yield Row("packed_file_bytes", packed_file, "B", variant="xnor", **tag)
        yield Row("float32_file_bytes", float_file, "B", variant="float", **tag)
        yield Row("file_compression", float_file / packed_file, "x", variant="xnor", **tag)
        if name == "resnet18":
            yield Row("paper_fig4a_float_mb", 100.0, "MB", variant="float",
                      params={"source": "Rastegari et al. 2016, Fig. 4(a): ResNet-18 "
                              "(ImageNet) in double precision"}, **tag)
            yield Row("paper_fig4a_binary_mb", 1.5, "MB", variant="xnor",
                      params={"source": "Rastegari et al. 2016, Fig. 4(a)"}, **tag)
        yield from _saved_rows(name, p.batch, ctx.device, tag)
        if not p.runtime:
            continue
        device = ctx.device
        cases = [(V.FLOAT, "inference"), (V.XNOR, "inference"), (V.FLOAT, "train"),
                 (V.XNOR_FUSED, "train"), (V.XNOR_BINOP, "train")]
        if device == "cpu":
            cases.insert(2, (V.XNOR_PACKED, "inference"))
        for variant, mode in ctx.progress.track(cases, f"{name} runtime memory"):
            m = measure(name, variant, mode, p.batch, device)
            note = ""
            if variant == V.XNOR_FUSED:
                note = "fused path: bits kept for backward, weights binarized on the fly"
            elif variant == V.XNOR_BINOP:
                note = ("the port's BinOp workflow: a saved copy of every latent weight "
                        "beside the binarized one")
            prm = {"mode": mode, "batch": p.batch, "device": device, "note": note,
                   "base_rss_mib": m["base_rss_bytes"] / MIB}
            yield Row(f"{mode}_peak_rss_mib", m["peak_rss_bytes"] / MIB, "MiB",
                      variant=variant, params=prm, **tag)
            yield Row(f"{mode}_rss_increase_mib",
                      (m["peak_rss_bytes"] - m["base_rss_bytes"]) / MIB, "MiB",
                      variant=variant, params=prm, **tag)
            if "cuda_max_allocated_bytes" in m:
                yield Row(f"{mode}_cuda_max_allocated_mib", m["cuda_max_allocated_bytes"] / MIB,
                          "MiB", variant=variant, params=prm, **tag)
                yield Row(f"{mode}_cuda_max_reserved_mib", m["cuda_max_reserved_bytes"] / MIB,
                          "MiB", variant=variant, params=prm, **tag)


def _binarize_row(name: str, tag: dict[str, Any]) -> Row:
    """What :func:`binarize` did to a spec's network: per conv/linear layer binarized or
    kept float (and why), which binary layers take their sign before a non-negative
    activation, and which still see an input of one sign (checked on a calibration
    batch of 2 random samples)."""
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(2, *input_shape(name), generator=gen)
    with warnings.catch_warnings():  # said in the row instead
        warnings.simplefilter("ignore", BinarizeWarning)
        report = model_spec.binarize_spec(name, calibration=batch).report
    return Row("binarized_layers", len(report.binarized), "layers", variant="xnor",
               params={"layers": len(report.layers), "binarized": report.binarized,
                       "kept_float": {d.name: d.why for d in report.layers
                                      if not d.binarized},
                       "rewired": {d.name: d.rewired for d in report.layers if d.rewired},
                       "one_sign": {d.name: d.one_sign for d in report.layers if d.one_sign}},
               **tag)


def _saved_rows(name: str, batch: int, device: str, tag: dict[str, Any]) -> Iterator[Row]:
    """Bytes one training step keeps for backward: in total and per layer, per variant."""
    prm = {"batch": batch, "device": device}
    for variant in TRAINING_STEPS:
        per_unit = training_step_saved(name, variant, batch, device)
        yield Row("train_saved_activation_mib", sum(per_unit.values()) / MIB, "MiB",
                  variant=variant, params={**prm, "note": "tensors saved for backward, "
                                           "each storage once, parameters excluded"}, **tag)
        if variant == V.XNOR_BINOP:
            continue
        for unit, nbytes in per_unit.items():
            yield Row("layer_saved_activation_kib", nbytes / 1024, "KiB", variant=variant,
                      params={**prm, "layer": unit}, **tag)
