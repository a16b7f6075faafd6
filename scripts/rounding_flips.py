#!/usr/bin/env python3
"""Why the tests compare XNOR outputs only where the claim holds exactly, shown on any CPU.

A sign taken within float rounding of its threshold flips when another kernel path
rounds differently (an Intel Xeon's oneDNN picks other paths for a half batch than for a
whole one). This script forces that condition on the machine it runs on:

(a) one XNOR LeNet-5 SGD step (lr 0.5) with every XNOR layer's input perturbed at its
    dtype's rounding (16 eps, about a sum of 256 terms), 24 seeds: float32, the old form
    of ``test_gradient_rule_under_ddp_equals_one_process``, leaves its 2e-6 tolerance;
    float64, the new form, stays within 1e-12;
(b) a packed ResNet-50 layer against its simulated layer with a ninth of its inputs
    exactly on their sign thresholds: the old comparison fails, the new one
    (``tests/rounding.py``: such values moved away from the threshold) holds.

Usage: python scripts/rounding_flips.py   (prints one line per case, FAIL or pass)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.rounding import away_from_thresholds  # noqa: E402
from xnorbench.training.optim import make_optimizer  # noqa: E402
from xnorbench.training.recipes import Recipe  # noqa: E402
from xnorbench.training.setup import make_xnor_step  # noqa: E402
from xnorbench.xnor import models  # noqa: E402
from xnorbench.xnor.inference.packed_layers import bn_thresholds, pack_model  # noqa: E402
from xnorbench.xnor.layers.modules import BINARY_LAYERS  # noqa: E402
from xnorbench.xnor.layers.step import train_step  # noqa: E402
from xnorbench.xnor.networks.binarize import binarize  # noqa: E402


def one_step(dtype: torch.dtype, perturb: bool, seed: int) -> torch.Tensor:
    """The weights after one step; ``perturb``: each XNOR layer's input rounded
    otherwise (relative noise of 16 eps of ``dtype``)."""
    torch.manual_seed(seed)
    net = models.build("lenet5", binary=True).to(dtype)
    recipe = Recipe(lr=0.5, momentum=0.0, weight_decay=0.0, xnor_path="fused")
    opt = make_optimizer(net, recipe)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 10, (16,), generator=g)
    if perturb:
        eps = 16 * torch.finfo(dtype).eps
        for m in net.modules():
            if isinstance(m, BINARY_LAYERS):
                m.register_forward_pre_hook(lambda mod, a: (a[0] * (1 + eps * torch.randn(
                    a[0].shape, generator=g, dtype=torch.float64).to(a[0].dtype)),))
    net.eval()
    train_step(net, x, y, opt, make_xnor_step(net, "xnor", recipe))
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def main() -> None:
    torch.set_num_threads(1)
    for dtype, atol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        worst = max(float((one_step(dtype, False, s) - one_step(dtype, True, s)).abs().max())
                    for s in range(24))
        print(f"(a) {dtype}: max |weights - weights rounded otherwise| over 24 seeds = "
              f"{worst:.3g} (tolerance {atol:g}): {'FAIL' if worst > atol else 'pass'}")
    torch.manual_seed(0)
    xnor, _ = binarize(torchvision.models.resnet50(num_classes=10))
    xnor.train()
    with torch.no_grad():
        xnor(torch.randn(4, 3, 64, 64))
    xnor.eval()
    name = "layer2.0.conv2"
    layer, packed = xnor.get_submodule(name), pack_model(xnor).get_submodule(name)
    seen: dict[str, torch.Tensor] = {}
    layer.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].clone()))
    with torch.no_grad():
        xnor(torch.randn(2, 3, 64, 64))
        t, _ = bn_thresholds(layer.bn)
        on = seen["x"].clone()
        on[:, :, ::3, ::3] = t.view(1, -1, 1, 1).expand_as(on)[:, :, ::3, ::3]
        old = float((packed(on) - layer(on)).abs().max())
        moved, n = away_from_thresholds(layer, on)
        new = float((packed(moved) - layer(moved)).abs().max())
    print(f"(b) ResNet-50 {name}, a ninth of its inputs on their thresholds: old comparison "
          f"{old:.3g} ({'FAIL' if old > 1e-4 else 'pass'}), new ({n} values moved) "
          f"{new:.3g} ({'FAIL' if new > 1e-4 else 'pass'})")


if __name__ == "__main__":
    main()
