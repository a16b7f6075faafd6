"""The elementwise work of the binary conv as compiled graphs: the path for tensors the
C++ operators do not take (CUDA, bfloat16).

Why: in eager torch the fused layer's elementwise work (sign, two bit planes, alpha *
sign(W), the gradient rule, the straight-through mask) is a dozen small operators per
layer and pass; on a GPU each is a kernel launch, and the launches set the training
speed (an H200 trained XNOR ResNet-18 at 0.21x float's images/s so). ``torch.compile``
fuses each layer's forward work into one graph and its backward work into two (Triton
on CUDA, C++ on the CPU, from one graph, so the CPU tests run the code the GPU runs);
the convolutions stay outside, in cuDNN or oneDNN.

What is computed is what :mod:`.functional`'s C++ path computes (the tests compare
them): the forward keeps two bit planes of the input (``x < 0`` and ``|x| < 1``), the
conv runs on sign(x) with zero padding plus the border term that makes it +1 padding
(:func:`.bitops.border_add_`), and the backward rebuilds the signs from the bits. The
graphs see the activations as flat memory-order arrays (channels-last or not), so
their kernels index one array: the first version, which wrote the padded signs in
(N, C, H, W) form, spent 86 of 120 ms of GPU time in three such kernels (H200, three
ResNet-18 steps at batch 512). Bits are in memory order, as everywhere in
:mod:`.bitops`.

If compiling fails (no compiler, an unsupported torch), each function falls back to
running the same code eagerly, once said on stderr; ``XNORBENCH_COMPILE=0`` asks for
eager from the start. :func:`mode` says which one ran.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .rules import filter_alpha, scaled_sign_grad, sign

log = logging.getLogger(__name__)

RECOMPILE_LIMIT = 64


def flat(t: Tensor) -> Tensor:
    """The 1-D memory-order view of a dense tensor (contiguous or channels-last)."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def pack_flat(mask: Tensor) -> Tensor:
    """A 1-D bool tensor as bits: element i is bit ``i % 8`` of byte ``i // 8`` (the one
    packing of the torch path, eager in :mod:`.bitops` and inside the graphs here)."""
    pad = (-mask.numel()) % 8
    b = F.pad(mask.to(torch.uint8), (0, pad)).view(-1, 8)
    shifts = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=b.device)
    return (b * shifts).sum(1, dtype=torch.uint8)


def unpack_flat(bits: Tensor, n: int) -> Tensor:
    """The first ``n`` bits of ``bits`` as a 1-D bool tensor."""
    shifts = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8,
                          device=bits.device)
    return (bits.view(-1, 1) & shifts).ne(0).view(-1)[:n]


def _binary_weight(weight: Tensor, rule: str | None, dtype: torch.dtype
                   ) -> tuple[Tensor, Tensor]:
    """(alpha * sign(W) in ``dtype``, its sum over input channels: the weight of the +1
    padding's border term)."""
    wb = (weight if rule is None else filter_alpha(weight) * sign(weight)).to(dtype)
    return wb, wb.sum(1, keepdim=True)


def forward_operands(x: Tensor, weight: Tensor, rule: str | None, bits: bool
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(sign(x), alpha * sign(W), its channel sum, bits of x < 0, bits of |x| < 1).

    ``x`` is the 1-D memory-order view of the conv's input (:func:`flat`), so every
    elementwise kernel here indexes one flat array: no layout, no padding, no index
    arithmetic (in (N, C, H, W) form with the +1 padding written out, these kernels ran
    10x slower than memory allows on an H200). The signs come back flat, in x's dtype
    (bfloat16 under autocast); the caller views them in x's layout. Without ``bits``
    (evaluation) the two planes are None. ``rule=None``: ``weight`` is already
    binarized (the BinOp path)."""
    neg = x < 0
    s = torch.where(neg, -1.0, 1.0).to(x.dtype)
    wb, wsum = _binary_weight(weight, rule, x.dtype)
    if not bits:
        return s, wb, wsum, None, None
    return s, wb, wsum, pack_flat(neg), pack_flat(x.abs() < 1)


def backward_operands(neg: Tensor, weight: Tensor, grad: Tensor, n: int, batch: int,
                      rule: str | None, border: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """The forward's signs (flat, rebuilt from their bits) and binarized weight, in the
    dtype of ``grad`` (the output's gradient, flat); with ``border``, that gradient
    summed over the batch, flat in one sample's memory order (what the border term's
    weight gradient is computed from)."""
    s = torch.where(unpack_flat(neg, n), -1.0, 1.0).to(grad.dtype)
    return s, _binary_weight(weight, rule, grad.dtype)[0], (
        grad.view(batch, -1).sum(0) if border else None)


def backward_results(gs: Tensor | None, ste: Tensor, gwb: Tensor | None,
                     g_border: Tensor | None, weight: Tensor, x_dtype: torch.dtype,
                     rule: str | None) -> tuple[Tensor | None, Tensor | None]:
    """(dC/dx flat, dC/dW): BinActive's straight-through mask on the conv's input
    gradient (``gs``, flat in x's memory order); the border term's weight gradient
    (``g_border``, the same for every input channel) added to the conv's, then the
    weight's rule (dC/dWt as it is for None)."""
    gx = gw = None
    if gs is not None:
        gx = torch.where(unpack_flat(ste, gs.numel()), gs, 0.0).to(x_dtype)
    if gwb is not None:
        if g_border is not None:
            gwb = gwb + g_border
        gwb = gwb.to(weight.dtype)
        gw = gwb if rule is None else scaled_sign_grad(weight, gwb, rule)
    return gx, gw


def center_clamp(weights: list[Tensor]) -> None:
    """The port's per-step latent-weight preparation, in place: W -= mean over dim 1,
    then clamp to [-1, 1]."""
    for w in weights:
        w.sub_(w.mean(1, keepdim=True)).clamp_(-1.0, 1.0)


class _Compiled:
    """``fn`` compiled on first use (dynamic shapes: one graph serves every layer); if
    compiling fails, ``fn`` itself from then on, said once on stderr."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled: Callable[..., Any] | None = None
        self.failed: str | None = None

    def __call__(self, *args: Any) -> Any:
        if self.failed is not None or not enabled():
            return self.fn(*args)
        if self.compiled is None:
            # one graph per (stride, padding, rule, layout, dtype): more than the default
            # 8 variants of one function in a model of many layer kinds
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
            # the CPU kernels announce themselves to the profiler, so that the launches
            # of this path can be counted on a CPU (measure.timing.launched_ops)
            self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True,
                                          options={"cpp.enable_kernel_profile": True})
        try:
            return self.compiled(*args)
        except Exception as exc:  # the compiler's failure, not the computation's:
            out = self.fn(*args)  # the same call eagerly raises if the inputs are wrong
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning("xnorbench: torch.compile of %s failed (%s); running it eagerly "
                        "(slower, the same values)", self.fn.__name__, self.failed)
            return out


def enabled() -> bool:
    """Whether the compiled graphs are used (``XNORBENCH_COMPILE=0`` turns them off)."""
    return os.environ.get("XNORBENCH_COMPILE", "1") not in ("0", "")


compiled_forward_operands = _Compiled(forward_operands)
compiled_backward_operands = _Compiled(backward_operands)
compiled_backward_results = _Compiled(backward_results)
compiled_center_clamp = _Compiled(center_clamp)
FUNCTIONS = (compiled_forward_operands, compiled_backward_operands,
             compiled_backward_results, compiled_center_clamp)


def mode() -> str:
    """``compiled``, ``eager`` (turned off) or ``eager (compile failed: ...)``."""
    if not enabled():
        return "eager"
    failed = [f"{f.fn.__name__}: {f.failed}" for f in FUNCTIONS if f.failed]
    return f"eager (compile failed: {'; '.join(failed)})" if failed else "compiled"
