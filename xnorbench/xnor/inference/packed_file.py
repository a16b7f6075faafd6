"""Bit-packed storage of binarized weights: 1 bit per weight plus a float alpha per filter.

Bit convention (shared with the kernels): bit 1 means -1, bit 0 means +1, so the value
``sign(0) = +1`` packs to 0 and zero padding bits stand for +1. Bits are packed
little-endian within each byte, filter by filter (row-major over the flattened filter).

A packed file is what people pass around, so loading one never runs code it names: the
payload is read as tensors and plain data, its network is built from a registry
(xnorbench's own or torchvision's), and a ``module:function`` factory only when the caller
names it (:func:`load_packed`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import InputError, first_line
from ..layers.modules import binary_layers
from ..networks import model_spec
from ..networks.models import MODELS, build
from ..sign.bitops import alphas

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

    The model must come from :mod:`xnorbench.xnor.networks.models` (it records how to rebuild
    itself). Binary weights are stored as bits + alpha computed from the current
    latent weights, i.e. exactly what the layer uses in eval mode.
    """
    spec = getattr(model, "xnorbench_spec", None)
    if spec is None:
        raise ValueError("save_packed needs a model built by xnorbench.xnor.networks.models")
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


SPEC_KWARGS: dict[str, tuple[type, ...]] = {
    "binary": (bool,), "scale_input": (bool,), "in_channels": (int,),
    "num_classes": (int, type(None)), "grad_rule": (str,),
    "input_size": (tuple, list, type(None))}
"""What a packed file's spec may pass to the network's builder, and of which types: data
only (a file never chooses code or arguments beyond these)."""


def _spec_of(payload: dict[str, Any], path: Path, factory: str | None) -> tuple[str, dict]:
    """The network a packed file names, checked: a built-in name, a ``torchvision:``
    name from torchvision's registry, or a ``module:function`` factory only when the
    caller named that same factory; ``ValueError`` (one line, naming the file) else."""
    spec = payload.get("spec")
    name = spec.get("name") if isinstance(spec, dict) else None
    kwargs = spec.get("kwargs") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ValueError(f"{path}: not an xnorbench packed model file (no network spec)")
    for key, value in kwargs.items():
        if key not in SPEC_KWARGS or not isinstance(value, SPEC_KWARGS[key]) or (
                isinstance(value, bool) and bool not in SPEC_KWARGS[key]) or (
                isinstance(value, (tuple, list)) and not all(
                    type(v) is int for v in value)):
            raise ValueError(f"{path}: the network spec's argument {key!r} = {value!r} is "
                             "not one a packed file may give")
    if model_spec.is_factory(name):
        if factory is None:
            raise ValueError(
                f"{path}: built from the factory {name!r}, code of yours that loading would "
                f"import and run; name it to allow that: load_packed(path, factory={name!r})"
                f" (on the command line: --model {name})")
        if factory != name:
            raise ValueError(f"{path}: built from the factory {name!r}, not {factory!r}")
    elif factory is not None:
        raise ValueError(f"{path}: holds {name!r}, not the factory {factory!r}")
    try:
        if model_spec.is_spec(name):
            model_spec.check_spec(name)
        elif name not in MODELS:
            raise ValueError(f"unknown network {name!r}")
    except (InputError, ValueError) as exc:
        raise ValueError(f"{path}: {str(exc).splitlines()[0]}") from None
    return name, kwargs


def load_packed(path: str | os.PathLike, factory: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_packed`; its binary weights are alpha*sign.

    Loading never runs code the file names: the payload is read with
    ``weights_only=True`` (tensors and plain data, no pickled objects), a built-in or
    ``torchvision:`` network is built from its registry, and a ``module:function``
    factory is imported only if the caller passes that same spec as ``factory``.
    Anything else, or contents that do not fit the network, is a one-line
    ``ValueError`` naming the file.

    The XNOR layers of the returned model are marked as already binarized, so they use
    the stored alpha and signs exactly (for inference; train a fresh model instead).
    """
    path = Path(path)
    body = _read_verified(path)
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's zip / unpickling errors carry no file name
        raise ValueError(f"{path}: not a readable packed model file ({type(exc).__name__})"
                         ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an xnorbench packed model file")
    name, kwargs = _spec_of(payload, path, factory)
    try:
        model = build(name, **kwargs)
    except (InputError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot build its network {name!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    try:
        state = _state_of(payload)
        _check_fit(model.state_dict(), state)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ValueError(f"{path}: its weights do not fit the network it names ({name}): "
                         f"{first_line(exc).strip()[:200]}") from None
    for _, layer in binary_layers(model):
        layer.weight_is_binarized = True
    return model


def _check_fit(want: dict[str, Tensor], have: dict[str, Tensor]) -> None:
    """``ValueError`` saying what differs where ``have`` is not a state for ``want``'s
    network: names it lacks or adds, or the first tensor of another shape."""
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    if missing or extra:
        said = [f"{len(names)} {what} (e.g. {names[0]!r})" for names, what in (
            (missing, "missing"), (extra, "not in the network")) if names]
        raise ValueError("tensors " + ", ".join(said))
    for key, tensor in want.items():
        got = have[key]
        if not isinstance(got, Tensor) or got.shape != tensor.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ValueError(f"{key!r} is {shape}, the network's is {tuple(tensor.shape)}")


def _state_of(payload: dict[str, Any]) -> dict[str, Tensor]:
    """The state dict a payload stores: float tensors as they are, binary ones unpacked
    to alpha * sign; ``ValueError`` where an entry is not what it should be."""
    floats, binary = payload.get("float"), payload.get("binary")
    if not isinstance(floats, dict) or not isinstance(binary, dict):
        raise ValueError("no 'float' and 'binary' tables of tensors")
    state = dict(floats)
    for name, entry in binary.items():
        if not isinstance(entry, dict) or not {"bits", "alpha", "shape"} <= set(entry):
            raise ValueError(f"binary weight {name!r} is not bits, alpha and a shape")
        shape = tuple(int(v) for v in entry["shape"])
        bits, alpha = entry["bits"], entry["alpha"]
        per_filter = math.prod(shape[1:]) if len(shape) > 1 else 0
        if (len(shape) < 2 or not isinstance(bits, Tensor) or not isinstance(alpha, Tensor)
                or tuple(bits.shape) != (shape[0], (per_filter + 7) // 8)
                or alpha.numel() != shape[0]):
            raise ValueError(f"binary weight {name!r}: its bits or alphas do not fit its "
                             f"shape {shape}")
        signs = unpack_signs(bits, shape)
        state[name] = alpha.reshape(-1, *([1] * (len(shape) - 1))) * signs
    return state
