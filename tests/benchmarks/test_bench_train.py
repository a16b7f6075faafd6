"""pytest-benchmark: one training step, float vs XNOR fused vs XNOR BinOp, one thread.

    pytest tests/benchmarks/test_bench_train.py --benchmark-enable \
        --benchmark-group-by=param:name

The issue's target (XNOR fused step <= 1.15x the float step, batch 32, 1 thread) is
read from these medians or from ``xnorbench run timing`` (which stores them); the normal
test run executes each body once as a smoke test.
"""

from __future__ import annotations

import pytest
import torch

from xnorbench.xnor import BinOp, FusedXNOR
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.networks import models


@pytest.mark.parametrize("path", ["float", "xnor_fused", "xnor_binop"])
@pytest.mark.parametrize("name", ["resnet18", "nin"])
def test_bench_train_step(benchmark, name, path):
    torch.manual_seed(0)
    model = models.build(name, binary=path != "float").train()
    step = {"xnor_fused": FusedXNOR, "xnor_binop": BinOp}.get(path)
    xnor_step = step(model) if step else None
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(32, *models.INPUT_SHAPE[name])
    y = torch.randint(0, 10, (32,))
    _, loss = benchmark(train_step, model, x, y, opt, xnor_step)
    assert torch.isfinite(loss)
