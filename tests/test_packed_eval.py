"""The trained XNOR network, packed and run through the C++ kernel, classifies like the
simulated one; pack_model is right whatever state a BinOp left the layers in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xnorbench.data.datasets import load_dataset
from xnorbench.data.loader import BatchLoader
from xnorbench.training.loop import TrainingJob, evaluate, train
from xnorbench.training.optim import make_optimizer
from xnorbench.training.recipes import Recipe
from xnorbench.xnor import BinOp, binary_layers, load_packed, save_packed
from xnorbench.xnor.inference.packed_layers import pack_model
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.networks import models


def test_pack_model_after_binop_equals_the_simulated_model():
    """The issue's repro: alpha must come from the binarized weights, not W[0]."""
    torch.manual_seed(0)
    m = models.lenet5(binary=True)
    BinOp(m)
    m.eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert (pack_model(m)(x) - m(x)).abs().max() < 1e-4
    assert not any(layer.weight_is_binarized for _, layer in binary_layers(m))


def test_pack_model_in_every_binop_state_after_training_steps():
    torch.manual_seed(1)
    m = models.lenet5(binary=True, grad_rule="reference")
    bin_op = BinOp(m, "reference")
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(3):
        m.train()
        train_step(m, x, y, opt, bin_op)
    m.eval()
    with torch.no_grad():
        bin_op.binarization()  # centred, clamped, binarized in place: what eval uses
        assert all(layer.weight_is_binarized for _, layer in binary_layers(m))
        simulated = m(x)
        assert (pack_model(m)(x) - simulated).abs().max() < 1e-4
        bin_op.restore()  # latent (centred, clamped) weights back: the same network
        assert not any(layer.weight_is_binarized for _, layer in binary_layers(m))
        assert (m(x) - simulated).abs().max() < 1e-4
        assert (pack_model(m)(x) - simulated).abs().max() < 1e-4


def test_trained_packed_network_agrees_with_simulated_up_to_exact_ties(tmp_path: Path,
                                                                       mnist_dir: Path):
    bundle = load_dataset("mnist", mnist_dir)
    torch.manual_seed(0)
    model = models.lenet5(binary=True)
    recipe = Recipe(epochs=1, batch_size=16, optimizer="adam", lr=2e-3)
    opt = make_optimizer(model, recipe)
    bin_op = BinOp(model)
    loader = BatchLoader(bundle.train, 16, mean=bundle.mean, std=bundle.std, shuffle=True)
    for _ in range(4):
        for x, y in loader:
            model.train()
            train_step(model, x, y, opt, bin_op)
    test = BatchLoader(bundle.test, 64, mean=bundle.mean, std=bundle.std)
    preds: list[torch.Tensor] = []
    acc, _ = evaluate(model, test, amp=False, step=bin_op, predictions=preds)
    simulated_pred = torch.cat(preds)
    save_packed(model, tmp_path / "m.packed")
    packed = pack_model(load_packed(tmp_path / "m.packed"))
    xs = torch.cat([x for x, _ in test])
    with torch.no_grad():
        bin_op.binarization()
        model.eval()
        logits = model(xs)
        bin_op.restore()
        packed_pred = packed(xs).argmax(1)
    labels = bundle.test.labels
    packed_acc = 100.0 * float((packed_pred == labels).float().mean())
    assert acc > 20  # it learned something: the check below is not about a constant
    for i in torch.nonzero(packed_pred != simulated_pred).flatten().tolist():
        a, b = logits[i, simulated_pred[i]], logits[i, packed_pred[i]]
        assert abs(float(a - b)) <= 1e-5 * max(1.0, abs(float(a))), (i, a, b)
    ties = int((packed_pred != simulated_pred).sum())
    assert abs(packed_acc - acc) <= 100.0 * ties / len(labels)


@pytest.mark.parametrize("variant", ["xnor", "float"])
def test_train_writes_packed_rows_for_xnor_only(tmp_path: Path, mnist_dir: Path, variant):
    bundle = load_dataset("mnist", mnist_dir)
    recipe = Recipe(epochs=2, batch_size=16, optimizer="adam", lr=2e-3, seed=4)
    rows = list(train(TrainingJob(bundle, "lenet5", variant, recipe, recipe_key="k",
                                  packed_path=tmp_path / "x.packed")))
    by = {r.metric: r for r in rows if r.epoch == 2 and r.metric not in (
        "train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds",
        "train_images_per_second")}
    assert all(r.seed == 4 and r.recipe_key == "k" for r in rows)
    assert rows[-1].metric == "best_test_accuracy"
    if variant == "float":
        assert "packed_test_accuracy" not in by and not (tmp_path / "x.packed").exists()
        return
    assert by["packed_file_bytes"].value == (tmp_path / "x.packed").stat().st_size
    if by["packed_agreement"].value == 100.0:
        assert by["packed_test_accuracy"].value == by["final_test_accuracy"].value
    assert by["xnor_packed_latency_ms"].value > 0 and by["float_latency_ms"].value > 0
    assert by["packed_test_accuracy"].params["kernel_isa"]
