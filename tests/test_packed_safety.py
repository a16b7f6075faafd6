"""Packed kernels and packed files: every valid tensor is safe, every damaged file is named.

* a packed weight at an odd (not 64-byte aligned) offset gives the same result on every
  build (the AVX2 kernel loads weight blocks with aligned instructions);
* the sign is taken in the input's own precision (float64 -1e-300 is negative), and the
  packed and simulated layers agree on float64 and bfloat16 inputs;
* a packed file carries a checksum: a flipped byte, a truncation or an empty file is
  refused with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import binary_layer, kernels_of
from xnorbench.xnor import XNORConv2d, load_packed, save_packed
from xnorbench.xnor.inference.packed_layers import PackedXNORConv2d
from xnorbench.xnor.kernels import load_kernels
from xnorbench.xnor.networks import models


@pytest.mark.parametrize("build", ["native", "avx2", "portable"])
def test_unaligned_packed_weight_is_safe(build):
    k = kernels_of(build)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 6, 6, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g)
    wp = k.pack_weight(w)
    odd = torch.empty(wp.numel() + 1, dtype=torch.long)[1:].view(wp.shape)
    odd.copy_(wp)
    assert odd.data_ptr() % 32 != 0
    on = [binary_layer(k, w_, torch.ones(64), 64, 64, 3, 1, 1) for w_ in (odd, wp)]
    assert torch.equal(k.xnor_conv2d(on[0], x, None, True), k.xnor_conv2d(on[1], x, None, True))


def test_sign_is_taken_in_the_input_precision():
    k = load_kernels()
    x = torch.full((1, 64, 3, 3), 1.0, dtype=torch.float64)
    x[0, 5, 1, 1] = -1e-300  # rounds to -0.0 in float32, which would count as +1
    w = torch.ones(8, 64, 1, 1)
    layer = binary_layer(k, k.pack_weight(w), torch.ones(8), 64, 8, 1)
    out = k.xnor_conv2d(layer, x, None, True)
    assert out[0, 0, 1, 1] == 62 and out[0, 0, 0, 0] == 64
    with pytest.raises(RuntimeError, match="floating-point"):
        k.xnor_conv2d(layer, x.long(), None, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_packed_and_simulated_layers_agree_on_other_dtypes(dtype):
    torch.manual_seed(2)
    layer = XNORConv2d(16, 8, 3, padding=1).to(dtype).eval()
    layer.bn.running_mean.normal_()
    packed = PackedXNORConv2d.from_layer(layer)
    x = torch.randn(2, 16, 5, 5).to(dtype)
    with torch.no_grad():
        sim, got = layer(x), packed(x)
    assert got.dtype == sim.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got, sim, rtol=tol, atol=tol)


def _saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "m.xnb"
    save_packed(models.build("lenet5", binary=True), path)
    return path


def test_packed_file_round_trips_with_its_checksum(tmp_path: Path):
    path = _saved(tmp_path)
    assert path.read_bytes().startswith(b"XNORBENCH-PACKED sha256=")
    load_packed(path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_packed_file_is_refused_by_name(tmp_path: Path, damage):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a model at all")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        load_packed(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
