"""A per-layer model summary in the spirit of larq's ``models.summary``.

For each layer with parameters: its input precision, output shape, parameters by bit
width (1-bit binarized weights; everything else, including the per-filter alphas, at
32), memory at those widths, and multiply-accumulates by precision. Totals give the
packed size, the float32-equivalent size, the compression ratio and the share of MACs
that are binary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def _first_tensor(value: object) -> torch.Tensor | None:
    """A module's output (or input) as one tensor: the first of a tuple or list."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _macs(module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor | None) -> int:
    """Multiply-accumulates of one call for one sample: a convolution of any dimension
    (per output value, the weights of one filter), a transposed one (per input value, the
    weights it spreads), a linear layer on every vector of its input (tokens included)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or out is None:
        return 0
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 0 if inp is None else int(inp[0].numel() * math.prod(w.shape[1:]))
    if isinstance(module, (nn.modules.conv._ConvNd, XNORConv2d)):
        return int(out[0].numel() * math.prod(w.shape[1:]))
    if isinstance(module, (nn.Linear, XNORLinear)):
        return int(out[0].numel() * w.shape[1])
    return 0


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Per-layer summary for one sample of ``input_shape`` (C, H, W): every module with
    parameters of its own that the forward calls, XNOR layers as one (their BatchNorm
    included), for any model, float or binarized. A module called several times is one
    layer whose MACs are those of all its calls; a parameter shared between modules (a
    tied weight) is counted once, in the first module that holds it."""
    summary = ModelSummary()
    inside_xnor = {id(m) for x in model.modules() if isinstance(x, (XNORConv2d, XNORLinear))
                   for m in x.modules() if m is not x}
    calls: dict[str, tuple[nn.Module, torch.Tensor | None, int]] = {}
    hooks = []

    def record(name: str, mod: nn.Module, inp: tuple[object, ...], out: object) -> None:
        first = _first_tensor(out)
        macs = _macs(mod, _first_tensor(inp), first)
        if name in calls:
            seen_mod, seen_out, seen_macs = calls[name]
            calls[name] = (seen_mod, seen_out, seen_macs + macs)
        else:
            calls[name] = (mod, first, macs)

    for name, m in model.named_modules():
        is_xnor = isinstance(m, (XNORConv2d, XNORLinear))
        has_own = any(True for _ in m.parameters(recurse=False))
        if not is_xnor and (id(m) in inside_xnor or not has_own):
            continue
        hooks.append(m.register_forward_hook(
            lambda mod, inp, out, name=name: record(name, mod, inp, out)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    counted: set[int] = set()

    def fresh(params: Sequence[torch.Tensor]) -> int:
        """Values of ``params`` not counted in an earlier layer (tied weights once)."""
        n = sum(p.numel() for p in params if id(p) not in counted)
        counted.update(id(p) for p in params)
        return n

    for name, (m, out, macs) in calls.items():
        shape = tuple(out.shape) if out is not None else ()
        if isinstance(m, (XNORConv2d, XNORLinear)):
            others = [*m.bn.parameters(), *([] if m.bias is None else [m.bias])]
            ones = fresh([m.weight])
            summary.layers.append(LayerSummary(
                name, type(m).__name__, 1, shape, ones,
                fresh(others) + (m.weight.shape[0] if ones else 0), macs, 0))
        else:
            own = fresh(list(m.parameters(recurse=False)))
            summary.layers.append(LayerSummary(
                name, type(m).__name__, 32, shape, 0, own, 0, macs))
    summary.buffers_32bit = sum(b.numel() for n, b in model.named_buffers()
                                if not n.endswith("num_batches_tracked"))
    return summary
