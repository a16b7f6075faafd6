"""Where a binary layer takes its sign: before the activation that would make it +1.

In a standard conv -> BN -> ReLU network the next conv's input is non-negative, so its
sign() is +1 everywhere and a binary layer there learns nothing. XNOR-Net orders a block
BN -> BinActive -> BinConv: the sign is taken where the values have both signs. For a
binary layer, :meth:`Rewirer.presign` finds the non-negative activations feeding it (a
ReLU, ReLU6, ``clamp(min=0)``, ``Hardtanh(0, 6)``, a sigmoid), through operators that
keep a non-negative tensor non-negative (pooling, dropout, reshapes, transposes, chunks)
and through ``torch.cat``, and builds the same computation on the activations' inputs;
the activations' own outputs still go wherever else they went (a ResNet's shortcut).

Why this is a module of its own: rewiring must never change what the rest of the network
computes. An in-place operation (``relu_()``, ``ReLU(inplace=True)``, ``h.add_(1)``,
``out += x``) writes into a tensor that other nodes read, so the pass never turns one into
an out-of-place one and never deletes one (``torch.fx``'s dead-code elimination would: an
in-place method's result is often not used again). Where an activation's input is written
to in place after the activation, the rewired layer reads a copy taken just before it.
Only nodes the rewiring left without a user, and that write nothing, are removed.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

NONNEG_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
NONNEG_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu, torch.relu, F.relu6, F.relu_, torch.relu_, torch.sigmoid, F.sigmoid,
    F.hardsigmoid)
NONNEG_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_")
"""Activations whose output is >= 0 everywhere (sign() of it is +1 everywhere) and that
are monotone in their input, so the input's sign says what the output could: the sign is
taken before them. ``Hardtanh``/``hardtanh`` and ``clamp``/``clamp_min`` count too when
their lower bound is >= 0 (:func:`_clamps_at_zero`)."""

KEEP_SIGN_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
    nn.Flatten, nn.Identity)
KEEP_SIGN_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.dropout, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze, torch.chunk,
    torch.split, operator.getitem)
KEEP_SIGN_METHODS = ("view", "reshape", "flatten", "contiguous", "transpose", "permute",
                     "squeeze", "unsqueeze", "chunk", "split")
"""Operators whose first input is the only tensor they read and that keep a non-negative
tensor non-negative (pooling, dropout, reshaping, moving and selecting elements)."""

CONCAT_FUNCTIONS: tuple[Callable[..., Any], ...] = (torch.cat, torch.concat, torch.stack)
"""Operators that join a list of tensors: each input fed by an activation is taken
before it."""

NONNEG_OPAQUE: tuple[Callable[..., Any], ...] = (
    torch.exp, torch.abs, torch.softmax, F.softmax, torch.sqrt, torch.square)
NONNEG_OPAQUE_METHODS = ("exp", "abs", "softmax", "sqrt", "square")
"""Operators whose output is >= 0 but whose input does not carry the sign (abs) or that
the pass does not look through: a binary layer fed by one has an input of one sign."""

INPLACE_OPERATORS: tuple[Callable[..., Any], ...] = (
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
    operator.ilshift, operator.irshift, operator.imatmul, operator.setitem)
"""Python's augmented and item assignments: on a tensor they write into it."""


def first_input(node: fx.Node) -> fx.Node | None:
    """The tensor an operator reads first (its ``input``)."""
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg if isinstance(arg, fx.Node) else None


def describe(node: fx.Node) -> str:
    """A node as a report names it: a module by its name, else the operator's name."""
    if node.op == "call_module":
        return repr(str(node.target))
    target = node.target
    return f"{getattr(target, '__name__', target)}()"


def _argument(node: fx.Node, name: str, position: int, default: Any) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[position] if len(node.args) > position else default


def _inplace_flag(node: fx.Node) -> bool:
    """Whether a call_function node asks its function for ``inplace=True``."""
    if node.kwargs.get("inplace") is True:
        return True
    try:
        bound = inspect.signature(node.target).bind_partial(  # type: ignore[arg-type]
            *node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def mutates(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` writes into a tensor it reads (an in-place operation)."""
    if node.op == "call_module":
        return getattr(gm.get_submodule(str(node.target)), "inplace", False) is True
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.startswith("__")
    if node.op == "call_function":
        if node.target in INPLACE_OPERATORS:
            return True
        name = getattr(node.target, "__name__", "")
        return (name.endswith("_") and not name.startswith("__")) or _inplace_flag(node)
    return False


_CLAMP_METHODS = ("clamp", "clamp_", "clamp_min", "clamp_min_")


def _clamps_at_zero(node: fx.Node, gm: fx.GraphModule) -> bool:
    """``clamp(min=m)``, ``clamp_min(m)``, ``Hardtanh(m, M)``, ``hardtanh(x, m, M)`` with
    a lower bound m >= 0: the output is >= 0 everywhere."""
    low: Any = None
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        low = getattr(module, "min_val", None) if isinstance(module, nn.Hardtanh) else None
    elif (node.op == "call_method" and node.target in _CLAMP_METHODS) or (
            node.op == "call_function" and node.target in (torch.clamp, torch.clamp_min)):
        low = _argument(node, "min", 1, None)
    elif node.op == "call_function" and node.target in (F.hardtanh, F.hardtanh_):
        low = _argument(node, "min_val", 1, -1.0)
    return isinstance(low, (int, float)) and not isinstance(low, bool) and low >= 0


def _is(node: fx.Node, gm: fx.GraphModule, modules: tuple[type[nn.Module], ...],
        functions: tuple[Callable[..., Any], ...], methods: tuple[str, ...]) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), modules)
    if node.op == "call_function":
        return node.target in functions
    if node.op == "call_method":
        return node.target in methods
    return False


def is_nonneg_activation(node: fx.Node, gm: fx.GraphModule) -> bool:
    """An activation whose output is >= 0 and whose input carries the sign."""
    return _is(node, gm, NONNEG_MODULES, NONNEG_FUNCTIONS, NONNEG_METHODS) or \
        _clamps_at_zero(node, gm)


def keeps_sign(node: fx.Node, gm: fx.GraphModule) -> bool:
    """A one-input operator that keeps a non-negative tensor non-negative."""
    return _is(node, gm, KEEP_SIGN_MODULES, KEEP_SIGN_FUNCTIONS, KEEP_SIGN_METHODS)


def is_concat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in CONCAT_FUNCTIONS and bool(node.args) \
        and isinstance(node.args[0], (list, tuple))


class Rewirer:
    """Rewires the binary layers of one traced graph (see the module's docstring)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.position = {n: i for i, n in enumerate(self.graph.nodes)}
        self.last_write = max((self.position[n] for n in self.graph.nodes
                               if mutates(n, gm)), default=-1)
        self.made: dict[fx.Node, tuple[fx.Node, list[fx.Node], list[fx.Node]] | None] = {}
        self.snapshots: dict[fx.Node, fx.Node] = {}
        self.bypassed: list[fx.Node] = []

    def rewire(self, layer: fx.Node) -> str:
        """Feed ``layer`` from before the activations that make its input non-negative;
        what was done, or "" if nothing feeds it such an activation."""
        inp = first_input(layer)
        if inp is None:
            return ""
        with self.graph.inserting_before(layer):
            found = self.presign(inp)
        if found is None:
            return ""
        new, activations, repeated = found
        layer.args = (new, *layer.args[1:])
        self.bypassed.append(inp)
        acts = ", ".join(dict.fromkeys(describe(a) for a in activations))
        said = f"sign taken before {acts} (" + (
            "its output is >= 0)" if len(activations) == 1 else "their outputs are >= 0)")
        if repeated:
            said += "; " + ", ".join(dict.fromkeys(describe(op) for op in repeated)) + \
                " repeated on that input"
        return said

    def presign(self, node: fx.Node) -> tuple[fx.Node, list[fx.Node], list[fx.Node]] | None:
        """A node computing what ``node`` does with every non-negative activation that
        feeds it taken away, with those activations and the operators repeated; None if
        no such activation feeds it. New nodes go where the graph's insertion point is."""
        if node in self.made:
            return self.made[node]
        found: tuple[fx.Node, list[fx.Node], list[fx.Node]] | None = None
        if is_nonneg_activation(node, self.gm) and first_input(node) is not None:
            found = (self._source(node), [node], [])
        elif keeps_sign(node, self.gm) and not mutates(node, self.gm):
            inp = first_input(node)
            below = self.presign(inp) if inp is not None else None
            if below is not None:
                new = self.graph.node_copy(node, lambda n: below[0] if n is inp else n)
                found = (new, below[1], [*below[2], node])
        elif is_concat(node):
            parts = [self.presign(t) if isinstance(t, fx.Node) else None
                     for t in node.args[0]]  # type: ignore[union-attr]
            if any(p is not None for p in parts):
                swap = {t: p[0] for t, p in zip(node.args[0], parts)  # type: ignore[arg-type]
                        if p is not None}
                new = self.graph.node_copy(node, lambda n: swap.get(n, n))
                found = (new, [a for p in parts if p for a in p[1]],
                         [op for p in parts if p for op in p[2]] + [node])
        self.made[node] = found
        return found

    def _source(self, activation: fx.Node) -> fx.Node:
        """The activation's input as it was when the activation read it: the input itself,
        or a copy taken just before the activation where something writes in place at or
        after it (an in-place ReLU overwrites its own input)."""
        source = first_input(activation)
        assert source is not None
        if self.position.get(activation, len(self.position)) > self.last_write:
            return source
        if activation not in self.snapshots:
            with self.graph.inserting_before(activation):
                self.snapshots[activation] = self.graph.call_method("clone", (source,))
        return self.snapshots[activation]

    def one_sign_cause(self, layer: fx.Node) -> str:
        """Why ``layer``'s input is >= 0 by construction ("" if it need not be): the
        non-negative operator feeding it, through sign-keeping operators."""
        cur = first_input(layer)
        while cur is not None and keeps_sign(cur, self.gm):
            cur = first_input(cur)
        if cur is None:
            return ""
        if is_nonneg_activation(cur, self.gm) or _is(cur, self.gm, (), NONNEG_OPAQUE,
                                                     NONNEG_OPAQUE_METHODS):
            return f"its input comes from {describe(cur)}, whose output is >= 0"
        return ""

    def remove_orphans(self) -> None:
        """Remove what the rewiring left unused: bypassed activations and operators that
        write nothing, and an in-place activation whose input nothing else reads (its
        snapshot is then the input itself)."""
        work = list(self.bypassed)
        erased: set[fx.Node] = set()
        while work:
            node = work.pop()
            if node in erased or node.users or node.op in (
                    "placeholder", "output", "get_attr"):
                continue
            looked_through = is_nonneg_activation(node, self.gm) or keeps_sign(
                node, self.gm) or is_concat(node)
            if not looked_through:
                continue
            if mutates(node, self.gm):
                if not self._only_reader(node):
                    continue
                self._drop_snapshot(node)
            inputs = list(node.all_input_nodes)
            self.graph.erase_node(node)
            erased.add(node)
            work.extend(inputs)

    def _only_reader(self, node: fx.Node) -> bool:
        """Whether an in-place activation's input is read by nothing but it and its
        snapshot (so that nothing sees what it writes)."""
        source = first_input(node)
        snap = self.snapshots.get(node)
        return source is not None and all(u is node or u is snap for u in source.users)

    def _drop_snapshot(self, activation: fx.Node) -> None:
        """The snapshot taken before ``activation`` replaced by its input itself."""
        snap = self.snapshots.pop(activation, None)
        source = first_input(activation)
        if snap is not None and source is not None:
            snap.replace_all_uses_with(source)
            self.graph.erase_node(snap)
