"""What the rewrites of a traced packed network ask of its ``torch.fx`` graph: the module
a node calls, a new submodule's name, and whether a node is a ReLU."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

Folder = Callable[[nn.BatchNorm2d], nn.Module]
"""A layer with a BatchNorm on its output folded in, made from that BatchNorm."""


def called_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def added_module(gm: fx.GraphModule, name: str, module: nn.Module) -> str:
    """``module`` added to ``gm`` under ``name`` (made unique); the name used."""
    while hasattr(gm, name):
        name += "_"
    gm.add_submodule(name, module)
    return name


def is_inplace_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = called_module(gm, node)
    return (isinstance(m, nn.ReLU) and m.inplace) or (
        node.op == "call_function" and node.target is torch.relu_) or (
        node.op == "call_method" and node.target == "relu_")


def relu_input(gm: fx.GraphModule, node: object) -> fx.Node | None:
    """The value ``node`` is a ReLU of (out of place), else None."""
    if not isinstance(node, fx.Node) or len(node.args) != 1 or node.kwargs \
            or not isinstance(node.args[0], fx.Node):
        return None
    m = called_module(gm, node)
    if (isinstance(m, nn.ReLU) and not m.inplace) or (
            node.op == "call_function" and node.target in (torch.relu, F.relu)) or (
            node.op == "call_method" and node.target == "relu"):
        return node.args[0]
    return None


def fold_batchnorms_into(gm: fx.GraphModule,
                         folder: Callable[[fx.Node], Folder | None]) -> int:
    """Every eval BatchNorm whose input is a call that nothing else reads and that
    ``folder`` can fold it into: that call now calls the folded copy
    (``<name>_bn_folded``) and the BatchNorm is gone. How many were folded."""
    folded = 0
    for node in list(gm.graph.nodes):
        bn = called_module(gm, node)
        src = node.args[0] if len(node.args) == 1 else None
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None \
                or bn.running_var is None or not isinstance(src, fx.Node) \
                or len(src.users) != 1:
            continue
        fold = folder(src)
        if fold is None:
            continue
        src.target = added_module(gm, f"{str(src.target).replace('.', '_')}_bn_folded",
                                  fold(bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    return folded
