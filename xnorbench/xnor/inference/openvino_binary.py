"""One binary layer as OpenVINO operators, computing what the packed kernel computes: the
sign of its input as a 2-level ``FakeQuantize`` at the packed layer's thresholds, and
``BinaryConvolution`` (mode ``xnor-popcount``, padding +1) on a ``u1`` constant of the
weights' signs, then alpha and bias. The exporter (:mod:`.openvino_export`) writes every
binary layer of a network with it; the sweep times it as OpenVINO's binary peer of our
kernel (:mod:`xnorbench.measure.openvino_runtime`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

INSTALL = "OpenVINO is not installed (pip install 'xnorbench[openvino]')"
FLT_MIN = float(np.finfo(np.float32).tiny)


def openvino() -> Any:
    """The ``openvino`` module, or a RuntimeError saying how to install it."""
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeError(INSTALL) from None
    return ov


def opset13() -> Any:
    """OpenVINO's opset 13 (what the exporter writes), once OpenVINO is known installed."""
    openvino()
    import openvino.opset13 as ops
    return ops


def opset1() -> Any:
    """OpenVINO's opset 1: ``FakeQuantize``, ``BinaryConvolution`` and ``MaxPool``."""
    import openvino.opset1 as ops1
    return ops1


def u1_weights(signs: Tensor) -> Any:
    """A ``u1`` constant of ``signs >= 0`` (1 = +1), shape of ``signs``, its bits packed
    little-endian within each byte: the order OpenVINO's ``BinaryConvolution`` reads."""
    ov, ops = openvino(), opset13()
    bits = (signs >= 0).reshape(-1).numpy().astype(np.uint8)
    tensor = ov.Tensor(ov.Type.u1, list(signs.shape))
    buf = np.frombuffer(tensor.data, dtype=np.uint8)
    np.copyto(buf, np.packbits(bits, bitorder="little")[: buf.size])
    return ops.constant(tensor)


def sign_levels(thresh: Tensor, flip: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(threshold, low, high) per channel of a 2-level FakeQuantize computing the packed
    layer's sign: 1 (+1) exactly where the kernel packs +1 (``x >= t``, or ``x <= t`` on a
    flipped channel), 0 (-1) elsewhere. Infinite thresholds (a BatchNorm scale of 0)
    stay infinite: OpenVINO compares them as IEEE floats do, as the kernel does."""
    t = thresh.detach().double().numpy().astype(np.float32)
    flipped = flip.numpy().astype(bool)
    below = np.nextafter(t, np.float32(-np.inf))
    # a subnormal threshold may be flushed to 0 by the runtime: the smallest normal float
    # keeps x = 0 on its side (0 >= 0 is +1) without the flush changing it
    below = np.where((below != 0) & (np.abs(below) < FLT_MIN),
                     np.where(below < 0, -FLT_MIN, 0.0), below).astype(np.float32)
    t_fq = np.where(flipped, t, below).astype(np.float32)
    low = np.where(flipped, 1.0, 0.0).astype(np.float32)
    return t_fq, low, (1.0 - low).astype(np.float32)


CHANNEL_MULTIPLE = 8
"""OpenVINO's CPU ``BinaryConvolution`` (2026.4) computes the last byte of a pixel's
packed channels wrongly when the channel count is not a multiple of 8 (off by those
channels' share; with 3 channels it fails to compile). Such a layer gets +1 channels
appended to its input and its filters up to the next multiple: each adds exactly
``+1 * +1`` per filter tap, padding included, subtracted again as a constant."""


def binary_conv_node(x: Any, signs: Tensor, thresh: Tensor, flip: Tensor,
                     stride: tuple[int, int], padding: tuple[int, int],
                     alpha: Tensor | None = None, bias: Tensor | None = None) -> Any:
    """sign(x) against the threshold, ``BinaryConvolution`` with ``signs`` (+1 padding),
    then ``* alpha + bias`` per filter (the exact +-1 dot products when both are None)."""
    ops = opset13()
    oc, c, kh, kw = signs.shape
    t, low, high = sign_levels(thresh, flip)
    extra = -c % CHANNEL_MULTIPLE
    if extra:
        x = ops.pad(x, np.array([0, 0, 0, 0], dtype=np.int64),
                    np.array([0, extra, 0, 0], dtype=np.int64), "constant",
                    np.float32(1.0))
        t = np.concatenate([t, np.full(extra, -np.inf, dtype=np.float32)])
        low = np.concatenate([low, np.zeros(extra, dtype=np.float32)])
        high = np.concatenate([high, np.ones(extra, dtype=np.float32)])
        signs = torch.cat([signs, torch.ones(oc, extra, kh, kw)], 1)
    shape = [1, c + extra, 1, 1]
    tc = ops.constant(t.reshape(shape))
    fq = opset1().fake_quantize(x, tc, tc, ops.constant(low.reshape(shape)),
                                 ops.constant(high.reshape(shape)), 2)
    (ph, pw) = padding
    out = opset1().binary_convolution(fq, u1_weights(signs), list(stride), [ph, pw],
                                       [ph, pw], [1, 1], "xnor-popcount", 1.0)
    if extra:
        out = ops.subtract(out, ops.constant(np.float32(extra * kh * kw)))
    per_filter = [1, oc, 1, 1]
    if alpha is not None:
        out = ops.multiply(out, ops.constant(alpha.detach().float().numpy().reshape(
            per_filter)))
    if bias is not None:
        out = ops.add(out, ops.constant(bias.detach().float().numpy().reshape(per_filter)))
    return out
