"""What the rewrites of a traced packed network ask of its ``torch.fx`` graph: the module
a node calls, a new submodule's name, and whether a node is a ReLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn


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
