"""A per-layer model summary in the spirit of larq's ``models.summary``.

For each layer with parameters: its input precision, output shape, parameters by bit
width (1-bit binarized weights; everything else, including the per-filter alphas, at
32), memory at those widths, and multiply-accumulates by precision. Totals give the
packed size, the float32-equivalent size, the compression ratio and the share of MACs
that are binary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..xnor import XNORConv2d, XNORLinear


@dataclass
class LayerSummary:
    name: str
    kind: str
    input_bits: int
    output_shape: tuple[int, ...]
    params_1bit: int
    params_32bit: int
    macs_binary: int
    macs_float: int

    @property
    def memory_bytes(self) -> float:
        return self.params_1bit / 8 + self.params_32bit * 4

    @property
    def outputs(self) -> int:
        """Output values per sample."""
        return math.prod(self.output_shape[1:])


@dataclass
class ModelSummary:
    layers: list[LayerSummary] = field(default_factory=list)
    buffers_32bit: int = 0  # BN running statistics (needed at inference)

    @property
    def params_1bit(self) -> int:
        return sum(layer.params_1bit for layer in self.layers)

    @property
    def params_32bit(self) -> int:
        return sum(layer.params_32bit for layer in self.layers)

    @property
    def packed_bytes(self) -> float:
        """1 bit per binary weight, 4 bytes per float parameter and BN statistic."""
        return self.params_1bit / 8 + (self.params_32bit + self.buffers_32bit) * 4

    @property
    def float32_bytes(self) -> float:
        """The same model with every parameter (and statistic) at float32, no alphas."""
        alphas = sum(layer.output_shape[1] for layer in self.layers if layer.params_1bit)
        return (self.params_1bit + self.params_32bit - alphas + self.buffers_32bit) * 4

    @property
    def compression(self) -> float:
        return self.float32_bytes / self.packed_bytes

    @property
    def macs_binary(self) -> int:
        return sum(layer.macs_binary for layer in self.layers)

    @property
    def macs_float(self) -> int:
        return sum(layer.macs_float for layer in self.layers)

    @property
    def binary_mac_share(self) -> float:
        total = self.macs_binary + self.macs_float
        return self.macs_binary / total if total else 0.0

    @property
    def theoretical_speedup(self) -> float:
        """The paper's estimate (Sec. 4) for the whole network: a binary layer costs its
        MACs / 64 (64 binary operations per CPU instruction) plus one float operation
        per output (the alpha scaling), so one conv alone gives ``64 c N_W / (c N_W +
        64)``; every float MAC costs one. 1.0 for a network with no binary layer."""
        total = self.macs_binary + self.macs_float
        binary = sum(layer.macs_binary / 64 + layer.outputs for layer in self.layers
                     if layer.macs_binary)
        cost = self.macs_float + binary
        return total / cost if cost else 1.0


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, (nn.Conv2d, XNORConv2d)):
        w = module.weight
        per_out = w.shape[1] * w.shape[2] * w.shape[3]
        return int(out[0].numel() * per_out)  # per sample
    if isinstance(module, (nn.Linear, XNORLinear)):
        return int(module.weight.numel())
    return 0


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Per-layer summary for one sample of ``input_shape`` (C, H, W): every module with
    parameters of its own that the forward calls, XNOR layers as one (their BatchNorm
    included), for any model, float or binarized."""
    summary = ModelSummary()
    inside_xnor = {id(m) for x in model.modules() if isinstance(x, (XNORConv2d, XNORLinear))
                   for m in x.modules() if m is not x}
    records: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = []
    for name, m in model.named_modules():
        is_xnor = isinstance(m, (XNORConv2d, XNORLinear))
        has_own = any(True for _ in m.parameters(recurse=False))
        if not is_xnor and (id(m) in inside_xnor or not has_own):
            continue
        hooks.append(m.register_forward_hook(
            lambda mod, _inp, out, name=name: records.append((name, mod, out))))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    for name, m, out in records:
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if isinstance(m, (XNORConv2d, XNORLinear)):
            bn = sum(p.numel() for p in m.bn.parameters())
            bias = 0 if m.bias is None else m.bias.numel()
            summary.layers.append(LayerSummary(
                name, type(m).__name__, 1, tuple(out.shape), m.weight.numel(),
                bn + bias + m.weight.shape[0], _macs(m, out), 0))
        else:
            summary.layers.append(LayerSummary(
                name, type(m).__name__, 32, tuple(out.shape), 0, own, 0, _macs(m, out)))
    summary.buffers_32bit = sum(b.numel() for n, b in model.named_buffers()
                                if not n.endswith("num_batches_tracked"))
    return summary
