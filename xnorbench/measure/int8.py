"""A float network as ONNX, and its int8 form by static post-training quantization.

What a deployer who wants int8 does with a trained float network: export it to ONNX,
calibrate activation ranges on a few hundred training images, and quantize weights per
output channel (int8) and activations per tensor (uint8) in QDQ form
(``onnxruntime.quantization.quantize_static``). ONNX Runtime runs that file as int8, and
OpenVINO reads the same file and runs it on its int8 kernels (VNNI or AMX where the CPU
has them), so both int8 engines compute the one quantized network.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

ONNX_INSTALL = "ONNX Runtime is not installed (pip install 'xnorbench[onnx]')"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and quantizer's notices (printed, warned and logged at WARNING to
    the root logger) are not the user's business."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(module: nn.Module, x: Tensor, path: Path) -> Path:
    """``module`` (eval mode) as an ONNX graph for inputs shaped like ``x``; input ``x``,
    output ``y``."""
    with _quiet(), torch.no_grad():
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    return path


def quantize(fp32: Path, int8: Path, calibration: Sequence[Tensor]) -> Path:
    """The int8 QDQ form of the ONNX graph ``fp32`` (input ``x`` of a fixed shape), its
    activation ranges calibrated on the images of ``calibration``."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        raise RuntimeError(ONNX_INSTALL) from None

    import onnx

    dims = onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim
    n = int(dims[0].dim_value) or 1

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": b.numpy()} for b in rebatch(calibration, n)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with _quiet():
        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return int8


def rebatch(calibration: Sequence[Tensor], n: int) -> list[Tensor]:
    """The calibration images in batches of ``n`` (the graph's fixed batch size): a
    partial last batch is dropped, and too few images are repeated to fill one."""
    images = torch.cat([c.detach().cpu() for c in calibration])
    if len(images) < n:
        images = images.repeat(-(-n // len(images)), *([1] * (images.dim() - 1)))
    return [images[i:i + n] for i in range(0, len(images) - n + 1, n)]


def random_calibration(x: Tensor, batches: int = 8, seed: int = 0) -> list[Tensor]:
    """Calibration batches for a network with random weights (what the timing suites
    time): normal draws shaped like ``x``, the distribution its timed input comes from."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x.shape, generator=g) for _ in range(batches)]
