"""The gradient is wired to the optimizer: an XNOR model learns a tiny task."""

import pytest
import torch

from xnorbench.xnor import BinOp, models


def _task(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    # label = which quadrant has the largest mean: learnable, not trivial
    q = torch.stack([x[:, 0, :14, :14].mean((1, 2)), x[:, 0, :14, 14:].mean((1, 2)),
                     x[:, 0, 14:, :14].mean((1, 2)), x[:, 0, 14:, 14:].mean((1, 2))], 1)
    return x, q.argmax(1)


@pytest.mark.parametrize("use_binop", [False, True])
def test_xnor_lenet_loss_falls(use_binop):
    torch.manual_seed(0)
    x, y = _task()
    model = models.lenet5(binary=True, num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    bin_op = BinOp(model) if use_binop else None
    losses = []
    for step in range(200):
        idx = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(step))
        if bin_op:
            bin_op.binarization()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if bin_op:
            bin_op.restore()
            bin_op.updateBinaryGradWeight()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
