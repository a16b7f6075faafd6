"""``binarize(model)``: an XNOR copy of any CNN built from standard layers.

Why a graph pass (``torch.fx``) and not a module swap: which layers may be binarized is
a question about the network's *order* (the first conv and the last linear stay float,
as in the paper), and making a binary layer useful is a question about its *input*.
In a standard conv -> BN -> ReLU network the next conv's input is non-negative, so its
sign() is +1 everywhere and the binary layer learns nothing. XNOR-Net orders a block
BN -> BinActive -> BinConv: the sign is taken where the values have both signs. The
pass therefore feeds every binarized layer from before the non-negative activations
that feed it (:mod:`.rewire`: ReLUs, clamps at zero, sigmoids, through pooling,
reshapes and concatenations), repeating the operators in between on their inputs; the
activations' own outputs still go wherever else they went (a ResNet's shortcut, for
one), and no in-place operation is changed or dropped. A layer whose input is still of
one sign is reported and warned about. Every binary layer also brings its own BatchNorm
before the sign (:class:`~.layers.XNORConv2d`), which the packed kernel folds into its
threshold. That BN alone would only move the threshold along relu(y), where every
negative y has become the same 0; taking the sign of y keeps what its negative half says.

What stays float, and why, is in the returned :class:`BinarizeReport`: the first conv and
the last linear; grouped and depthwise convs (the XNOR-popcount kernel computes dense
convolutions: ``groups == 1`` only), dilated convs, string or non-zero padding modes;
anything kept by name or type; a layer called twice; a layer whose weight is tied to a
module that stays float.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, cast

import torch
from torch import fx, nn

from ...errors import InputError, exception_line, first_line
from ..layers.modules import BINARY_LAYERS, XNORConv2d, XNORLinear
from ..sign.rules import check_grad_rule
from .rewire import Rewirer


class BinarizeError(InputError, ValueError):
    """The model cannot be binarized (not traceable, or nothing to binarize)."""


@dataclass(frozen=True)
class LayerDecision:
    """What the pass did with one conv or linear layer."""

    name: str
    kind: str
    binarized: bool
    why: str
    rewired: str = ""
    one_sign: str = ""
    """Non-empty when the layer's input has one sign (its sign() is +1 everywhere): why
    (by construction, or measured on the calibration batch binarize was given)."""

    def line(self) -> str:
        state = "binarized" if self.binarized else f"float: {self.why}"
        extra = f"; {self.rewired}" if self.rewired else ""
        warn = f"; WARNING: input of one sign, {self.one_sign}" if self.one_sign else ""
        return f"{self.name} ({self.kind}): {state}{extra}{warn}"


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

    @property
    def one_sign(self) -> list[str]:
        """Binary layers whose input has one sign: their sign() is +1 everywhere."""
        return [d.name for d in self.layers if d.one_sign]

    def __str__(self) -> str:
        head = (f"{len(self.binarized)} of {len(self.layers)} conv/linear layers binarized, "
                f"{len(self.rewired)} rewired")
        if self.one_sign:
            head += f", {len(self.one_sign)} with an input of one sign (see WARNING)"
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
        first = first_line(exc)
        raise BinarizeError(
            f"cannot trace {type(model).__name__} with torch.fx: in module {where!r} "
            f"({kind}): {first}. binarize needs a network whose forward has no "
            "data-dependent control flow; wrap such a part in a module of its own and "
            "keep it float") from None
    return BinarizedModule(model, graph, type(model).__name__)


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
    """The binary layer that replaces ``layer``: its own BN, in ``layer``'s dtype, device
    and mode, and ``layer``'s weight and bias *Parameters themselves* (not copies), so a
    weight tied between two layers stays one weight."""
    new: XNORConv2d | XNORLinear
    if isinstance(layer, nn.Conv2d):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        ph, pw = (int(p) for p in layer.padding)
        new = XNORConv2d(layer.in_channels, layer.out_channels, (kh, kw), (sh, sw), (ph, pw),
                         bias=layer.bias is not None, grad_rule=grad_rule)
    else:
        assert isinstance(layer, nn.Linear)
        new = XNORLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                         grad_rule=grad_rule, flatten_input=False)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.weight = cast(nn.Parameter, layer.weight)
    new.bias = cast("nn.Parameter | None", layer.bias)
    return new.train(layer.training)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def _refuse_lazy(model: nn.Module) -> None:
    """``BinarizeError`` for a model with lazy modules: their shapes are not known yet."""
    from torch.nn.parameter import UninitializedParameter

    for name, param in model.named_parameters():
        if isinstance(param, UninitializedParameter):
            raise BinarizeError(
                f"{type(model).__name__}: parameter {name!r} is uninitialized (a lazy module)"
                "; run one forward pass on a sample input before binarize, so every layer "
                "knows its shape")


def _ties(gm: fx.GraphModule, names: list[str]) -> dict[str, list[str]]:
    """Per conv/linear layer in ``names``: the other modules holding its weight or bias
    Parameter (a tied weight), by name."""
    holders: dict[int, list[str]] = {}
    for mod_name, module in gm.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), []).append(mod_name)
    out: dict[str, list[str]] = {}
    for name in names:
        layer = gm.get_submodule(name)
        tied = {h for p in layer.parameters(recurse=False) for h in holders[id(p)]} - {name}
        if tied:
            out[name] = sorted(tied)
    return out


def binarize(model: nn.Module, *, keep: Iterable[str] = (),
             keep_types: tuple[type[nn.Module], ...] = (), first_and_last_float: bool = True,
             grad_rule: str = "corrected", rewire: bool = True,
             calibration: torch.Tensor | None = None) -> Binarized:
    """An XNOR copy of ``model`` (``model`` itself is not changed) and what was done.

    Every ``nn.Conv2d`` and ``nn.Linear`` becomes an XNOR layer (its own BatchNorm, then
    sign(x), then the weights as alpha * sign(W) under ``grad_rule``), except: the first
    and the last of them (``first_and_last_float``), those named in ``keep`` (a module
    name or a prefix of one: ``"layer4"`` keeps everything in layer4), instances of
    ``keep_types``, those the kernel cannot run (:func:`_float_reason`), a layer called
    more than once, and a layer whose weight is tied to a module that stays float.
    ``rewire``: take each binary layer's sign before a non-negative activation that
    feeds it (:mod:`.rewire`); off, the trap this avoids is left in place (for tests and
    comparisons). ``calibration``: a batch of inputs on which each binary layer's input
    is checked for both signs (in eval mode, nothing updated); a layer whose input has
    one sign is marked in the report and warned about, as is one whose input is >= 0
    by construction.

    The copy computes what ``model`` computes wherever no layer is binarized (in-place
    operations stay as they are), keeps every module's train/eval mode, dtype and
    device, and keeps tied weights tied. A ``Linear`` binarizes each vector along the
    input's last dimension, as ``nn.Linear`` does (tokens of a 3-D input separately).
    """
    rule = check_grad_rule(grad_rule)
    _refuse_lazy(model)
    gm = _traced_copy(model)
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(
        gm.get_submodule(str(n.target)), (nn.Conv2d, nn.Linear))]
    if not nodes:
        raise BinarizeError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer "
                            "called in its forward: nothing to binarize")
    ties = _ties(gm, list(dict.fromkeys(str(n.target) for n in nodes)))
    decided = _decide(gm, nodes, ties, keep, keep_types, first_and_last_float)
    wiring = Rewirer(gm)
    report = BinarizeReport()
    for node in nodes:
        name = str(node.target)
        if any(d.name == name for d in report.layers):  # the second call of a layer
            continue
        kind = type(gm.get_submodule(name)).__name__
        if decided[name]:
            report.layers.append(LayerDecision(name, kind, False, decided[name]))
            continue
        gm.set_submodule(name, _xnor_copy(gm.get_submodule(name), rule))
        said = wiring.rewire(node) if rewire else ""
        tied = ties.get(name, [])
        why = "BN -> sign -> alpha * sign(W)" + (
            f"; weight tied to {', '.join(repr(o) for o in tied)}" if tied else "")
        report.layers.append(LayerDecision(name, kind, True, why, said,
                                           wiring.one_sign_cause(node)))
    wiring.remove_orphans()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    if calibration is not None:
        report = _calibrated(gm, report, calibration)
    for d in report.layers:
        if d.one_sign:
            warnings.warn(f"binarize: {d.name} has an input of one sign ({d.one_sign}): its "
                          "sign() is +1 everywhere and the layer learns nothing; keep it "
                          "float or move the activation", BinarizeWarning, stacklevel=2)
    return Binarized(gm, report)


def _traced_copy(model: nn.Module) -> BinarizedModule:
    """A traced deep copy of ``model`` whose modules keep their train/eval modes (tracing
    makes containers of its own)."""
    gm = trace(copy.deepcopy(model))
    modes = {name: m.training for name, m in model.named_modules()}
    for name, m in gm.named_modules():
        m.training = modes.get(name, model.training)
    return gm


def _decide(gm: fx.GraphModule, nodes: list[fx.Node], ties: dict[str, list[str]],
            keep: Iterable[str], keep_types: tuple[type[nn.Module], ...],
            first_and_last_float: bool) -> dict[str, str]:
    """Per conv/linear layer: why it stays float, or "" if it is binarized (see
    :func:`binarize`); a tied weight is binarized only if every holder of it is."""
    calls: dict[str, int] = {}
    for n in nodes:
        calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    decided: dict[str, str] = {}
    for i, node in enumerate(nodes):
        name = str(node.target)
        layer = gm.get_submodule(name)
        if first_and_last_float and i == 0:
            why = "the first layer (the paper keeps it float)"
        elif first_and_last_float and i == len(nodes) - 1:
            why = "the last layer (the paper keeps it float)"
        elif _matches(name, keep):
            why = "kept float by name"
        elif keep_types and isinstance(layer, keep_types):
            why = f"kept float by type ({type(layer).__name__})"
        elif calls[name] > 1:
            why = f"called {calls[name]} times in forward (weights shared between calls)"
        else:
            why = _float_reason(layer)
        decided[name] = why
    for name, others in ties.items():
        if not decided[name] and any(decided.get(o, "not a layer") for o in others):
            decided[name] = (f"its weight is tied to {', '.join(repr(o) for o in others)}, "
                             "which stays float (one weight cannot be both)")
    return decided


class BinarizeWarning(UserWarning):
    """A binary layer that binarize made but that cannot learn (an input of one sign)."""


def _calibrated(gm: fx.GraphModule, report: BinarizeReport,
                calibration: torch.Tensor) -> BinarizeReport:
    """``report`` with each binary layer whose input had no value below zero on
    ``calibration`` marked as having an input of one sign (eval mode, nothing updated)."""
    modes = {name: m.training for name, m in gm.named_modules()}
    gm.eval()
    try:
        shares = sign_inputs(gm, calibration)
    except Exception as exc:  # the network's own forward refused the batch
        raise BinarizeError(f"a forward pass on the calibration batch of shape "
                            f"{tuple(calibration.shape)} failed: {exception_line(exc)}") \
            from None
    finally:
        for name, m in gm.named_modules():
            m.training = modes[name]
    n = calibration.shape[0]
    out = BinarizeReport()
    for d in report.layers:
        neg = shares.get(d.name, (1.0, 0.0))[0] if d.binarized else 1.0
        if neg == 0.0 and not d.one_sign:
            d = replace(d, one_sign=f"no value below zero on a calibration batch of {n}")
        out.layers.append(d)
    return out


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
