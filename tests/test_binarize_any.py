"""Your network, binarized: ``binarize`` on torchvision's classification networks and on a
user's factory; the non-negative-input trap; packed inference equal to the simulated
network; the summary's totals; specs wherever a model is named."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from tests.rounding import away_from_thresholds
from xnorbench.cli import app
from xnorbench.errors import InputError
from xnorbench.measure.summary import summarize
from xnorbench.xnor import load_packed, save_packed
from xnorbench.xnor.inference.packed_layers import pack_model
from xnorbench.xnor.layers.modules import BINARY_LAYERS, XNORConv2d, XNORLinear
from xnorbench.xnor.networks import models
from xnorbench.xnor.networks.binarize import BinarizeError, BinarizeWarning, binarize, sign_inputs

TORCHVISION = ("resnet18", "resnet50", "vgg11_bn", "densenet121", "mobilenet_v2")
runner = CliRunner()


def calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` in eval mode after one training-mode pass on ``x`` (BatchNorm statistics
    of real activations, not the identity a fresh BatchNorm is in eval mode)."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def plain_cnn(num_classes: int = 10) -> nn.Module:
    """A user's network in the standard order conv -> BN -> ReLU: the trap's setting."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, num_classes))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_networks_binarized_see_both_signs_and_pack_exactly(name):
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None, num_classes=10)
    xnor, report = binarize(net)
    x = torch.randn(4, 3, 64, 64)
    calibrated(xnor, x)
    layers = dict(xnor.named_modules())
    assert report.binarized and all(isinstance(layers[n], BINARY_LAYERS)
                                    for n in report.binarized)
    assert report.kept_float[0] == report.layers[0].name  # the first layer stays float
    assert "last layer" in report.layers[-1].why and not report.layers[-1].binarized
    if name == "mobilenet_v2":  # depthwise convs stay float, and say why
        depthwise = [d for d in report.layers if "depthwise" in d.why]
        assert depthwise and all(layers[d.name].groups > 1 for d in depthwise)
    # every binary layer's input holds both signs (the trap: a ReLU output never does)
    shares = sign_inputs(xnor, torch.randn(2, 3, 64, 64))
    assert set(shares) == set(report.binarized)
    one_sign = {n: s for n, s in shares.items() if min(s) == 0}
    assert one_sign == {}
    assert report.rewired  # each of these networks feeds some binary layer from a ReLU
    # the float network is untouched and still computes what it did
    assert not any(isinstance(m, BINARY_LAYERS) for m in net.modules())
    # packed: no XNOR layer left; each packed layer equals its simulated layer on the
    # inputs the simulated network really feeds it (copied: a later in-place ReLU of the
    # network writes over them), layer by layer and with every value within rounding of
    # its sign threshold moved away from it (tests/rounding.py: which of those flip is
    # the CPU's choice, not the kernel's)
    packed = pack_model(xnor)
    assert not any(isinstance(m, BINARY_LAYERS) for m in packed.modules())
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, a[0].clone()))
             for n, m in layers.items() if isinstance(m, BINARY_LAYERS)]
    with torch.no_grad():
        xnor(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    pmods = dict(packed.named_modules())
    with torch.no_grad():
        for n, inp in seen.items():
            inp, moved = away_from_thresholds(layers[n], inp)
            assert moved <= inp.numel() // 100, (n, moved)
            torch.testing.assert_close(pmods[n](inp), layers[n](inp), rtol=1e-4, atol=1e-4)


def test_the_trap_is_caught_and_rewiring_takes_the_sign_before_the_relu():
    """conv -> BN -> ReLU -> conv: binarized as is, the second conv's sign sees only
    values >= 0 (every bit +1); rewired, it sees the BN output, both signs."""
    torch.manual_seed(1)
    net = plain_cnn()
    x = torch.randn(8, 3, 16, 16)
    with pytest.warns(BinarizeWarning, match="input of one sign"):
        trapped, report = binarize(net, rewire=False)
    assert report.one_sign == ["3", "7", "11"]
    shares = sign_inputs(calibrated(trapped, x), x)
    assert shares["3"] == (0.0, 1.0) and shares["7"] == (0.0, 1.0)  # all +1: the trap
    fixed, report = binarize(net)
    shares = sign_inputs(calibrated(fixed, x), x)
    assert all(0 < neg < 1 for neg, _pos in shares.values()), shares
    by_name = {d.name: d for d in report.layers}
    assert "before '2'" in by_name["3"].rewired
    assert "before '5'" in by_name["7"].rewired and "'6' repeated" in by_name["7"].rewired
    assert "before '9'" in by_name["11"].rewired and "'10' repeated" in by_name["11"].rewired
    assert by_name["0"].binarized is False and by_name["13"].binarized is False
    # the ReLU's own output still feeds the float path: the network's output is unchanged
    # where no binary layer sits (a network with every layer kept float is the original)
    same, rep = binarize(net, keep=("3", "7", "11"))
    assert rep.binarized == []
    net.eval(), same.eval()
    with torch.no_grad():
        torch.testing.assert_close(same(x), net(x))


def test_keep_by_name_prefix_and_by_type():
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    _, report = binarize(net, keep=("layer4",), keep_types=(nn.Linear,))
    kept = {d.name: d.why for d in report.layers if not d.binarized}
    assert {n for n in kept if n.startswith("layer4")} == {
        d.name for d in report.layers if d.name.startswith("layer4")}
    assert all(w == "kept float by name" for n, w in kept.items() if n.startswith("layer4"))
    assert "layer3.1.conv2" in report.binarized


def test_an_untraceable_model_is_refused_naming_the_module():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 3, 1)
            self.body = Branchy()

        def forward(self, x):
            return self.body(self.stem(x))

    with pytest.raises(BinarizeError, match="in module 'body' \\(Branchy\\)"):
        binarize(Outer())
    with pytest.raises(BinarizeError, match="nothing to binarize"):
        binarize(nn.Sequential(nn.ReLU()))


def test_summary_totals_equal_the_counted_parameters():
    for net, shape in ((torchvision.models.resnet18(weights=None, num_classes=10),
                        (3, 32, 32)), (plain_cnn(), (3, 16, 16))):
        for model in (net, binarize(net).model):
            s = summarize(model, shape)
            alphas = sum(m.weight.shape[0] for m in model.modules()
                         if isinstance(m, (XNORConv2d, XNORLinear)))
            assert s.params_1bit + s.params_32bit - alphas == sum(
                p.numel() for p in model.parameters())
            assert s.params_1bit == sum(m.weight.numel() for m in model.modules()
                                        if isinstance(m, (XNORConv2d, XNORLinear)))
            if s.macs_binary:  # a binary MAC costs 1/64: the network gains, not past 64x
                assert 1 < s.theoretical_speedup < 64
            else:
                assert s.theoretical_speedup == 1.0


def test_summary_command_prints_the_table_and_refuses_bad_input():
    res = runner.invoke(app, ["summary", "--model", "torchvision:resnet18", "--input",
                              "3,64,64"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "layer1.0.conv1" in res.output and "XNORConv2d" in res.output
    assert "theoretical speedup" in res.output and "19 of 21 conv/linear" in res.output
    for args, said in ((["--model", "torchvision:nosuchnet"], "no classification model"),
                       (["--model", "nosuch_module_x:f"], "cannot import"),
                       (["--model", "lenet5", "--input", "1,28"], "give C,H,W"),
                       (["--model", "lenet5", "--input", "1,4,4"], "on a 1x4x4 input")):
        res = runner.invoke(app, ["summary", *args])
        assert res.exit_code == 2 and said in res.output, res.output
        assert "Traceback" not in res.output


@pytest.fixture()
def user_factory(tmp_path, monkeypatch):
    """A module of the user's with a factory, importable from the working folder."""
    (tmp_path / "my_nets.py").write_text(textwrap.dedent('''
        from torch import nn

        def small(num_classes=10):
            return nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(),
                nn.Linear(32, num_classes))
        small.input_shape = (1, 28, 28)

        def not_a_model():
            return 3
        '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets:small"
    sys.modules.pop("my_nets", None)


def test_a_user_factory_is_built_binarized_packed_saved_and_reloaded(user_factory, tmp_path):
    torch.manual_seed(3)
    model = models.build(user_factory, binary=True, in_channels=1, num_classes=5)
    assert models.input_shape(user_factory) == (1, 28, 28)
    assert models.native_dataset(user_factory) == "input-1x28x28"
    x = torch.randn(4, 1, 28, 28)
    calibrated(model, x)
    assert all(0 < neg < 1 for neg, _ in sign_inputs(model, x).values())
    n_bytes = save_packed(model, tmp_path / "m.xnb")
    with pytest.raises(ValueError, match="name it to allow that"):
        load_packed(tmp_path / "m.xnb")  # a file never chooses code to run
    back = load_packed(tmp_path / "m.xnb", factory=user_factory).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
        assert back(x).shape == (4, 5)
    assert n_bytes == (tmp_path / "m.xnb").stat().st_size
    with pytest.raises(InputError, match="returned int, not an nn.Module"):
        models.build("my_nets:not_a_model")
    with pytest.raises(InputError, match="has no function 'nope'"):
        models.model_ok("my_nets:nope")


def test_torchvision_spec_adapts_channels_and_the_cifar_stem():
    m = models.build("torchvision:resnet18", binary=False, in_channels=1, num_classes=10)
    assert m.conv1.in_channels == 1 and m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    c = models.build("torchvision:resnet18:cifar", binary=True)
    assert models.input_shape("torchvision:resnet18:cifar") == (3, 32, 32)
    assert c.conv1.kernel_size == (3, 3) and c.conv1.stride == (1, 1)
    assert c(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for bad in ("torchvision:", "torchvision:resnet18:imagenet", ":f"):
        with pytest.raises(InputError):
            models.model_ok(bad)


def test_memory_suite_stores_rows_of_a_spec(tmp_path: Path):
    db = tmp_path / "m.db"
    res = runner.invoke(app, ["--db", str(db), "run", "memory", "--model",
                              "torchvision:resnet18:cifar", "--no-runtime", "--batch", "2",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    from xnorbench.db import Store

    rows = {r.metric: r for r in Store.open(str(db)).results()}
    assert rows["compression"].model == "torchvision:resnet18:cifar"
    assert rows["compression"].value > 10
    assert rows["packed_file_bytes"].value < rows["float32_file_bytes"].value / 10
    assert 1 < rows["network_theoretical_speedup"].value < 64
    done = rows["binarized_layers"]
    assert done.value == 19 and done.params["layers"] == 21
    assert set(done.params["kept_float"]) == {"conv1", "fc"}
    assert "sign taken before" in done.params["rewired"]["layer1.0.conv2"]
    res = runner.invoke(app, ["--db", str(db), "table", "--suite", "memory"])
    assert res.exit_code == 0 and "torchvision:resnet18:cifar" in res.output, res.output
    res = runner.invoke(app, ["--db", str(db), "run", "memory", "--model", "torchvision:x1"])
    assert res.exit_code == 2 and "no classification model 'x1'" in res.output


def test_accuracy_trains_a_torchvision_spec_and_fills_a_table_row(tmp_path: Path,
                                                                   mnist_dir: Path):
    """Both variants train under one recipe; the XNOR one is packed and evaluated on the
    kernel; the table names the network by its spec, packed beside simulated."""
    from xnorbench.db import Store

    db = str(tmp_path / "a.db")
    spec = "torchvision:resnet18"
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--dataset", "mnist", "--model",
                              spec, "--epochs", "1", "--batch-size", "16", "--data-dir",
                              str(mnist_dir), "--device", "cpu", "--no-progress",
                              "--optimizer", "adam"])
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    (run,) = store.runs()
    assert run.params["model"] == spec
    finals = {r.variant: r for r in store.results([run.id], metric="final_test_accuracy")}
    assert set(finals) == {"float", "xnor"} and finals["xnor"].model == spec
    assert finals["float"].recipe_key == finals["xnor"].recipe_key
    packed = store.results([run.id], metric="packed_test_accuracy")[0]
    agreement = store.results([run.id], metric="packed_agreement")[0].value
    assert agreement >= 95.0  # the packed kernel predicts what the simulated net does
    res = runner.invoke(app, ["--db", db, "table", "--format", "json"])
    import json

    recs = json.loads(res.stdout)
    row = next(r for r in recs if r["network"] == spec and r["variant"] == "xnor")
    assert row["accuracy"] == pytest.approx(finals["xnor"].value)
    res = runner.invoke(app, ["--db", db, "table"])
    line = next(x for x in res.output.splitlines() if spec in x)
    assert f"{packed.value:.2f} %" in line


def test_the_model_api_is_on_the_package_and_loads_torch_only_when_used():
    import subprocess

    code = ("import sys, xnorbench; before = 'torch' in sys.modules; "
            "from xnorbench import binarize, summary, pack_model; "
            "print(before, binarize.__module__, summary.__name__, pack_model.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "xnorbench.xnor.networks.binarize", "summarize",
                   "xnorbench.xnor.inference.packed_layers"]
    import xnorbench

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xnorbench.nope  # noqa: B018


def test_summary_counts_a_shared_layer_once_and_every_kind_of_conv():
    """A layer called twice counted its parameters twice; a Linear on tokens counted one
    vector's MACs; ConvTranspose2d, Conv1d and Conv3d counted none."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.twice = nn.Conv2d(4, 4, 3, padding=1)
            self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
            self.c1d = nn.Conv1d(4, 4, 3, padding=1)
            self.c3d = nn.Conv3d(1, 2, 3, padding=1)
            self.tok = nn.Linear(4, 6)

        def forward(self, x):
            x = self.twice(self.twice(self.c1(x)))      # 4x8x8, twice
            x = self.up(x)                              # 4x16x16
            t = self.c1d(x.flatten(2))                  # 4x256
            v = self.c3d(t.view(-1, 1, 4, 16, 16))      # 2x4x16x16
            return self.tok(t.transpose(1, 2)).sum() + v.sum()  # 256 tokens of 4

    s = summarize(Mixed(), (3, 8, 8))
    by = {layer.name: layer for layer in s.layers}
    assert len(s.layers) == 6 and by["twice"].params_32bit == 4 * 4 * 9 + 4
    assert by["twice"].macs_float == 2 * (4 * 8 * 8) * (4 * 9)
    assert by["up"].macs_float == (4 * 8 * 8) * (4 * 2 * 2)
    assert by["c1d"].macs_float == (4 * 256) * (4 * 3)
    assert by["c3d"].macs_float == (2 * 4 * 16 * 16) * 27
    assert by["tok"].macs_float == 256 * 6 * 4
    net = Mixed()
    assert s.params_32bit == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("spec,said", [
    ("../x:f", "cannot import '../x'"),
    ("os:system", "system() raised TypeError"),
    ("shaky:raises", "raises() raised RuntimeError: factory exploded"),
    ("shaky:lazy", "uninitialized (a lazy module)"),
    ("shaky:two_dims", "its input_shape (3, 28) is not (C, H, W)"),
    ("shaky:zero", "its input_shape (0, 28, 28) is not (C, H, W)"),
    ("shaky:vit_cifar", "Wrong image height"),
])
def test_summary_and_run_say_what_is_wrong_with_a_network_in_one_line(tmp_path, monkeypatch,
                                                                     spec, said):
    """Each of these gave a traceback (in `summary`, and in `run` before a run existed)."""
    (tmp_path / "shaky.py").write_text(textwrap.dedent('''
        import torchvision
        from torch import nn

        def raises():
            raise RuntimeError("factory exploded")

        def lazy():
            return nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.LazyConv2d(8, 3),
                                 nn.Flatten(), nn.LazyLinear(10))

        def small(num_classes=10, in_channels=3):
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(10))

        def two_dims():
            return small()
        two_dims.input_shape = (3, 28)

        def zero():
            return small()
        zero.input_shape = (0, 28, 28)

        def vit_cifar():  # a ViT asserts its image size: 224, not 32
            return torchvision.models.vit_b_16(num_classes=10)
        vit_cifar.input_shape = (3, 32, 32)
        '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        res = runner.invoke(app, ["summary", "--model", spec, "--no-layers"])
        assert res.exit_code == 2 and said in res.output, res.output
        assert res.output.startswith("error: ") and "Traceback" not in res.output
        res = runner.invoke(app, ["--db", str(tmp_path / "r.db"), "run", "memory", "--model",
                                  spec, "--no-runtime", "--no-progress"])
        assert res.exit_code != 0 and said in res.output, res.output
        assert "Traceback" not in res.output and res.output.count("error: ") == 1
    finally:
        sys.modules.pop("shaky", None)


def test_summary_refuses_a_network_too_big_to_build_and_a_vit_in_float(tmp_path):
    res = runner.invoke(app, ["summary", "--model", "torchvision:resnet18", "--classes",
                              "100000000", "--no-layers"])
    assert res.exit_code == 2 and "cannot build it with 100000000 classes" in res.output
    res = runner.invoke(app, ["summary", "--model", "torchvision:vit_b_16", "--float",
                              "--no-layers", "--input", "3,224,224"])
    assert res.exit_code == 0, res.output  # attention layers return tuples: counted
    assert "MACs per sample: 0 binary" in res.output


def test_memory_builds_a_factory_for_its_own_input_channels(user_factory, tmp_path):
    """run memory built every factory for 3 channels, ignoring its input_shape."""
    db = str(tmp_path / "m.db")
    res = runner.invoke(app, ["--db", db, "run", "memory", "--model", user_factory,
                              "--no-runtime", "--batch", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    first = next(m for m in models.build(user_factory, binary=True).modules()
                 if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
