"""Float and XNOR models from one definition each.

Every binarizable unit is built by :func:`act_conv` / :func:`act_linear`: in float it
is BN -> activation -> conv, in XNOR it is BN -> BinActive -> binary conv. Nothing else
differs between the two variants, and the first and last layers always stay float
(paper, sec. 4.1).

* ``resnet18`` -- pre-activation ResNet-18 (He et al., 2016) with a CIFAR stem (3x3,
  stride 1, no max-pool) for 32x32 inputs; it also takes 1-channel 28x28 MNIST.
  Pre-activation order (BN -> act -> conv) is exactly XNOR-Net's block order.
* ``lenet5`` -- the original port's LeNet-5 for MNIST.
* ``nin`` -- the original port's Network-in-Network for CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ...errors import InputError
from ..layers.modules import XNORConv2d, XNORLinear
from . import model_spec


@dataclass(frozen=True)
class Unit:
    """What kind of BN -> activation -> conv/linear unit a network is made of: binary
    (BN, sign, alpha * sign(W) under ``grad_rule``; ``scale_input``: the paper's K map)
    or float (BN, ``float_act``: relu or none); ``bias``; ``dropout`` before the layer."""

    binary: bool
    float_act: str = "relu"
    bias: bool = False
    dropout: float = 0.0
    grad_rule: str = "corrected"
    scale_input: bool = False


def act_conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
             *, unit: Unit) -> nn.Module:
    """BN -> act -> conv: ``act`` is sign for XNOR, ReLU (or none) for float."""
    if unit.binary:
        return XNORConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=unit.bias,
                          scale_input=unit.scale_input, dropout=unit.dropout,
                          grad_rule=unit.grad_rule)
    layers: list[nn.Module] = [nn.BatchNorm2d(in_ch, eps=1e-4)]
    if unit.float_act == "relu":
        layers.append(nn.ReLU(inplace=False))
    if unit.dropout > 0:
        layers.append(nn.Dropout(unit.dropout))
    layers.append(nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=unit.bias))
    return nn.Sequential(*layers)


def act_linear(in_f: int, out_f: int, *, unit: Unit) -> nn.Module:
    """BN -> act -> linear, the fully connected counterpart of :func:`act_conv`."""
    if unit.binary:
        return XNORLinear(in_f, out_f, dropout=unit.dropout, grad_rule=unit.grad_rule)
    layers: list[nn.Module] = [nn.Flatten(1), nn.BatchNorm1d(in_f, eps=1e-4)]
    if unit.float_act == "relu":
        layers.append(nn.ReLU(inplace=False))
    if unit.dropout > 0:
        layers.append(nn.Dropout(unit.dropout))
    layers.append(nn.Linear(in_f, out_f))
    return nn.Sequential(*layers)


class PreActBlock(nn.Module):
    """Pre-activation basic block; the downsampling shortcut is a unit of its own."""

    def __init__(self, in_planes: int, planes: int, stride: int, unit: Unit) -> None:
        super().__init__()
        self.unit1 = act_conv(in_planes, planes, 3, stride, 1, unit=unit)
        self.unit2 = act_conv(planes, planes, 3, 1, 1, unit=unit)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = act_conv(in_planes, planes, 1, stride, 0, unit=unit)

    def forward(self, x: Tensor) -> Tensor:
        return self.unit2(self.unit1(x)) + self.shortcut(x)


class ResNet18(nn.Module):
    """Pre-activation ResNet-18, CIFAR stem; float stem conv and float classifier."""

    def __init__(self, binary: bool, in_channels: int = 3, num_classes: int = 10,
                 grad_rule: str = "corrected", scale_input: bool = False,
                 stem: str = "cifar") -> None:
        super().__init__()
        unit = Unit(binary, grad_rule=grad_rule, scale_input=scale_input)
        if stem == "imagenet":  # 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(PreActBlock(in_planes, planes, stride, unit))
            blocks.append(PreActBlock(planes, planes, 1, unit))
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.conv1(x))
        x = self.pool(self.relu(self.bn(x)))
        return self.fc(x.flatten(1))


class LeNet5(nn.Module):
    """The original port's LeNet-5: conv1 float, conv2 and ip1 binary, ip2 float."""

    def __init__(self, binary: bool, in_channels: int = 1, num_classes: int = 10,
                 grad_rule: str = "corrected", input_size: tuple[int, int] = (28, 28)
                 ) -> None:
        super().__init__()
        h, w = (((s - 4) // 2 - 4) // 2 for s in input_size)  # two 5x5 convs, two 2x2 pools
        if h < 1 or w < 1:
            raise ValueError(f"lenet5 needs images of at least 16x16, got "
                             f"{input_size[0]}x{input_size[1]}")
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5, stride=1)
        self.bn_conv1 = nn.BatchNorm2d(20, eps=1e-4, affine=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = act_conv(20, 50, 5, unit=Unit(binary, "none", True, grad_rule=grad_rule))
        self.ip1 = act_linear(50 * h * w, 500, unit=Unit(binary, "none", grad_rule=grad_rule))
        self.ip2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.bn_conv1(self.conv1(x))))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.ip1(x.flatten(1)))
        return self.ip2(x)


class NIN(nn.Module):
    """The original port's Network-in-Network for CIFAR-10 (32x32 RGB)."""

    def __init__(self, binary: bool, in_channels: int = 3, num_classes: int = 10,
                 grad_rule: str = "corrected") -> None:
        super().__init__()

        def unit(i: int, o: int, k: int, p: int, dropout: float = 0.0) -> list[nn.Module]:
            return [act_conv(i, o, k, 1, p, unit=Unit(binary, "none", True, dropout, grad_rule)),
                    nn.ReLU()]

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 192, kernel_size=5, stride=1, padding=2),
            nn.BatchNorm2d(192, eps=1e-4, affine=False),
            nn.ReLU(),
            *unit(192, 160, 1, 0),
            *unit(160, 96, 1, 0),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            *unit(96, 192, 5, 2, dropout=0.5),
            *unit(192, 192, 1, 0),
            *unit(192, 192, 1, 0),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
            *unit(192, 192, 3, 1, dropout=0.5),
            *unit(192, 192, 1, 0),
            nn.BatchNorm2d(192, eps=1e-4, affine=False),
            nn.Conv2d(192, num_classes, kernel_size=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)


def _with_spec(model: nn.Module, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Record how to rebuild the model (used by the packed file format)."""
    model.xnorbench_spec = {"name": name, "kwargs": dict(kwargs)}  # type: ignore[assignment]
    return model


def resnet18(binary: bool = False, in_channels: int = 3, num_classes: int = 10,
             grad_rule: str = "corrected", scale_input: bool = False,
             input_size: tuple[int, int] | None = None) -> nn.Module:
    """Pre-activation ResNet-18 (CIFAR stem); ``binary=True`` for XNOR-Net. Any input
    size (global average pooling); ``input_size`` is accepted for a uniform signature."""
    kw: dict[str, Any] = {"binary": binary, "in_channels": in_channels,
                          "num_classes": num_classes, "grad_rule": grad_rule,
                          "scale_input": scale_input}
    return _with_spec(ResNet18(**kw), "resnet18", kw)


def resnet18_imagenet(binary: bool = False, in_channels: int = 3, num_classes: int = 1000,
                      grad_rule: str = "corrected", scale_input: bool = False,
                      input_size: tuple[int, int] | None = None) -> nn.Module:
    """The paper's ImageNet ResNet-18: a 7x7 stride-2 stem and a max-pool before the
    four stages (224x224 crops); the stem conv and the classifier stay float in the XNOR
    variant, as the paper keeps the first and last layers real-valued."""
    kw: dict[str, Any] = {"binary": binary, "in_channels": in_channels,
                          "num_classes": num_classes, "grad_rule": grad_rule,
                          "scale_input": scale_input}
    return _with_spec(ResNet18(**kw, stem="imagenet"), "resnet18-imagenet", kw)


def lenet5(binary: bool = False, in_channels: int = 1, num_classes: int = 10,
           grad_rule: str = "corrected", input_size: tuple[int, int] | None = None
           ) -> nn.Module:
    """LeNet-5 as in the original port (MNIST, 28x28; ``input_size`` sizes ip1 for other
    images, at least 16x16)."""
    kw: dict[str, Any] = {"binary": binary, "in_channels": in_channels,
                          "num_classes": num_classes, "grad_rule": grad_rule}
    if input_size is not None and tuple(input_size) != (28, 28):
        kw["input_size"] = tuple(input_size)
    return _with_spec(LeNet5(**kw), "lenet5", kw)


def nin(binary: bool = False, in_channels: int = 3, num_classes: int = 10,
        grad_rule: str = "corrected", input_size: tuple[int, int] | None = None) -> nn.Module:
    """Network-in-Network as in the original port (CIFAR-10, 32x32; any input size:
    global average pooling; ``input_size`` is accepted for a uniform signature)."""
    kw: dict[str, Any] = {"binary": binary, "in_channels": in_channels,
                          "num_classes": num_classes, "grad_rule": grad_rule}
    return _with_spec(NIN(**kw), "nin", kw)


INPUT_SHAPE: dict[str, tuple[int, int, int]] = {
    "resnet18": (3, 32, 32), "lenet5": (1, 28, 28), "nin": (3, 32, 32),
    "resnet18-imagenet": (3, 224, 224)}
"""One sample's (C, H, W) for the dataset each model is defined for."""

NATIVE_DATASET: dict[str, str] = {"resnet18": "cifar10", "lenet5": "mnist", "nin": "cifar10",
                                  "resnet18-imagenet": "imagenet"}
"""The dataset whose input shape ``INPUT_SHAPE`` gives (for rows that time random inputs)."""

MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18": resnet18, "lenet5": lenet5,
                                               "nin": nin,
                                               "resnet18-imagenet": resnet18_imagenet}

IMAGENET_MODELS = ("resnet18-imagenet",)
"""Models trained on 224x224 crops read from image files per batch (random-resized crop
+ flip; resize + center crop to evaluate), with top-5 accuracy beside top-1."""


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name, or by a spec (``torchvision:NAME``, ``module:function``,
    :mod:`.model_spec`); ``ValueError`` names the known models otherwise."""
    if model_spec.is_spec(name):
        return model_spec.build_spec(name, **kwargs)
    if name not in MODELS:
        raise ValueError(_unknown(name))
    return MODELS[name](**kwargs)


def _unknown(name: str) -> str:
    return (f"unknown model {name!r}; choose one of {', '.join(MODELS)}, or give "
            "torchvision:NAME or module.path:function")


def input_shape(name: str) -> tuple[int, int, int]:
    """One sample's (C, H, W) for a built-in network's dataset, or a spec's input."""
    return model_spec.input_shape(name) if model_spec.is_spec(name) else INPUT_SHAPE[name]


def native_dataset(name: str) -> str:
    """The dataset rows on random inputs of ``name`` are labelled with: a built-in
    network's own, ``imagenet`` for a spec at 3x224x224, else ``input-CxHxW``."""
    if not model_spec.is_spec(name):
        return NATIVE_DATASET[name]
    shape = model_spec.input_shape(name)
    return "imagenet" if shape == model_spec.DEFAULT_INPUT else \
        "input-" + "x".join(map(str, shape))


def model_ok(value: str, flag: str = "--model") -> None:
    """A built-in network's name or a spec that can be built; ``InputError`` otherwise."""
    if model_spec.is_spec(value):
        model_spec.check_spec(value, flag)
    elif value not in MODELS:
        raise InputError(_unknown(value))


def models_ok(values: list[str], flag: str = "--model") -> None:
    """Each of ``values`` passes :func:`model_ok`."""
    for value in values:
        model_ok(value, flag)
