"""``binarize(model)``: an XNOR copy of any CNN built from standard layers.

Why a graph pass (``torch.fx``) and not a module swap: which layers may be binarized is
a question about the network's *order* (the first conv and the last linear stay float,
as in the paper), and making a binary layer useful is a question about its *input*.
In a standard conv -> BN -> ReLU network the next conv's input is non-negative, so its
sign() is +1 everywhere and the binary layer learns nothing. XNOR-Net orders a block
BN -> BinActive -> BinConv: the sign is taken where the values have both signs. The
pass therefore finds, for every binarized layer, a ReLU (or ReLU6) feeding it (through
operators that keep a non-negative input non-negative: pooling, dropout, flatten,
reshape) and feeds the binary layer from the ReLU's input instead, repeating those
operators on it; the ReLU's own output still goes wherever else it went (a ResNet's
shortcut, for one). Every binary layer also brings its own BatchNorm before the sign
(:class:`~.layers.XNORConv2d`), which the packed kernel folds into its threshold. That BN
alone would only move the threshold along relu(y), where every negative y has become the
same 0; taking the sign of y keeps what its negative half says.

What stays float, and why, is in the returned :class:`BinarizeReport`: the first conv and
the last linear; grouped and depthwise convs (the XNOR-popcount kernel computes dense
convolutions: ``groups == 1`` only), dilated convs, string or non-zero padding modes;
anything kept by name or type.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from .binarize import check_grad_rule
from .layers import BINARY_LAYERS, XNORConv2d, XNORLinear

RELU_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
RELU_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.relu, torch.relu, F.relu6, F.relu_,
                                                   torch.relu_)
RELU_METHODS = ("relu", "relu_")
"""Activations whose output is >= 0 everywhere: sign() of it is +1 everywhere."""

KEEP_SIGN_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
    nn.Flatten, nn.Identity)
KEEP_SIGN_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.dropout)
KEEP_SIGN_METHODS = ("view", "reshape", "flatten", "contiguous")
"""One-input operators that keep a non-negative tensor non-negative: a ReLU's output
stays >= 0 through them, so the pass looks through them for the ReLU."""


class BinarizeError(ValueError):
    """The model cannot be binarized (not traceable, or nothing to binarize)."""


@dataclass(frozen=True)
class LayerDecision:
    """What the pass did with one conv or linear layer."""

    name: str
    kind: str
    binarized: bool
    why: str
    rewired: str = ""

    def line(self) -> str:
        state = "binarized" if self.binarized else f"float: {self.why}"
        extra = f"; {self.rewired}" if self.rewired else ""
        return f"{self.name} ({self.kind}): {state}{extra}"


@dataclass
class BinarizeReport:
    """Per conv/linear layer, in the order the network runs them: binarized or kept float,
    why, and what was rewired on its input."""

    layers: list[LayerDecision] = field(default_factory=list)

    @property
    def binarized(self) -> list[str]:
        return [d.name for d in self.layers if d.binarized]

    @property
    def kept_float(self) -> list[str]:
        return [d.name for d in self.layers if not d.binarized]

    @property
    def rewired(self) -> list[str]:
        return [d.name for d in self.layers if d.rewired]

    def __str__(self) -> str:
        head = (f"{len(self.binarized)} of {len(self.layers)} conv/linear layers binarized, "
                f"{len(self.rewired)} rewired")
        return "\n".join([head, *("  " + d.line() for d in self.layers)])


class Binarized(NamedTuple):
    """``binarize``'s result: the XNOR model (a ``torch.fx.GraphModule``) and its report."""

    model: BinarizedModule
    report: BinarizeReport


class BinarizedModule(fx.GraphModule):
    """The traced network. Unlike a plain ``GraphModule``, a deep copy keeps the
    ``xnorbench_spec`` a spec-built model carries (``pack_model`` and the trainers copy
    models; ``save_packed`` needs the spec to write a file that can be rebuilt)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> BinarizedModule:
        out = cast(BinarizedModule, super().__deepcopy__(memo))
        if hasattr(self, "xnorbench_spec"):
            setattr(out, "xnorbench_spec",  # noqa: B010
                    copy.deepcopy(self.xnorbench_spec, memo))
        return out


class _NamingTracer(fx.Tracer):
    """A tracer that knows which module it is inside, so a failure can name it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        name = self.path_of_module(m)
        self.stack.append(name)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def trace(model: nn.Module) -> BinarizedModule:
    """``model`` as a GraphModule; ``BinarizeError`` naming the module where tracing
    failed (data-dependent control flow, for one) if it cannot be traced."""
    tracer = _NamingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = tracer.stack[-1] if tracer.stack else "(top level)"
        kind = type(dict(model.named_modules()).get(where, model)).__name__
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BinarizeError(
            f"cannot trace {type(model).__name__} with torch.fx: in module {where!r} "
            f"({kind}): {first}. binarize needs a network whose forward has no "
            "data-dependent control flow; wrap such a part in a module of its own and "
            "keep it float") from None
    return BinarizedModule(model, graph, type(model).__name__)


def _is(node: fx.Node, gm: fx.GraphModule, modules: tuple[type[nn.Module], ...],
        functions: tuple[Callable[..., Any], ...], methods: Sequence[str]) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), modules)
    if node.op == "call_function":
        return node.target in functions
    if node.op == "call_method":
        return node.target in methods
    return False


def _first_input(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg if isinstance(arg, fx.Node) else None


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return repr(str(node.target))
    target = node.target
    return f"{getattr(target, '__name__', target)}()"


def _swap(old: fx.Node | None, new: fx.Node) -> Callable[[fx.Node], fx.Node]:
    """An argument map for ``node_copy``: ``old`` becomes ``new``, the rest stay."""
    return lambda n: new if n is old else n


def _rewire(gm: fx.GraphModule, node: fx.Node) -> str:
    """Feed ``node`` (a binarized layer) from before the ReLU that makes its input
    non-negative; what was done, or "" if its input has no such ReLU."""
    chain: list[fx.Node] = []
    cur = _first_input(node)
    while cur is not None and _is(cur, gm, KEEP_SIGN_MODULES, KEEP_SIGN_FUNCTIONS,
                                  KEEP_SIGN_METHODS):
        chain.append(cur)
        cur = _first_input(cur)
    if cur is None or not _is(cur, gm, RELU_MODULES, RELU_FUNCTIONS, RELU_METHODS):
        return ""
    source = _first_input(cur)
    if source is None:
        return ""
    with gm.graph.inserting_before(node):
        for op in reversed(chain):  # the same operators, on the ReLU's input
            source = gm.graph.node_copy(op, _swap(_first_input(op), source))
    node.args = (source, *node.args[1:])
    said = f"sign taken before {_describe(cur)} (its output is >= 0)"
    if chain:
        said += "; " + ", ".join(_describe(op) for op in reversed(chain)) + \
            " repeated on that input"
    return said


def _float_reason(layer: nn.Module) -> str:
    """Why the kernel cannot run this layer binary ("" if it can)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            kind = "depthwise" if layer.groups == layer.in_channels else "grouped"
            return (f"{kind} conv (groups={layer.groups}): the XNOR-popcount kernel "
                    "computes dense convolutions only")
        if tuple(layer.dilation) != (1, 1):
            return f"dilated conv (dilation={tuple(layer.dilation)}): not in the kernel"
        if isinstance(layer.padding, str):
            return f"padding={layer.padding!r}: give the padding as numbers to binarize it"
        if layer.padding_mode != "zeros":
            return f"padding_mode={layer.padding_mode!r}: the kernel pads with sign(0) = +1"
    return ""


def _xnor_copy(layer: nn.Module, grad_rule: str) -> nn.Module:
    """The binary layer that replaces ``layer``: its weight and bias, its own BN."""
    new: XNORConv2d | XNORLinear
    if isinstance(layer, nn.Conv2d):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        ph, pw = (int(p) for p in layer.padding)
        new = XNORConv2d(layer.in_channels, layer.out_channels, (kh, kw), (sh, sw), (ph, pw),
                         bias=layer.bias is not None, grad_rule=grad_rule)
    else:
        assert isinstance(layer, nn.Linear)
        new = XNORLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                         grad_rule=grad_rule)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None and new.bias is not None:
            new.bias.copy_(layer.bias)
    return new.to(layer.weight.device)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def binarize(model: nn.Module, *, keep: Iterable[str] = (),
             keep_types: tuple[type[nn.Module], ...] = (), first_and_last_float: bool = True,
             grad_rule: str = "corrected", rewire: bool = True) -> Binarized:
    """An XNOR copy of ``model`` (``model`` itself is not changed) and what was done.

    Every ``nn.Conv2d`` and ``nn.Linear`` becomes an XNOR layer (its own BatchNorm, then
    sign(x), then the weights as alpha * sign(W) under ``grad_rule``), except: the first
    and the last of them (``first_and_last_float``), those named in ``keep`` (a module
    name or a prefix of one: ``"layer4"`` keeps everything in layer4), instances of
    ``keep_types``, and those the kernel cannot run (:func:`_float_reason`).
    ``rewire``: take each binary layer's sign before a ReLU that feeds it (see the
    module's docstring); off, the trap this avoids is left in place (for tests and
    comparisons).
    """
    rule = check_grad_rule(grad_rule)
    gm = trace(copy.deepcopy(model))
    for m in gm.modules():  # a rewired layer reads a ReLU's input: nothing may overwrite it
        if getattr(m, "inplace", False):
            setattr(m, "inplace", False)  # noqa: B010
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
        if node.op == "call_method" and node.target == "relu_":
            node.target = "relu"
        if node.op == "call_function" and node.target in (F.relu_, torch.relu_):
            node.target = torch.relu
        if node.op == "call_function" and node.target is operator.iadd:
            node.target = operator.add
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and _is(
        n, gm, (nn.Conv2d, nn.Linear), (), ())]
    if not nodes:
        raise BinarizeError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer "
                            "called in its forward: nothing to binarize")
    calls: dict[str, int] = {}
    for n in nodes:
        calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    report = BinarizeReport()
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        name = str(node.target)
        if name in seen:
            continue
        seen.add(name)
        layer = gm.get_submodule(name)
        kind = type(layer).__name__
        why = ""
        if first_and_last_float and i == 0:
            why = "the first layer (the paper keeps it float)"
        elif first_and_last_float and i == len(nodes) - 1:
            why = "the last layer (the paper keeps it float)"
        elif _matches(name, keep):
            why = "kept float by name"
        elif keep_types and isinstance(layer, keep_types):
            why = f"kept float by type ({kind})"
        elif calls[name] > 1:
            why = f"called {calls[name]} times in forward (weights shared between calls)"
        else:
            why = _float_reason(layer)
        if why:
            report.layers.append(LayerDecision(name, kind, False, why))
            continue
        gm.set_submodule(name, _xnor_copy(layer, rule))
        said = _rewire(gm, node) if rewire else ""
        report.layers.append(LayerDecision(name, kind, True, "BN -> sign -> alpha * sign(W)",
                                           said))
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return Binarized(gm, report)


def sign_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per XNOR layer of ``model``: (share < 0, share >= 0) of its input on ``x``.

    A layer whose input is non-negative everywhere, (0, 1), is the trap this module
    avoids: its own BatchNorm can still move the sign's threshold, but only along
    relu(y), so everything y held below zero reaches the sign as one value."""
    seen: dict[str, tuple[float, float]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, BINARY_LAYERS):
            def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                neg = float((args[0] < 0).float().mean())
                seen[name] = (neg, 1.0 - neg)
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen
