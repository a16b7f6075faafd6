"""The memory probe measures the child's own peak, not what its parent held."""

import torch

from xnorbench.measure.memprobe import measure


def test_probe_peak_ignores_a_large_parent():
    ballast = torch.ones(100_000_000)  # 400 MB resident in this (the parent) process
    ballast.add_(1)
    m = measure("lenet5", "float", "inference", 4, "cpu")
    increase = m["peak_rss_bytes"] - m["base_rss_bytes"]
    assert 0 < increase < 200 * 2**20, increase / 2**20
    del ballast


def test_fused_xnor_training_peak_is_below_float():
    """ResNet-18 keeps bits, not floats, for backward: the step's peak RSS shows it."""
    f = measure("resnet18", "float", "train", 16, "cpu")
    x = measure("resnet18", "xnor_fused", "train", 16, "cpu")
    grow = {k: m["peak_rss_bytes"] - m["base_rss_bytes"] for k, m in (("f", f), ("x", x))}
    assert grow["x"] < grow["f"], grow
