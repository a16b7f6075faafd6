"""Fusions of a packed network found on its traced graph, so a network ``binarize``
produced (torchvision's, a user's) runs like the hand-fused built-in ones.

Rewrites of the ``torch.fx`` graph, in order, each only where the value it removes is
read by nothing else (the first two, :func:`drop_identities` and :func:`drop_snapshots`,
remove calls of ``nn.Identity`` and the copy ``binarize`` takes before an in-place ReLU);
then:

1. **BatchNorm after a binary conv** folds into the conv's epilogue: ``s * (alpha * n +
   b) + (beta - s * mean)`` is the conv with ``alpha * s`` and ``s * b + beta - s * mean``
   (``s = gamma / sqrt(var + eps)``), one pass over the output instead of two.
2. **A residual added to a binary conv's output** is added in the conv's epilogue.
3. **A binary conv feeding only another binary conv** writes that conv's packed input
   (the sign of its BatchNorm, as bits) instead of a float tensor that would be read
   once and packed again: :class:`PackedPair`.
4. **A run of binary convs** becomes one call into the extension
   (:class:`~.packed_chain.PackedChain`), a ReLU on a shortcut taken in the epilogue.

A BatchNorm after the first float conv, and the head (``[BatchNorm ->] ReLU -> global
pool``), are rewritten by :mod:`.packed_float`, beside the layers they become.

The packed conv class is the caller's (``pack_model`` passes
:class:`~.packed.PackedXNORConv2d`): this module knows the layers by what they offer
(``to_bits``, ``on_bits``, ``alpha``, ``bias``, a ``residual`` argument), not by import.
The built-in networks are fused by hand (:class:`~.packed.PackedPreActBlock`); this is
the same for any graph. Folding rounds differently from BatchNorm on the output (one
multiply fewer), so outputs equal the unfused network's to float rounding. Every packed
layer stays under its own name and equals its simulated layer; the graph calls copies
(``*_bn_folded``, ``packed_pair_*``) that share their packed weights.
"""

from __future__ import annotations

import copy
import operator
from functools import partial
from typing import Any, Protocol, cast

import torch
from torch import Tensor, fx, nn

from .chain import PackedChain, StepSpec
from .float_layers import bn_affine, fold_float_batchnorms, fuse_pooled_heads
from .fx_graph import (
    Folder,
    added_module,
    called_module,
    fold_batchnorms_into,
    is_inplace_relu,
    relu_input,
)

ADDS = (operator.add, operator.iadd, torch.add)


class PackedConv(Protocol):
    """What the rewrites use of a packed binary conv."""

    fused: bool
    alpha: Tensor
    bias: Tensor | None

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor: ...

    def to_bits(self, x: Tensor, nxt: Any) -> Tensor: ...

    def on_bits(self, bits: Tensor, residual: Tensor | None = None) -> Tensor: ...


class PackedPair(nn.Module):
    """Two packed binary convs, the first writing the second's packed input (bits)."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        first, second = cast(PackedConv, self.first), cast(PackedConv, self.second)
        if x.dtype != torch.float32:  # other dtypes take BN and the sign in their own
            return second(first(x), residual=residual)
        return second.on_bits(first.to_bits(x, second), residual=residual)


def _packed(gm: fx.GraphModule, node: object, conv: type[nn.Module]) -> nn.Module | None:
    """The fused packed conv ``node`` calls (on a plain input, and called nowhere else:
    a rewrite may change the module), else None."""
    if not isinstance(node, fx.Node):
        return None
    m = called_module(gm, node)
    if isinstance(m, conv) and cast(PackedConv, m).fused and len(node.args) == 1 \
            and not node.kwargs and sum(n.op == "call_module" and n.target == node.target
                                        for n in gm.graph.nodes) == 1:
        return m
    return None


def _sole_reader_of_conv(gm: fx.GraphModule, node: fx.Node, conv_type: type[nn.Module]
                         ) -> tuple[fx.Node, nn.Module] | None:
    """(the node of ``node``'s first argument, its packed conv) where that argument is
    a packed conv's output that nothing but ``node`` reads; else None."""
    src = node.args[0] if node.args else None
    conv = _packed(gm, src, conv_type)
    if conv is None or not isinstance(src, fx.Node) or len(src.users) != 1:
        return None
    return src, conv


def _folded(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` with ``bn`` (on its output) folded into alpha and bias; it
    shares the packed weights, thresholds and input BatchNorm with ``conv``, which stays
    what it was (each packed layer equals its simulated layer, by name)."""
    out = copy.copy(conv)
    out._buffers = dict(conv._buffers)
    out._modules = dict(conv._modules)
    out._parameters = dict(conv._parameters)
    s, shift = bn_affine(bn)
    with torch.no_grad():
        layer = cast(PackedConv, conv)
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(s)
        out.alpha = (layer.alpha.double() * s).float().contiguous()
        out.bias = (s * bias + shift).float().contiguous()
    return out


def fold_batchnorms(gm: fx.GraphModule, conv_type: type[nn.Module]) -> int:
    """Rewrite 1: how many BatchNorms were folded into the binary conv before them."""

    def folder(src: fx.Node) -> Folder | None:
        conv = _packed(gm, src, conv_type)
        return None if conv is None else partial(_folded, conv)

    return fold_batchnorms_into(gm, folder)


def _call_instead(gm: fx.GraphModule, node: fx.Node, target: str, args: Any,
                  kwargs: dict[str, Any], absorbed: fx.Node) -> None:
    """A call of submodule ``target`` where ``node`` was, with ``node``'s users;
    ``node`` and the node it absorbed (now computed inside the call) are erased."""
    with gm.graph.inserting_after(node):
        call = gm.graph.call_module(target, args, kwargs)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    gm.graph.erase_node(absorbed)


def fuse_residuals(gm: fx.GraphModule, conv_type: type[nn.Module]) -> int:
    """Rewrite 2: how many additions moved into a binary conv's epilogue."""
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in ADDS or len(node.args) != 2 \
                or node.kwargs:
            continue
        for mine, other in ((0, 1), (1, 0)):
            src, res = node.args[mine], node.args[other]
            if _packed(gm, src, conv_type) is None or not isinstance(res, fx.Node) \
                    or len(src.users) != 1:
                continue
            _call_instead(gm, node, str(src.target), src.args, {"residual": res}, src)
            fused += 1
            break
    return fused


def pair_convs(gm: fx.GraphModule, conv_type: type[nn.Module]) -> int:
    """Rewrite 3: how many binary convs now hand bits to the next one."""
    pairs = 0
    for node in list(gm.graph.nodes):
        second = called_module(gm, node)
        if not isinstance(second, conv_type) or not cast(PackedConv, second).fused \
                or len(node.args) != 1 or set(node.kwargs) - {"residual"}:
            continue
        found = _sole_reader_of_conv(gm, node, conv_type)
        if found is None:
            continue
        src, first = found
        name = added_module(gm, f"packed_pair_{pairs}", PackedPair(first, second))
        _call_instead(gm, node, name, src.args, dict(node.kwargs), src)
        pairs += 1
    return pairs


def drop_snapshots(gm: fx.GraphModule) -> int:
    """Rewrite 4: how many copies taken before an in-place ReLU were dropped.

    ``binarize`` feeds a binary layer the value before a ReLU that works in place, so
    it copies it first (``clone``); once the ReLU writes a new tensor instead, the copy's
    readers read the value itself and every later reader of it reads the ReLU's output
    (what the in-place write gave them): one pass over the activation less per block."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_method" or node.target != "clone" or len(node.args) != 1 \
                or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        relus = [u for u in src.users if u is not node and is_inplace_relu(gm, u)]
        if len(relus) != 1 or order[relus[0]] < order[node]:
            continue
        relu = relus[0]
        with gm.graph.inserting_after(relu):
            fresh = gm.graph.call_function(torch.relu, (src,))
        relu.replace_all_uses_with(fresh)
        for user in list(src.users):  # after the write they read the ReLU's output
            if user not in (node, relu, fresh) and order.get(user, -1) > order[relu]:
                user.replace_input_with(src, fresh)
        gm.graph.erase_node(relu)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        dropped += 1
    return dropped


def drop_identities(gm: fx.GraphModule) -> int:
    """Rewrite 0: how many calls of ``nn.Identity`` (a CIFAR stem's max-pool, removed)
    were dropped, their readers reading the value itself."""
    dropped = 0
    for node in list(gm.graph.nodes):
        if isinstance(called_module(gm, node), nn.Identity) and len(node.args) == 1 \
                and not node.kwargs and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            dropped += 1
    return dropped


def _step_call(gm: fx.GraphModule, node: fx.Node, conv_type: type[nn.Module]) -> bool:
    """Whether ``node`` calls a fused packed conv or a pair of them, on one input
    [+ a residual]: one or two steps of a chain."""
    m = called_module(gm, node)
    convs = [m.first, m.second] if isinstance(m, PackedPair) else [m]
    return all(isinstance(c, conv_type) and cast(PackedConv, c).fused for c in convs) \
        and len(node.args) == 1 and isinstance(node.args[0], fx.Node) \
        and set(node.kwargs) <= {"residual"}


def _candidate_runs(gm: fx.GraphModule, conv_type: type[nn.Module]) -> list[list[fx.Node]]:
    """Runs of step calls, each reading only the run's first input, values the run wrote,
    or a ReLU of one of them (as its residual)."""
    runs: list[list[fx.Node]] = []
    known: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if not _step_call(gm, node, conv_type):
            continue
        res = node.kwargs.get("residual")
        base = relu_input(gm, res) or res
        if runs and node.args[0] in known and (res is None or base in known):
            runs[-1].append(node)
        elif res is None or base is node.args[0]:
            runs.append([node])
            known = {cast(fx.Node, node.args[0])}
        else:
            continue
        known.add(node)
    return runs


def _escapes(gm: fx.GraphModule, run: list[fx.Node]) -> bool:
    """Whether a value the run writes, other than its last, is read outside it (a ReLU
    of it read only as the run's residual is computed inside the run)."""
    inside = set(run)
    for value in run[:-1]:
        for user in value.users:
            if user in inside:
                continue
            if relu_input(gm, user) is None or not set(user.users) <= inside:
                return True
    return False


def _steps(gm: fx.GraphModule, run: list[fx.Node]) -> list[StepSpec]:
    """The run as chain steps over slots (0: its input; step i writes slot i + 1), on
    ``gm``'s own layers (the run's traced graph shares them)."""
    slot: dict[fx.Node, int] = {cast(fx.Node, run[0].args[0]): 0}
    steps: list[StepSpec] = []
    for node in run:
        res = node.kwargs.get("residual")
        base = relu_input(gm, res)
        r = -1 if res is None else slot[base if base is not None else cast(fx.Node, res)]
        relu, src = base is not None, slot[cast(fx.Node, node.args[0])]
        m = cast(nn.Module, called_module(gm, node))
        if isinstance(m, PackedPair):
            steps.append(StepSpec(m.first, m.second, src))
            steps.append(StepSpec(m.second, None, len(steps), r, True, relu))
        else:
            steps.append(StepSpec(m, None, src, r, False, relu))
        slot[node] = len(steps)
    return steps


def _run_graph(gm: fx.GraphModule, run: list[fx.Node]) -> fx.GraphModule:
    """The run (and the ReLUs its residuals read) as a GraphModule of its own, sharing
    ``gm``'s modules."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cast(fx.Node, run[0].args[0]): graph.placeholder("x")}
    inside = set(run)
    for node in gm.graph.nodes:
        base = relu_input(gm, node)
        if node in inside or (base in env and set(node.users) & inside):
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[run[-1]])
    return fx.GraphModule(gm, graph)


def chain_runs(gm: fx.GraphModule, conv_type: type[nn.Module]) -> int:
    """Rewrite 5: how many runs of packed binary convs (at least two calls each) now
    run as one call into the extension (:class:`~.packed_chain.PackedChain`); a ReLU
    that only feeds a run's residuals is taken in the epilogue that adds it."""
    chained = 0
    for run in _candidate_runs(gm, conv_type):
        while len(run) >= 2 and _escapes(gm, run):
            run = run[:-1]
        if len(run) < 2:
            continue
        name = added_module(gm, f"packed_chain_{chained}",
                            PackedChain(_run_graph(gm, run), _steps(gm, run)))
        with gm.graph.inserting_after(run[-1]):
            call = gm.graph.call_module(name, (run[0].args[0],))
        run[-1].replace_all_uses_with(call)
        inside = set(run)
        dead = [n for n in gm.graph.nodes if n in inside or (
            relu_input(gm, n) is not None and n.users and set(n.users) <= inside)]
        for node in reversed(dead):
            gm.graph.erase_node(node)
        chained += 1
    return chained


def fuse_packed_graph(gm: fx.GraphModule, conv_type: type[nn.Module]) -> dict[str, int]:
    """The rewrites on a packed traced network whose binary convs are ``conv_type``, in
    place; what each did."""
    done = {"identities dropped": drop_identities(gm),
            "copies before a ReLU dropped": drop_snapshots(gm),
            "batchnorms folded": fold_batchnorms(gm, conv_type),
            "batchnorms folded into a float conv": fold_float_batchnorms(gm),
            "residuals fused": fuse_residuals(gm, conv_type),
            "conv pairs on bits": pair_convs(gm, conv_type),
            "runs in one call": chain_runs(gm, conv_type),
            "pooled heads": fuse_pooled_heads(gm)}
    gm.graph.lint()
    gm.recompile()
    return done
