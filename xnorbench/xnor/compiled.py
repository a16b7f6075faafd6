"""The binary conv's forward and backward as one compiled graph each: the path for
tensors the C++ operators do not take (CUDA, bfloat16).

Why: in eager torch the fused layer's elementwise work (sign, two bit planes, alpha *
sign(W), the +1 padding, the gradient rule, the straight-through mask) is a dozen small
operators per layer and pass. On a GPU each is a kernel launch and a trip through the
dispatcher, and the launches, not the arithmetic, set the training speed (measured on
an H200: XNOR ResNet-18 trained at 0.21x float's images/s through eager operators).
``torch.compile`` turns each layer's forward into the convolution plus a few fused
kernels, and its backward likewise: Triton on CUDA, C++ on the CPU, from one graph, so
the CPU tests run the code the GPU runs.

What is computed is exactly what :mod:`.functional` computes (the tests compare them):
the forward saves two bit planes of the input (``x < 0`` and ``|x| < 1``), the conv's
input is sign(x) padded with +1 (here written as a padded tensor inside the graph, where
the sign and the padding fuse into one kernel), and the backward rebuilds the signs from
the bits. Bits are in the tensor's memory order, as everywhere in :mod:`.bitops`.

If compiling fails (no compiler, an unsupported torch), each function falls back to
running the same code eagerly, once said on stderr; ``XNORBENCH_COMPILE=0`` asks for
eager from the start. :func:`mode` says which one ran.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .binarize import filter_alpha, scaled_sign_grad, sign

Shape = tuple[int, int, int, int]
RECOMPILE_LIMIT = 64


def _memory_order(t: Tensor, channels_last: bool) -> Tensor:
    """``t`` (N, C, H, W) as a 1-D tensor in its memory order."""
    return (t.permute(0, 2, 3, 1) if channels_last else t).reshape(-1)


def _from_memory_order(flat: Tensor, shape: Shape, channels_last: bool) -> Tensor:
    """The inverse of :func:`_memory_order`: (N, C, H, W) with the given layout."""
    n, c, h, w = shape
    if channels_last:
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(n, c, h, w)


def _pack(mask: Tensor) -> Tensor:
    """A 1-D bool tensor as bits: element i is bit ``i % 8`` of byte ``i // 8``."""
    pad = (-mask.numel()) % 8
    b = F.pad(mask.to(torch.uint8), (0, pad)).view(-1, 8)
    shifts = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=b.device)
    return (b * shifts).sum(1, dtype=torch.uint8)


def _unpack(bits: Tensor, n: int) -> Tensor:
    """The first ``n`` bits of ``bits`` as a 1-D bool tensor."""
    shifts = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8,
                          device=bits.device)
    return (bits.view(-1, 1) & shifts).ne(0).view(-1)[:n]


def _binary_weight(weight: Tensor, rule: str | None, dtype: torch.dtype) -> Tensor:
    wb = weight if rule is None else filter_alpha(weight) * sign(weight)
    return wb.to(dtype)


def _signs(neg: Tensor, dtype: torch.dtype, padding: tuple[int, int]) -> Tensor:
    """+-1 (-1 where ``neg``) in ``dtype``, padded with +1."""
    s = torch.where(neg, -1.0, 1.0).to(dtype)
    ph, pw = padding
    return F.pad(s, (pw, pw, ph, ph), value=1.0) if ph or pw else s


def forward_operands(x: Tensor, weight: Tensor, padding: tuple[int, int], rule: str | None,
                     channels_last: bool, bits: bool
                     ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(sign(x) padded with +1, alpha * sign(W), bits of x < 0, bits of |x| < 1): what
    the binary conv multiplies, in x's dtype (bfloat16 under autocast), and what its
    backward keeps; without ``bits`` (evaluation) the two planes are None.

    ``rule=None``: ``weight`` is already binarized (the BinOp path)."""
    neg = x < 0
    s = _signs(neg, x.dtype, padding)
    wb = _binary_weight(weight, rule, x.dtype)
    if not bits:
        return s, wb, None, None
    return (s, wb, _pack(_memory_order(neg, channels_last)),
            _pack(_memory_order(x.abs() < 1, channels_last)))


def backward_operands(neg: Tensor, weight: Tensor, shape: Shape, dtype: torch.dtype,
                      padding: tuple[int, int], rule: str | None, channels_last: bool
                      ) -> tuple[Tensor, Tensor]:
    """The forward's conv operands again, the signs rebuilt from their bits."""
    n = shape[0] * shape[1] * shape[2] * shape[3]
    neg_mask = _from_memory_order(_unpack(neg, n), shape, channels_last)
    return _signs(neg_mask, dtype, padding), _binary_weight(weight, rule, dtype)


def backward_results(gs: Tensor | None, ste: Tensor, gwb: Tensor | None, weight: Tensor,
                     shape: Shape, x_dtype: torch.dtype, padding: tuple[int, int],
                     rule: str | None, channels_last: bool
                     ) -> tuple[Tensor | None, Tensor | None]:
    """(dC/dx, dC/dW) from the conv's gradients: the padding ring cut off and
    BinActive's straight-through mask applied to the input's gradient (in x's layout
    and dtype); the weight's by ``rule`` (dC/dWt as it is for None)."""
    gx = gw = None
    if gs is not None:
        n = shape[0] * shape[1] * shape[2] * shape[3]
        ph, pw = padding
        gs = gs[:, :, ph:ph + shape[2], pw:pw + shape[3]]
        mask = _from_memory_order(_unpack(ste, n), shape, channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        gx = torch.where(mask, gs, 0.0).to(x_dtype).contiguous(memory_format=fmt)
    if gwb is not None:
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
            # of this path can be counted on a CPU (harness.timing.launched_ops)
            self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True,
                                          options={"cpp.enable_kernel_profile": True})
        try:
            return self.compiled(*args)
        except Exception as exc:  # the compiler's failure, not the computation's:
            out = self.fn(*args)  # the same call eagerly raises if the inputs are wrong
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print(f"xnorbench: torch.compile of {self.fn.__name__} failed ({self.failed}); "
                  "running it eagerly (slower, the same values)", file=sys.stderr,
                  flush=True)
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
