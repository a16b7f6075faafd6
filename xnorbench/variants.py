"""What a row measured: the network in float, or one of the forms of its XNOR version.

One vocabulary for suites, stored rows, tables and the report. Each name says which
code produced the number, because the same XNOR network is measured in four ways that
differ by an order of magnitude in speed and memory:

* ``float``: the float network (torch eager; the other baselines, any precision,
  are ``float_<engine>``, see :mod:`xnorbench.measure.baselines`).
* ``xnor``: the XNOR network *simulated* in float arithmetic: binary values (+-1 times
  alpha) through torch's float conv. What training evaluates, so what an accuracy is.
* ``xnor_packed``: the XNOR network packed to bits and run through the C++
  XNOR-popcount kernels (inference on the CPU).
* ``xnor_fused``: an XNOR training step through the fused layers (weights binarized in
  forward, the gradient rule in backward, bits kept for backward).
* ``xnor_binop``: an XNOR training step through the original port's BinOp workflow
  (binarize in place, restore, correct the gradient after backward).
* ``xnor_openvino``: binary work on OpenVINO's ``BinaryConvolution``: the sweep's peer
  of the packed kernel, and an XNOR network exported by ``xnorbench export``.

The names of the two XNOR training paths (``XNOR_PATHS``, each timed as its variant) and
of the three weight-gradient rules (``GradRule``; the compare suite labels its rows
``xnor-<rule>``) are here too: torch-free, so that declaring an option or rendering a
table never imports the maths they name (``xnor/sign/rules.py``).

Sizes of the stored network (the memory suite's packed and float32 bytes) are rows of
``xnor`` and ``float``: they describe the network, whatever runs it. Rows stored before
this vocabulary (schema version 4 and older) said ``xnor`` for the packed kernel in
timing and sweep rows, for the fused step (or, before the fused path existed, the
BinOp step) in training-step and training-memory rows, and ``xnor_simulated`` for the
simulated network in timing rows; migration ``0005`` renames them, so readers see one
vocabulary only.
"""

from __future__ import annotations

from enum import Enum


class Variant(str, Enum):
    """The things measured (see the module docstring). A member is its name wherever a
    string goes (a row's variant column, a dict key, an f-string), on every Python this
    package supports (``enum.StrEnum`` is 3.11+)."""

    FLOAT = "float"
    XNOR = "xnor"
    XNOR_PACKED = "xnor_packed"
    XNOR_FUSED = "xnor_fused"
    XNOR_BINOP = "xnor_binop"
    XNOR_OPENVINO = "xnor_openvino"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def label(self) -> str:
        """How tables and the report name it."""
        return LABELS[self]


LABELS = {Variant.FLOAT: "float", Variant.XNOR: "XNOR simulated",
          Variant.XNOR_PACKED: "XNOR packed", Variant.XNOR_FUSED: "XNOR fused",
          Variant.XNOR_BINOP: "XNOR BinOp", Variant.XNOR_OPENVINO: "XNOR on OpenVINO"}

TRAINING_STEPS = (Variant.FLOAT, Variant.XNOR_FUSED, Variant.XNOR_BINOP)
"""The ways a training step runs: float autograd and the two XNOR training paths."""

def float_engine(engine: str) -> str:
    """The variant of a float engine's rows (``float_compile``, ``float_onnxruntime``)."""
    return f"float_{engine}"


XNOR_PATHS: tuple[str, ...] = ("fused", "binop")
"""How an XNOR network trains (``--xnor-path``): the fused layers, or the original port's
BinOp workflow. A training step on each is timed as its variant (:data:`PATH_VARIANTS`)."""

PATH_VARIANTS = {"fused": Variant.XNOR_FUSED, "binop": Variant.XNOR_BINOP}


class GradRule(str, Enum):
    """The weight-gradient rules, by name (what the command line, params and rows say)
    and by code (what the C++ operators take). The C++ side has the same enum
    (``csrc/train_ops.cpp``); a test checks every name maps to the same code there, so
    the rule is passed by name and never by a tuple position. Their formulas are in
    ``xnor/sign/rules.py``."""

    corrected = "corrected"
    paper = "paper"
    reference = "reference"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {GradRule.corrected: 0, GradRule.paper: 1, GradRule.reference: 2}
GRAD_RULES: tuple[str, ...] = tuple(r.value for r in GradRule)
