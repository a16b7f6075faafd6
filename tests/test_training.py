"""The gradient is wired to the optimizer: an XNOR model learns a tiny task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.xnor import BinOp
from xnorbench.xnor.networks import models

runner = CliRunner()


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


def test_full_disk_while_checkpointing_leaves_no_tmp_and_the_old_checkpoint(
        tmp_path, mnist_dir, monkeypatch):
    """A checkpoint write that fails midway (ENOSPC) removes its partial .tmp, keeps the
    previous checkpoint, and says which file and why in one line."""
    import errno

    from xnorbench.data.datasets import load_dataset
    from xnorbench.training import checkpoints, loop
    from xnorbench.training.recipes import Recipe
    from xnorbench.training.setup import TrainingJob

    bundle = load_dataset("mnist", mnist_dir)
    ckpt = tmp_path / "xnor-seed0.pt"
    recipe = Recipe(epochs=2, batch_size=32, optimizer="adam", lr=1e-3)
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:  # the second epoch's checkpoint: half written, then full
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoints.torch, "save", failing_save)
    with pytest.raises(checkpoints.CheckpointError) as err:
        list(loop.train(TrainingJob(bundle, "lenet5", "xnor", recipe, checkpoint=ckpt)))
    assert str(ckpt) in str(err.value) and "No space left" in str(err.value)
    assert "\n" not in str(err.value)
    assert not ckpt.with_suffix(".tmp").exists()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # the first one, intact


def test_a_write_torch_cuts_short_says_how_much_room_is_left(tmp_path, monkeypatch):
    """torch's zip writer on a full disk says only ``unexpected pos N vs M``; the message
    says what that means, in one line."""
    from xnorbench.training import checkpoints

    def cut_short(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                           "122176 vs 122072")

    monkeypatch.setattr(checkpoints.torch, "save", cut_short)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.save_checkpoint(tmp_path / "c.pt", {"a": 1})
    message = str(err.value)
    assert "unexpected pos" not in message and "MiB free" in message and "\n" not in message
    assert not (tmp_path / "c.tmp").exists()


def test_nan_loss_fails_run_naming_epoch(tmp_path: Path, mnist_dir: Path, monkeypatch):
    from xnorbench import checks

    monkeypatch.setattr(checks, "MAX_LR", 1e31)  # the cap refuses 1e30; the guard stays
    db = str(tmp_path / "nan.db")
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir),
                              "--variant", "float", "--lr", "1e30", "--batch-size", "16",
                              "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "non-finite training loss" in res.output and "epoch 1" in res.output
    (run,) = Store.open(db).runs()
    assert run.status == "failed" and "epoch 1" in run.error


def test_same_seed_same_rows_and_command_recorded(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "rep.db")
    args = ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir), "--epochs", "2",
            "--batch-size", "16", "--device", "cpu", "--threads", "1", "--no-progress",
            "--seed", "3"]
    for _ in range(2):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    store = Store.open(db)
    a, b = sorted(store.runs(), key=lambda r: r.id)
    for metric in ("train_loss", "test_accuracy", "test_loss"):
        va = [(r.variant, r.epoch, r.value) for r in store.results([a.id], metric=metric)]
        vb = [(r.variant, r.epoch, r.value) for r in store.results([b.id], metric=metric)]
        assert va == vb, metric
    res = runner.invoke(app, ["--db", db, "runs", "show", str(a.id), "--json"])
    shown = json.loads(res.output)
    assert shown["params"]["seeds"] == [3] and shown["seed"] == 3 and shown["threads"] == 1
    assert shown["command"].startswith("xnorbench")
