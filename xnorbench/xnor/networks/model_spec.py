"""Networks named by a spec instead of by xnorbench: ``torchvision:NAME`` (any torchvision
classification builder, untrained) and ``module.path:function`` (a factory of yours that
returns an ``nn.Module``). ``binary=True`` gives the network through :func:`~.convert.binarize`.

Why specs rather than registering more built-in networks: the question users bring is
about *their* network. Everything that builds a model (training, packing, the memory and
timing probes, ``load_packed``) goes through :func:`~.models.build`, which hands a spec
here, so a spec works wherever a built-in name does. The model records its spec and
arguments (``xnorbench_spec``), so a packed file of it can be rebuilt.

``torchvision:NAME:cifar`` replaces the stem for 32x32 images: the first conv becomes
3x3 stride 1 and a max-pool right after it (``maxpool``) is removed, as CIFAR ResNets do.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ...errors import InputError, exception_line, first_line
from .binarize import Binarized, BinarizeError, binarize

DEFAULT_INPUT = (3, 224, 224)
CIFAR_INPUT = (3, 32, 32)


def is_spec(name: str) -> bool:
    """Whether ``name`` is a spec (it has a ``:``) rather than a built-in network's name."""
    return ":" in name


def is_factory(name: str) -> bool:
    """Whether ``name`` is a ``module.path:function`` spec: building it imports and runs
    code of the user's, so it is built only where the user names it (never because a
    file or a database row names it)."""
    return is_spec(name) and name.partition(":")[0] != "torchvision"


def torchvision_models() -> list[str]:
    """The names of torchvision's classification builders."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _parse(spec: str) -> tuple[str, str, str]:
    """(source, name, variant): ``torchvision``/``NAME``/``cifar|""``, or module/function/""."""
    source, _, rest = spec.partition(":")
    name, _, variant = rest.partition(":")
    if not source or not name:
        raise InputError(f"model {spec!r}: give torchvision:NAME or module.path:function")
    if source != "torchvision" and variant:
        raise InputError(f"model {spec!r}: a factory spec is module.path:function")
    if variant not in ("", "cifar"):
        raise InputError(f"model {spec!r}: the only variant is :cifar (a 3x3 stem for 32x32 "
                         "images)")
    return source, name, variant


def _factory(spec: str) -> Callable[..., Any]:
    """The function a ``module.path:function`` spec names (the working folder importable,
    as ``python -m`` makes it)."""
    module_name, function = spec.split(":", 1)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"model {spec!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # a relative name, or the module's own code failing
        raise InputError(f"model {spec!r}: cannot import {module_name!r} "
                         f"({exception_line(exc)}); give a module name importable "
                         "from the working folder, e.g. my_nets:small") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InputError(f"model {spec!r}: {module_name} has no function {function!r}")
    return fn


def check_spec(spec: str, flag: str = "--model") -> None:
    """``InputError`` (one line) unless ``spec`` names a network that can be built."""
    source, name, _variant = _parse(spec)
    if source == "torchvision":
        known = torchvision_models()
        if name not in known:
            close = [k for k in known if k.startswith(name[:4])][:6]
            raise InputError(f"{flag} {spec}: torchvision has no classification model "
                             f"{name!r}" + (f" (did you mean {', '.join(close)}?)"
                                            if close else ""))
    else:
        _factory(spec)


def input_shape(spec: str) -> tuple[int, int, int]:
    """One sample's (C, H, W) for timing and counting a spec's network: 3x32x32 for
    ``:cifar``, a factory's ``input_shape`` attribute if it has one, else 3x224x224."""
    source, _name, variant = _parse(spec)
    if variant == "cifar":
        return CIFAR_INPUT
    if source != "torchvision":
        given = getattr(_factory(spec), "input_shape", None)
        if given is not None:
            return _shape_of(spec, given)
    return DEFAULT_INPUT


def _shape_of(spec: str, given: Any) -> tuple[int, int, int]:
    """A factory's ``input_shape`` as (C, H, W); ``InputError`` naming the spec unless it
    is three whole numbers from 1 to 4096."""
    values = list(given) if isinstance(given, (tuple, list)) else []
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool)
                                   and 1 <= v <= 4096 for v in values):
        raise InputError(f"model {spec!r}: its input_shape {given!r} is not (C, H, W), three "
                         "whole numbers from 1 to 4096")
    return values[0], values[1], values[2]


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            return model.get_submodule(parent_name), child, m
    return None


def _adapt_stem(model: nn.Module, in_channels: int, cifar: bool) -> None:
    """The first conv for ``in_channels`` inputs (and a 3x3 stride-1 stem if ``cifar``)."""
    found = _first_conv(model)
    if found is None:
        return
    parent, child, conv = found
    if conv.in_channels == in_channels and not cifar:
        return
    bias = conv.bias is not None
    if cifar:
        new = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=bias)
    else:
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        pad = conv.padding if isinstance(conv.padding, str) else (conv.padding[0],
                                                                  conv.padding[1])
        new = nn.Conv2d(in_channels, conv.out_channels, (kh, kw), (sh, sw), pad, bias=bias)
    setattr(parent, child, new)
    if cifar and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()


def build_spec(spec: str, binary: bool = False, in_channels: int | None = None,
               num_classes: int | None = None, grad_rule: str = "corrected",
               input_size: tuple[int, int] | None = None) -> nn.Module:
    """The network ``spec`` names, float or (``binary``) through :func:`binarize_spec`.

    ``in_channels`` None: the channels of the spec's own input (:func:`input_shape`: a
    factory's ``input_shape``, else 3). ``num_classes`` None: 10 for ``:cifar``, else the
    builder's default (1000 for torchvision). ``input_size`` is accepted for
    :func:`~.models.build`'s signature (the networks here pool globally). A factory is
    called with ``num_classes`` and ``in_channels`` where its signature takes them;
    otherwise its first conv is adapted.
    """
    if binary:
        return binarize_spec(spec, in_channels, num_classes, grad_rule).model
    channels = input_shape(spec)[0] if in_channels is None else in_channels
    model = _network(spec, channels, num_classes)
    return _recorded(model, spec, False, channels, num_classes, grad_rule)


def binarize_spec(spec: str, in_channels: int | None = None, num_classes: int | None = None,
                  grad_rule: str = "corrected",
                  calibration: Tensor | None = None) -> Binarized:
    """The network ``spec`` names through :func:`binarize`: the XNOR model (its spec
    recorded) and binarize's report of what it did to each layer (``calibration``: see
    :func:`binarize`)."""
    channels = input_shape(spec)[0] if in_channels is None else in_channels
    try:
        out = binarize(_network(spec, channels, num_classes), grad_rule=grad_rule,
                       calibration=calibration)
    except BinarizeError as exc:
        raise BinarizeError(f"model {spec!r}: {exc}") from None
    _recorded(out.model, spec, True, channels, num_classes, grad_rule)
    return out


def _classes(spec: str, num_classes: int | None) -> int | None:
    """The classes a spec's network is built with (None: its builder's default)."""
    return 10 if num_classes is None and _parse(spec)[2] == "cifar" else num_classes


def _recorded(model: nn.Module, spec: str, binary: bool, in_channels: int,
              num_classes: int | None, grad_rule: str) -> nn.Module:
    """``model`` carrying how it was built, so a packed file of it can be rebuilt."""
    args = {"binary": binary, "in_channels": in_channels,
            "num_classes": _classes(spec, num_classes), "grad_rule": grad_rule}
    setattr(model, "xnorbench_spec", {"name": spec, "kwargs": args})  # noqa: B010
    return model


def _network(spec: str, in_channels: int, num_classes: int | None) -> nn.Module:
    """The float network a spec names, for ``in_channels`` inputs."""
    source, name, variant = _parse(spec)
    num_classes = _classes(spec, num_classes)
    if source == "torchvision":
        check_spec(spec)
        import torchvision

        kw: dict[str, Any] = {"weights": None}
        if num_classes is not None:
            kw["num_classes"] = num_classes
        try:
            model = torchvision.models.get_model(name, **kw)
        except (RuntimeError, MemoryError, ValueError, TypeError) as exc:
            raise InputError(f"model {spec!r}: torchvision cannot build it with "
                             f"{num_classes} classes: {first_line(exc)}") from None
        _adapt_stem(model, in_channels, variant == "cifar")
        return model
    fn = _factory(spec)
    try:
        accepts = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        accepts = {}  # type: ignore[assignment]
    kw = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
          if k in accepts and v is not None}
    try:
        model = fn(**kw)
    except Exception as exc:  # the user's code: whatever it raises is said in one line
        raise InputError(f"model {spec!r}: {name}() raised {exception_line(exc)}") \
            from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model {spec!r}: {name}() returned {type(model).__name__}, not "
                         "an nn.Module")
    if "in_channels" not in accepts:
        _adapt_stem(model, in_channels, False)
    return model
