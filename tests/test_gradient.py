"""The checks of docs/GRADIENT.md: autograd identity, finite differences, rule relations."""

import pytest
import torch

from xnorbench.xnor import BinOp, XNORConv2d, XNORLinear, scaled_sign, scaled_sign_grad
from xnorbench.xnor.sign.rules import sign

SHAPES = [(6, 5, 3, 3), (4, 7)]  # conv (4-D) and linear (2-D) weights


def _weights(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    # scale 1.5 puts a good share of the weights outside [-1, 1]
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5)


def _corrected_by_hand(w, g):
    """Rule 2 written out element by element, independent of the library code."""
    out = torch.empty_like(w)
    flat_w, flat_g, flat_o = w.reshape(w.shape[0], -1), g.reshape(w.shape[0], -1), \
        out.view(w.shape[0], -1)
    n = flat_w.shape[1]
    for f in range(flat_w.shape[0]):
        alpha = flat_w[f].abs().sum() / n
        s = torch.where(flat_w[f] < 0, -1.0, 1.0).double()
        total = (flat_g[f] * s).sum()
        for i in range(n):
            ste = 1.0 if abs(flat_w[f, i]) <= 1 else 0.0
            flat_o[f, i] = s[i] * total / n + flat_g[f, i] * alpha * ste
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_autograd_identity(shape):
    """alpha(W)*sign_ste(W) built from plain differentiable ops gives rule 2."""
    w = _weights(shape).requires_grad_(True)
    dims = tuple(range(1, w.dim()))
    alpha = w.abs().mean(dim=dims, keepdim=True)  # not detached
    hard = sign(w.detach())
    ste = (w.detach().abs() <= 1).double()
    sign_ste = hard + (w - w.detach()) * ste  # value sign(W), derivative 1[|W|<=1]
    wt = alpha * sign_ste
    target = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = ((wt * target).sum() + (wt ** 2).sum())
    (g_auto,) = torch.autograd.grad(loss, w)

    # dC/dWt for this loss
    g_wt = target + 2 * (alpha.detach() * hard)
    torch.testing.assert_close(g_auto, _corrected_by_hand(w.detach(), g_wt), rtol=1e-12,
                               atol=1e-12)

    w2 = w.detach().clone().requires_grad_(True)
    wt2 = scaled_sign(w2, "corrected")
    loss2 = ((wt2 * target).sum() + (wt2 ** 2).sum())
    (g_fn,) = torch.autograd.grad(loss2, w2)
    torch.testing.assert_close(g_fn, g_auto, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_finite_differences_match_first_term(shape):
    """Away from sign flips the true derivative is rule 2's first term alone."""
    w = _weights(shape, seed=3)
    w = torch.where(w.abs() < 0.05, w.sign() * 0.05 + w, w)  # keep clear of sign flips
    target = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def cost(weights):
        dims = tuple(range(1, weights.dim()))
        wt = weights.abs().mean(dim=dims, keepdim=True) * sign(weights)
        return (wt * target).sum() + (wt ** 3).sum()

    eps = 1e-6
    fd = torch.zeros_like(w)
    for idx in range(w.numel()):
        e = torch.zeros(w.numel(), dtype=torch.float64)
        e[idx] = eps
        e = e.reshape(shape)
        fd.view(-1)[idx] = (cost(w + e) - cost(w - e)) / (2 * eps)

    dims = tuple(range(1, w.dim()))
    n = w[0].numel()
    alpha = w.abs().mean(dim=dims, keepdim=True)
    s = sign(w)
    g_wt = target + 3 * (alpha * s) ** 2
    first_term = s * (g_wt * s).sum(dim=dims, keepdim=True) / n
    torch.testing.assert_close(fd, first_term, rtol=1e-6, atol=1e-7)
    # and the library's corrected rule minus its STE term is that same first term
    ste = (w.abs() <= 1).double()
    lib = scaled_sign_grad(w, g_wt, "corrected") - g_wt * alpha * ste
    torch.testing.assert_close(lib, first_term, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_rules_relations(shape):
    w = _weights(shape, seed=5)
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    corrected = scaled_sign_grad(w, g, "corrected")
    paper = scaled_sign_grad(w, g, "paper")
    reference = scaled_sign_grad(w, g, "reference")
    assert (corrected - paper).abs().max() > 1e-3
    n, c_in = w[0].numel(), w.shape[1]
    torch.testing.assert_close(reference, corrected * (1 - 1 / c_in) * n, rtol=1e-12, atol=0)
    # the paper's rule, element by element
    alpha = w.abs().reshape(w.shape[0], -1).mean(1).reshape(-1, *[1] * (w.dim() - 1))
    expected_paper = g * (1 / n + alpha * (w.abs() <= 1).double())
    torch.testing.assert_close(paper, expected_paper, rtol=1e-12, atol=0)


def test_unknown_rule_rejected():
    with pytest.raises(ValueError, match="grad_rule"):
        scaled_sign(torch.ones(2, 2), "bogus")


def _tiny_net(rule):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1),
        XNORConv2d(6, 5, 3, padding=1, grad_rule=rule),
        torch.nn.Flatten(),
        XNORLinear(5 * 6 * 6, 4, grad_rule=rule),
    ).double()
    for m in net.modules():  # spread the weights beyond [-1, 1]
        if isinstance(m, (XNORConv2d, XNORLinear)):
            m.weight.data.mul_(8)
    return net


@pytest.mark.parametrize("rule", ["corrected", "paper", "reference"])
def test_binop_matches_autograd(rule):
    """BinOp.updateBinaryGradWeight == the autograd function's gradient, per rule.

    In float64 both run the torch expressions, eagerly (``conftest.py``; here it
    matters: the compiled graphs of the GPU path compute alpha in another summation
    order, and with 3 images per BatchNorm batch a feature equal on all three normalizes
    to 0 +- rounding, whose sign then decides a binary input; the compiled path is
    tested against these expressions in test_compiled.py)."""
    from xnorbench.xnor.sign import compiled

    assert not compiled.enabled()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([0, 3, 1])

    net_a = _tiny_net(rule)
    bin_op = BinOp(net_a, grad_rule=rule)
    bin_op.binarization()
    loss = torch.nn.functional.cross_entropy(net_a(x), y)
    loss.backward()
    bin_op.restore()
    bin_op.updateBinaryGradWeight()
    latent = [m.weight.detach().clone() for m in bin_op.target_layers]
    grads_binop = [m.weight.grad.clone() for m in bin_op.target_layers]

    # autograd path on the same (centered, clamped) latent weights
    net_b = _tiny_net(rule)
    xnor_b = [m for m in net_b.modules() if isinstance(m, (XNORConv2d, XNORLinear))]
    for m, w in zip(xnor_b, latent):
        m.weight.data.copy_(w)
    loss_b = torch.nn.functional.cross_entropy(net_b(x), y)
    loss_b.backward()
    torch.testing.assert_close(loss_b, loss)
    for gb, m in zip(grads_binop, xnor_b):
        torch.testing.assert_close(gb, m.weight.grad, rtol=1e-10, atol=1e-12)
    # and the non-binary parameters agree too
    torch.testing.assert_close(net_a[0].weight.grad, net_b[0].weight.grad)


def test_binop_workflow_clamps_and_centres():
    net = _tiny_net("corrected")
    bin_op = BinOp(net)
    bin_op.binarization()
    for p in bin_op.saved_params:
        assert p.abs().max() <= 1.0
    for m in bin_op.target_layers:  # binarized in place: alpha * sign per filter
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert torch.allclose(w.abs(), w.abs()[:, :1].expand_as(w))
    bin_op.restore()
    for m, p in zip(bin_op.target_layers, bin_op.saved_params):
        assert torch.equal(m.weight.data, p)


def test_the_cpp_rules_are_the_python_rules_by_name():
    """The C++ operators take a rule's code; Python's GradRule and the C++ enum map every
    name to the same code (reordering either side alone fails here), and C++ refuses a
    name it does not know."""
    from xnorbench.variants import GradRule
    from xnorbench.xnor.kernels import train_ops

    ops = train_ops()
    assert {r.value: ops.grad_rule_code(r.value) for r in GradRule} == \
        {r.value: r.code for r in GradRule}
    with pytest.raises(RuntimeError, match="unknown gradient rule"):
        ops.grad_rule_code("bogus")


def test_fused_xnor_reads_each_layers_rule_and_never_rewrites_it():
    from xnorbench.xnor import FusedXNOR

    model = torch.nn.Sequential(XNORConv2d(3, 4, 3, grad_rule="paper"), torch.nn.Flatten())
    assert FusedXNOR(model).grad_rule == "paper"
    with pytest.raises(ValueError, match="use paper, not corrected"):
        FusedXNOR(model, "corrected")
    assert model[0].grad_rule == "paper"
