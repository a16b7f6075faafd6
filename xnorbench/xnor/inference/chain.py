"""Runs of fused binary layers executed by one call into the extension (``LayerChain``).

Between two packed layers run from Python sit a module call, the unpacking of a dozen
attributes and a 21-argument pybind11 call: at batch 1 that is a fifth of a packed
ResNet-18's time. A chain is a list of steps over value slots (slot 0 is the run's
input, step i writes slot i + 1), each one fused layer with exactly the arguments its
Python module would pass, built on first use from the modules' own tensors (so the
chain computes the same bits and floats) and rebuilt after ``.to()``/``.float()``/...
move them. ``PackedBlocks`` (the built-in ResNets) and :class:`PackedChain` (a run that
:func:`~.packed_graph.chain_runs` found on a traced network) both run this way on float32
CPU inputs, and their own Python path on anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import Tensor, fx, nn

from ..kernels import load_kernels


class ChainLayer(Protocol):
    """What a chain reads of a packed binary conv."""

    def binary_layer(self, kern: Any) -> Any: ...


@dataclass(frozen=True)
class StepSpec:
    """One step: ``layer`` on slot ``input`` (bits where ``packed_in``) plus slot
    ``residual`` (-1: none; through a ReLU with ``relu_residual``), writing bits for
    ``next`` when given."""

    layer: nn.Module
    next: nn.Module | None
    input: int
    residual: int = -1
    packed_in: bool = False
    relu_residual: bool = False


class ChainSteps(Protocol):
    """What a :class:`LazyChain` subclass defines: its steps, or None where it cannot run
    as a chain."""

    def chain_steps(self) -> list[StepSpec] | None: ...


class LazyChain(nn.Module):
    """A module that runs as one ``LayerChain`` built lazily from the steps its subclass
    gives (:class:`ChainSteps`)."""

    _chain: Any = None

    def built_chain(self) -> Any:
        """The extension's chain (built on first use), or False where there is none."""
        if self._chain is not None:
            return self._chain
        steps = cast(ChainSteps, self).chain_steps()
        if not steps:
            self._chain = False
            return False
        kern = load_kernels()
        chain = kern.LayerChain()
        for i, s in enumerate(steps):
            nxt = None if s.next is None else cast(ChainLayer, s.next).binary_layer(kern)
            slot = chain.add(cast(ChainLayer, s.layer).binary_layer(kern), nxt, s.input,
                             s.residual, s.packed_in, s.relu_residual)
            assert slot == i + 1
        self._chain = chain
        return chain

    def chained(self, x: Tensor) -> Tensor | None:
        """The chain's output on ``x`` where it applies (float32 on the CPU), else None."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        chain = self.built_chain()
        return cast(Tensor, chain.run(x)) if chain else None

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._chain = None  # buffers may move: rebuild from the new ones
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_chain"] = None  # an extension object: rebuilt on first use
        return state


class PackedChain(LazyChain):
    """A run of packed binary convs found on a traced network, as one call.

    ``run_graph`` is the run as it was traced (a ``GraphModule`` sharing the network's
    packed layers): what inputs other than float32 on the CPU run, and what the chain is
    checked against."""

    def __init__(self, run_graph: fx.GraphModule, steps: list[StepSpec]) -> None:
        super().__init__()
        self.run_graph = run_graph
        self.steps = steps  # their layers are run_graph's (copies and pickles keep that)

    def chain_steps(self) -> list[StepSpec] | None:
        return self.steps

    def forward(self, x: Tensor) -> Tensor:
        out = self.chained(x)
        return out if out is not None else cast(Tensor, self.run_graph(x))

    def extra_repr(self) -> str:
        return f"{len(self.steps)} binary layers in one call"
