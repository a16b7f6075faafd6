"""Loading a file never runs code: a checkpoint and a packed file are read as tensors and
plain data, a packed file's network is built from a registry, and a ``module:function``
factory is imported only when the caller names it (the API's ``factory=``, the command
line's ``--model``). Each payload here plants a marker file if anything runs it."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.training.checkpoints import CheckpointError, load_checkpoint
from xnorbench.xnor import load_packed, save_packed
from xnorbench.xnor.inference.packed_file import MAGIC
from xnorbench.xnor.networks import models

runner = CliRunner()


class Planted:
    """Unpickling this runs ``os.system``: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path: Path):
    """``--resume`` unpickled checkpoints with weights_only=False: this ran the shell."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "float-seed0.pt"
    torch.save({"evil": Planted(marker), "binding": {}}, path)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}: it holds more "
                                              "than tensors .* nothing in it ran"):
        load_checkpoint(path, "cpu", {"run": 1})
    assert not marker.exists()


def _rewrite(src: Path, dst: Path, change) -> Path:
    """``src``'s payload changed by ``change``, written with a valid checksum (a plain
    sha256: anyone can recompute it)."""
    body = src.read_bytes().partition(b"\n")[2]
    payload = torch.load(io.BytesIO(body), weights_only=True)
    change(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    dst.write_bytes(MAGIC + f" sha256={hashlib.sha256(body).hexdigest()}\n".encode() + body)
    return dst


@pytest.fixture()
def lenet_file(tmp_path: Path) -> Path:
    path = tmp_path / "lenet5.packed"
    save_packed(models.build("lenet5", binary=True).eval(), path)
    return path


@pytest.fixture()
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module in the working folder that writes a marker when imported."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "plantmod.py").write_text(textwrap.dedent(f'''
        open({str(marker)!r}, "w").write("imported")
        from torch import nn

        def net(num_classes=10, in_channels=1):
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * 28 * 28, 16), nn.ReLU(),
                                 nn.Linear(16, num_classes))
        net.input_shape = (1, 28, 28)
        '''))
    monkeypatch.chdir(tmp_path)
    yield marker
    sys.modules.pop("plantmod", None)


@pytest.mark.parametrize("named", ["tempfile:mkdtemp", "sys:exit", "plantmod:nope",
                                   "plantmod:net"])
def test_a_packed_file_naming_code_is_refused_unrun(tmp_path: Path, lenet_file: Path,
                                                   planted_module: Path, named: str):
    """load_packed imported and called what the file's spec named: tempfile:mkdtemp made
    a folder, sys:exit ended the program with exit 0, a module in the working folder ran."""
    evil = _rewrite(lenet_file, tmp_path / "evil.packed",
                    lambda p: p.update(spec={"name": named, "kwargs": {}}))
    before = set(tmp_path.iterdir())
    with pytest.raises(ValueError, match=f"evil.packed: built from the factory '{named}'.*"
                                         "name it to allow that"):
        load_packed(evil)
    assert not planted_module.exists() and "plantmod" not in sys.modules
    assert set(tmp_path.iterdir()) == before  # no folder made
    with pytest.raises(ValueError, match=f"built from the factory '{named}', not 'other:net'"):
        load_packed(evil, factory="other:net")
    assert not planted_module.exists()


def test_a_factory_network_loads_when_the_caller_names_it(tmp_path: Path,
                                                          planted_module: Path):
    spec = "plantmod:net"
    model = models.build(spec, binary=True, in_channels=1).eval()
    path = tmp_path / "mine.packed"
    save_packed(model, path)
    sys.modules.pop("plantmod", None)
    planted_module.unlink()
    with pytest.raises(ValueError, match="name it to allow that"):
        load_packed(path)
    assert not planted_module.exists()
    back = load_packed(path, factory=spec).eval()
    assert planted_module.exists()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    with pytest.raises(ValueError, match="holds 'lenet5', not the factory"):
        save_packed(models.build("lenet5", binary=True), tmp_path / "l.packed")
        load_packed(tmp_path / "l.packed", factory=spec)


@pytest.mark.parametrize("change,said", [
    (lambda p: p.update(spec={"name": "nin", "kwargs": p["spec"]["kwargs"]}),
     "do not fit the network it names \\(nin\\): tensors .* missing"),
    (lambda p: p.update(spec={"name": "resnet18", "kwargs": p["spec"]["kwargs"]}),
     "do not fit the network it names \\(resnet18\\)"),
    (lambda p: p["spec"]["kwargs"].update(zzz=1), "argument 'zzz' = 1 is not one"),
    (lambda p: p["spec"]["kwargs"].update(num_classes="10"), "argument 'num_classes'"),
    (lambda p: p.pop("spec"), "no network spec"),
    (lambda p: p.update(spec={"name": "torchvision:nosuch", "kwargs": {}}),
     "no classification model 'nosuch'"),
    (lambda p: p["binary"]["conv2.weight"].update(shape=(1,)),
     "'conv2.weight': its bits or alphas do not fit"),
    (lambda p: p["float"].update({"conv1.weight": torch.zeros(3)}),
     "'conv1.weight' is \\(3,\\), the network's is"),
    (lambda p: p.pop("float"), "no 'float' and 'binary' tables"),
])
def test_a_packed_file_with_other_contents_is_refused_in_one_line(tmp_path: Path,
                                                                  lenet_file: Path,
                                                                  change, said: str):
    """A valid checksum over another model's contents gave multi-line RuntimeError,
    TypeError or KeyError messages that did not name the file."""
    bad = _rewrite(lenet_file, tmp_path / "other.packed", change)
    with pytest.raises(ValueError, match=said) as caught:
        load_packed(bad)
    assert str(caught.value).startswith(f"{bad}: ") and "\n" not in str(caught.value)


def test_resume_never_imports_a_factory_the_command_line_does_not_name(
        tmp_path: Path, planted_module: Path):
    """A spec stored in the database (edited, or written by anyone with the file) was
    imported and called on --resume."""
    db = str(tmp_path / "r.db")
    store = Store.open(db)
    run_id = store.start_run("accuracy", {"model": "plantmod:net", "dataset": "mnist"}, {})
    store.finish_run(run_id, "interrupted")
    sys.modules.pop("plantmod", None)
    planted_module.unlink(missing_ok=True)
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--resume", str(run_id),
                              "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "builds the network 'plantmod:net' from your code; give --model plantmod:net" \
        in res.output and "Traceback" not in res.output
    assert not planted_module.exists()
