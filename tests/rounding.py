"""Comparing a packed layer with its simulated layer where the claim holds exactly.

A packed layer decides each input's sign as ``x < t``, its BatchNorm folded into a
per-channel threshold ``t``; the simulated layer computes ``sign(BN(x))`` in float32. For
a value within rounding of ``t`` the two can disagree, and which values do depends on the
CPU (an Intel Xeon flipped 128 of 16384 outputs of one ResNet-50 layer that an AMD Zen 3
did not). A test therefore moves every input value that sits within a safe margin of
its threshold to twice that margin away, on the same side, and gives both layers the
moved input: then no sign can differ on any CPU, and the layers must agree to the
float rounding of their sums. The count of moved values is returned, so a test can
check it stayed a small share (moving most of the input would test nothing).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xnorbench.xnor.inference.packed_layers import bn_thresholds
from xnorbench.xnor.layers.modules import XNORLinear, linear_rows

MARGIN = 1e-4
"""Relative to the magnitudes float32 BatchNorm combines (the value, the running mean
and the threshold, which stands for the bias): about 800 float32 roundings."""


def away_from_thresholds(layer: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """``x`` with every value within the margin of its channel's sign threshold moved
    away from it, and how many were moved."""
    t, _flip = bn_thresholds(layer.bn)
    mean = layer.bn.running_mean.detach().float()
    if isinstance(layer, XNORLinear):
        rows, _ = linear_rows(x, layer.flatten_input)
        shape = (1, -1)
    else:
        rows, shape = x, (1, -1, *([1] * (x.dim() - 2)))
    t, mean = t.view(shape), mean.view(shape)
    finite_t = t.nan_to_num(posinf=0.0, neginf=0.0)
    margin = MARGIN * (rows.abs() + finite_t.abs() + 2 * mean.abs()) + 1e-30
    near = torch.isfinite(t) & ((rows - t).abs() < margin)
    side = torch.where(rows >= t, 1.0, -1.0)
    moved = torch.where(near, t + 2 * margin * side, rows)
    return moved.reshape(x.shape), int(near.sum())
