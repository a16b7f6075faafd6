"""A trained XNOR network as an OpenVINO model: its binary layers on OpenVINO's own
XNOR-popcount convolution (``BinaryConvolution``), so it runs on a maintained runtime
outside this harness.

Each binary layer becomes what the packed network computes, op for op:

* the sign of its input as a 2-level ``FakeQuantize`` whose per-channel threshold is the
  packed layer's (the eval BatchNorm folded in, :func:`.packed.bn_thresholds`):
  ``x <= t`` gives the low level, so a channel whose sign is +1 from ``t`` on (``x >= t``)
  gets the float just below ``t`` as its threshold, and a channel whose BatchNorm scale is
  negative (+1 up to ``t``) gets ``t`` itself with the levels swapped;
* ``BinaryConvolution`` (mode ``xnor-popcount``, padding +1: sign(0) = +1, as here) on a
  ``u1`` constant of the weights' signs, packed in little-endian bit order (a ``u1``
  constant made from 0/1 values comes out in the other order and computes a wrong
  convolution, silently);
* the result times alpha per filter, plus the bias and the block's shortcut.

The float layers around them (first conv, pools, BatchNorm, classifier, ...) are
converted one module at a time from a ``torch.fx`` trace, in-place operations with their
aliasing semantics. What cannot be exported (a layer type with no converter here, the
paper's input scaling K) is refused in one line naming the layer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from ..layers.modules import XNORConv2d, XNORLinear
from ..sign.bitops import binarize_weight
from .openvino_binary import binary_conv_node, openvino, opset1, opset13
from .packed_layers import (
    PackedBlocks,
    PackedPreActBlock,
    PackedXNORConv2d,
    PackedXNORLinear,
    pack_model,
)


class ExportError(InputError):
    """A network (or one of its layers) that cannot be written as an OpenVINO model."""


def _const(t: Tensor) -> Any:
    return opset13().constant(t.detach().float().cpu().numpy())


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Tracer(fx.Tracer):
    """torch's leaves, and the packed layers, blocks and chains of blocks, whose forward
    reads tensors' dtypes and memory formats (not traceable, and converted whole)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (PackedXNORConv2d, PackedXNORLinear, PackedPreActBlock,
                              PackedBlocks)) or super().is_leaf_module(m, qualname)


class _Exporter:
    """Converts one packed network, module by module; ``signs`` maps each packed layer's
    name to the signs of its weights (from the XNOR network it was packed from)."""

    def __init__(self, signs: dict[str, Tensor]) -> None:
        self.ops = opset13()
        self.signs = signs

    def module(self, m: nn.Module, args: list[Any], name: str, kwargs: dict | None = None
               ) -> Any:
        conv = _MODULES.get(type(m))
        if conv is not None:
            return conv(self, m, args, name)
        if isinstance(m, PackedXNORConv2d):
            return self.packed_conv(m, args[0], name)
        if isinstance(m, PackedXNORLinear):
            return self.packed_linear(m, args[0], name)
        if isinstance(m, PackedPreActBlock):
            x = args[0]
            out = self.module(m.unit2, [self.module(m.unit1, [x], f"{name}.unit1")],
                              f"{name}.unit2")
            return self.ops.add(out, self.module(m.shortcut, [x], f"{name}.shortcut"))
        if isinstance(m, PackedBlocks):  # its blocks one after the other
            x = args[0]
            for i, block in enumerate(m):
                x = self.module(block, [x], f"{name}.{i}")
            return x
        if type(m).forward is nn.Module.forward:
            raise ExportError(f"layer '{name}' ({type(m).__name__}) has no forward")
        if _is_torch_leaf(m):
            raise ExportError(f"layer '{name or type(m).__name__}' ({type(m).__name__}) "
                              "has no OpenVINO converter here")
        return self.graph(m, args, name)

    def graph(self, m: nn.Module, args: list[Any], name: str) -> Any:
        """``m`` traced with torch.fx and each node converted; an in-place operation
        makes its input name the result too, as reading it after the write would."""
        try:
            g = _Tracer().trace(m)
        except Exception as exc:
            raise ExportError(f"layer '{name or type(m).__name__}' cannot be traced: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
        subs = dict(m.named_modules())
        env: dict[fx.Node, Any] = {}
        inputs = iter(args)
        result = None

        def val(a: Any) -> Any:
            if isinstance(a, fx.Node):
                return env[a]
            if isinstance(a, (list, tuple)):
                return type(a)(val(v) for v in a)
            return a

        for node in g.nodes:
            where = f"{name}.{node.target}" if name else str(node.target)
            if node.op == "placeholder":
                env[node] = next(inputs)
            elif node.op == "call_module":
                sub = subs[str(node.target)]
                env[node] = self.module(sub, [val(a) for a in node.args], where)
                if getattr(sub, "inplace", False) and isinstance(node.args[0], fx.Node) \
                        and not isinstance(sub, (PackedPreActBlock, PackedBlocks)):
                    env[node.args[0]] = env[node]
            elif node.op in ("call_function", "call_method"):
                env[node] = self.function(node, [val(a) for a in node.args],
                                          {k: val(v) for k, v in node.kwargs.items()}, name)
                if _writes_in_place(node) and isinstance(node.args[0], fx.Node):
                    env[node.args[0]] = env[node]
            elif node.op == "output":
                result = val(node.args[0])
            else:
                raise ExportError(f"'{where}' ({node.op}) has no OpenVINO converter here")
        return result

    def function(self, node: fx.Node, args: list[Any], kwargs: dict[str, Any], name: str
                 ) -> Any:
        ops, target = self.ops, node.target
        label = target if isinstance(target, str) else getattr(target, "__name__", target)
        if target in (operator.add, operator.iadd, torch.add, "add", "add_"):
            if "alpha" in kwargs or not all(_is_node(a) for a in args[:2]):
                raise ExportError(f"'{name}': {label} of a constant or with alpha has no "
                                  "converter here")
            return ops.add(args[0], args[1])
        if target in (F.relu, torch.relu, "relu", "relu_"):
            return ops.relu(args[0])
        if target in ("clone", "contiguous"):
            return args[0]
        if target in (torch.flatten, "flatten"):
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            return _flatten(args[0], start, end, name)
        if target is F.adaptive_avg_pool2d:
            return _adaptive_avg(args[0], args[1] if len(args) > 1 else
                                 kwargs["output_size"], name)
        if target is torch.cat:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            return ops.concat(list(args[0]), dim)
        raise ExportError(f"'{name}' calls {label}, which has no OpenVINO converter here")

    def packed_conv(self, m: PackedXNORConv2d, x: Any, name: str) -> Any:
        if m.scale_input:
            raise ExportError(f"layer '{name}' uses the paper's input scaling K, which "
                              "BinaryConvolution cannot compute")
        try:
            return binary_conv_node(x, self.signs[name], m.thresh, m.flip, m.stride,
                                    m.padding, m.alpha, m.bias)
        except ExportError as exc:
            raise ExportError(f"layer '{name}': {exc}") from None

    def packed_linear(self, m: PackedXNORLinear, x: Any, name: str) -> Any:
        ops = self.ops
        signs = self.signs[name].reshape(m.out_features, m.in_features, 1, 1)
        rank = x.get_output_partial_shape(0).rank.get_length()
        if not m.flatten_input and rank != 2:
            raise ExportError(f"layer '{name}' takes vectors along the last dimension of "
                              f"a {rank}-D input; only 2-D inputs are exported")
        rows = ops.reshape(x, ops.constant(np.array([0, -1, 1, 1], dtype=np.int64)), True)
        try:
            out = binary_conv_node(rows, signs, m.thresh, m.flip, (1, 1), (0, 0), m.alpha,
                                   m.bias)
        except ExportError as exc:
            raise ExportError(f"layer '{name}': {exc}") from None
        return ops.reshape(out, ops.constant(np.array([0, -1], dtype=np.int64)), True)


def _is_node(a: Any) -> bool:
    return hasattr(a, "get_partial_shape") or hasattr(a, "get_output_partial_shape")


def _writes_in_place(node: fx.Node) -> bool:
    t = node.target
    if isinstance(t, str):
        return t.endswith("_") and not t.endswith("__")
    return t is operator.iadd or bool(node.kwargs.get("inplace"))


def _is_torch_leaf(m: nn.Module) -> bool:
    return m.__module__.startswith("torch.nn") and not isinstance(
        m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def _flatten(x: Any, start: int, end: int, name: str) -> Any:
    ops = opset13()
    rank = x.get_output_partial_shape(0).rank.get_length()
    start, end = start % rank, end % rank
    if end != rank - 1:
        raise ExportError(f"'{name}': flatten up to a dimension before the last has no "
                          "converter here")
    return ops.reshape(x, ops.constant(np.array([0] * start + [-1], dtype=np.int64)), True)


def _adaptive_avg(x: Any, size: Any, name: str) -> Any:
    oh, ow = _pair(size) if size is not None and not (
        isinstance(size, tuple) and None in size) else (0, 0)
    if oh <= 0:
        raise ExportError(f"'{name}': adaptive pooling to {size} has no converter here")
    ops = opset13()
    if (oh, ow) == (1, 1):
        return ops.reduce_mean(x, ops.constant(np.array([2, 3], dtype=np.int64)), True)
    return ops.adaptive_avg_pool(x, ops.constant(np.array([oh, ow], dtype=np.int64)))


def _conv2d(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.Conv2d)
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise ExportError(f"layer '{name}': padding {m.padding!r} ({m.padding_mode}) has "
                          "no converter here")
    ops, (ph, pw) = e.ops, _pair(m.padding)
    pads, stride, dil = [ph, pw], list(_pair(m.stride)), list(_pair(m.dilation))
    w = m.weight.detach().float()
    if m.groups == 1:
        out = ops.convolution(args[0], _const(w), stride, pads, pads, dil)
    else:
        g = m.groups
        wg = w.reshape(g, w.shape[0] // g, *w.shape[1:])
        out = ops.group_convolution(args[0], _const(wg), stride, pads, pads, dil)
    if m.bias is not None:
        out = ops.add(out, _const(m.bias.reshape(1, -1, 1, 1)))
    return out


def _batch_norm(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    if m.running_mean is None or m.running_var is None:
        raise ExportError(f"layer '{name}': a BatchNorm without running statistics has no "
                          "fixed inference form")
    c = m.running_mean.shape[0]
    gamma = m.weight if m.weight is not None else torch.ones(c)
    beta = m.bias if m.bias is not None else torch.zeros(c)
    return e.ops.batch_norm_inference(args[0], _const(gamma), _const(beta),
                                      _const(m.running_mean), _const(m.running_var),
                                      float(m.eps))


def _max_pool(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.MaxPool2d)
    if _pair(m.dilation) != (1, 1) or m.return_indices:
        raise ExportError(f"layer '{name}': a dilated max-pool or one returning indices "
                          "has no converter here")
    k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
    return opset1().max_pool(args[0], list(s), list(p), list(p), list(k),
                              "ceil" if m.ceil_mode else "floor")


def _avg_pool(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.AvgPool2d)
    if m.divisor_override:
        raise ExportError(f"layer '{name}': divisor_override has no converter here")
    k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
    return e.ops.avg_pool(args[0], list(s), list(p), list(p), list(k),
                          not m.count_include_pad, "ceil" if m.ceil_mode else "floor")


def _linear(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.Linear)
    out = e.ops.matmul(args[0], _const(m.weight), False, True)
    return out if m.bias is None else e.ops.add(out, _const(m.bias))


def _flatten_module(e: _Exporter, m: nn.Module, args: list[Any], name: str) -> Any:
    assert isinstance(m, nn.Flatten)
    return _flatten(args[0], m.start_dim, m.end_dim, name)


_MODULES: dict[type, Callable[[_Exporter, Any, list[Any], str], Any]] = {
    nn.Conv2d: _conv2d, nn.BatchNorm2d: _batch_norm, nn.BatchNorm1d: _batch_norm,
    nn.ReLU: lambda e, m, a, n: e.ops.relu(a[0]),
    nn.ReLU6: lambda e, m, a, n: e.ops.clamp(a[0], 0.0, 6.0),
    nn.MaxPool2d: _max_pool, nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool2d: lambda e, m, a, n: _adaptive_avg(a[0], m.output_size, n),
    nn.Linear: _linear, nn.Flatten: _flatten_module,
    nn.Identity: lambda e, m, a, n: a[0], nn.Dropout: lambda e, m, a, n: a[0]}


def weight_signs(model: nn.Module) -> dict[str, Tensor]:
    """Each XNOR layer's name and the signs of its binarized weight (alpha * sign(W),
    as the layer uses it in eval mode)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (XNORConv2d, XNORLinear)):
            with torch.no_grad():
                # alpha * sign(W) is a fixed point: a loaded (binarized) weight too
                out[name] = binarize_weight(m.weight.detach().float().cpu())
    return out


def to_openvino(model: nn.Module, example: Tensor) -> Any:
    """``model`` (an XNOR network, trained or loaded with ``load_packed``) as an
    ``ov.Model`` for inputs shaped like ``example``: binary layers on
    ``BinaryConvolution``, the rest as the float ops they are. The shape is static (the CPU
    plugin's ``BinaryConvolution`` refuses dynamic ones); ``ov_model.reshape([N, ...])``
    before compiling runs another batch size. Raises :class:`ExportError` naming a layer
    it cannot write."""
    ov, ops = openvino(), opset13()
    model = model.float().cpu().eval()
    packed = pack_model(model, fuse_graph=False)
    x = ops.parameter(ov.PartialShape(list(example.shape)), ov.Type.f32, name="x")
    out = _Exporter(weight_signs(model)).module(packed, [x], "")
    if not _is_node(out):
        raise ExportError("the network's output is not a single tensor")
    result = ops.result(out)
    result.get_output_tensor(0).set_names({"y"})
    return ov.Model([result], [x], "xnorbench_xnor")


def save_openvino(model: nn.Module, example: Tensor, folder: str | Path,
                  name: str = "model") -> Path:
    """Write :func:`to_openvino`'s model to ``folder/name.xml`` (+ ``.bin``, weights kept
    as they are: no fp16 compression of the float layers); returns the ``.xml`` path."""
    ov = openvino()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.xml"
    ov.save_model(to_openvino(model, example), str(path), compress_to_fp16=False)
    return path
