"""Bit-packed storage of binarized weights: 1 bit per weight plus a float alpha per filter.

Bit convention (shared with the kernels): bit 1 means -1, bit 0 means +1, so the value
``sign(0) = +1`` packs to 0 and zero padding bits stand for +1. Bits are packed
little-endian within each byte, filter by filter (row-major over the flattened filter).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .bitops import alphas
from .layers import binary_layers
from .models import build

FORMAT = "xnorbench-packed-v1"
MAGIC = b"XNORBENCH-PACKED"
"""A packed file is ``MAGIC sha256=<hex of the rest>\\n`` then the torch payload (files
without the line, from before it existed, still load, unverified)."""
_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_signs(x: Tensor) -> Tensor:
    """Pack the signs of ``x`` (any shape, flattened per first dim) to uint8 bits.

    Returns ``(x.shape[0], ceil(n / 8))`` uint8 with bit 1 where ``x < 0``.
    """
    rows = x.reshape(x.shape[0], -1)
    n = rows.shape[1]
    pad = (-n) % 8
    bits = (rows < 0).to(torch.uint8)
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.reshape(rows.shape[0], -1, 8) * _BIT_WEIGHTS.to(x.device)
    return bits.sum(dim=2, dtype=torch.uint8)


def unpack_signs(packed: Tensor, shape: tuple[int, ...], dtype=torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs`: +-1 values of ``shape``."""
    n = 1
    for s in shape[1:]:
        n *= s
    bits = (packed.unsqueeze(-1) & _BIT_WEIGHTS.to(packed.device)) != 0
    bits = bits.reshape(packed.shape[0], -1)[:, :n]
    values = torch.ones(bits.shape, dtype=dtype, device=packed.device)
    values[bits] = -1.0
    return values.reshape(shape)


@dataclass(frozen=True)
class PackedSizes:
    """Three honest sizes of one model (bytes)."""

    packed_bytes: int        # 1 bit per binary weight + alphas + every float tensor
    float32_bytes: int       # the same model with every tensor at float32
    binary_weights: int      # number of 1-bit weights
    float_values: int        # number of values kept at 32 bits


def _binary_weight_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, _ in binary_layers(model)}


def packed_sizes(model: nn.Module) -> PackedSizes:
    """Counted sizes of ``model`` in packed form vs float32, state_dict by state_dict."""
    bin_names = _binary_weight_names(model)
    packed = f32 = n_bin = n_float = 0
    for name, t in model.state_dict().items():
        if name in bin_names:
            per_filter = t[0].numel()
            packed += t.shape[0] * ((per_filter + 7) // 8) + 4 * t.shape[0]
            n_bin += t.numel()
            n_float += t.shape[0]
        else:
            packed += t.numel() * t.element_size()
            n_float += t.numel()
        f32 += t.numel() * 4
    return PackedSizes(packed, f32, n_bin, n_float)


def save_packed(model: nn.Module, path: str | os.PathLike) -> int:
    """Write ``model`` with binarized weights at 1 bit each; returns the file's bytes.

    The model must come from :mod:`xnorbench.xnor.models` (it records how to rebuild
    itself). Binary weights are stored as bits + alpha computed from the current
    latent weights, i.e. exactly what the layer uses in eval mode.
    """
    spec = getattr(model, "xnorbench_spec", None)
    if spec is None:
        raise ValueError("save_packed needs a model built by xnorbench.xnor.models")
    bin_names = _binary_weight_names(model)
    floats: dict[str, Tensor] = {}
    binary: dict[str, dict[str, object]] = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if name in bin_names:
            binary[name] = {"bits": pack_signs(t), "alpha": alphas(t.float()).clone(),
                            "shape": tuple(t.shape)}
        else:
            floats[name] = t.clone()
    payload = {"format": FORMAT, "spec": spec, "float": floats, "binary": binary}
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    data = MAGIC + f" sha256={hashlib.sha256(body).hexdigest()}\n".encode() + body
    Path(path).write_bytes(data)
    return len(data)


def _read_verified(path: Path) -> bytes:
    """The torch payload of a packed file, its checksum verified; one-line errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the packed model file ({exc.strerror})") from None
    if not data:
        raise ValueError(f"{path}: empty file, not a packed model")
    if not data.startswith(MAGIC):  # written before files carried a checksum
        return data
    header, sep, body = data.partition(b"\n")
    want = header[len(MAGIC):].strip().decode(errors="replace").removeprefix("sha256=")
    if not sep or hashlib.sha256(body).hexdigest() != want:
        raise ValueError(f"{path}: the packed model file is damaged or truncated (its "
                         "checksum does not match)")
    return body


def load_packed(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_packed`; its binary weights are alpha*sign.

    The XNOR layers of the returned model are marked as already binarized, so they use
    the stored alpha and signs exactly (for inference; train a fresh model instead).
    """
    body = _read_verified(Path(path))
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's zip / unpickling errors carry no file name
        raise ValueError(f"{path}: not a readable packed model file ({type(exc).__name__})"
                         ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an xnorbench packed model file")
    spec = payload["spec"]
    model = build(spec["name"], **spec["kwargs"])
    state = dict(payload["float"])
    for name, entry in payload["binary"].items():
        shape = tuple(entry["shape"])
        signs = unpack_signs(entry["bits"], shape)
        alpha = entry["alpha"].reshape(-1, *([1] * (len(shape) - 1)))
        state[name] = alpha * signs
    model.load_state_dict(state)
    for _, layer in binary_layers(model):
        layer.weight_is_binarized = True
    return model
