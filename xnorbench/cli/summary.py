"""``xnorbench summary``: a network's layers, parameters, MACs and packed size, float or
binarized, for a built-in network or any spec (``torchvision:NAME``, ``module:function``).
It runs one forward pass on zeros and stores nothing."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .app import app, fail

ModelArg = Annotated[str, typer.Option(
    "--model", help="resnet18, lenet5, nin, resnet18-imagenet, torchvision:NAME "
    "(:cifar for a 3x3 stem on 32x32 images) or module.path:function (your factory).",
    metavar="SPEC")]
InputArg = Annotated[str | None, typer.Option(
    "--input", help="One sample's C,H,W \\[default: the network's own: 3,224,224 for a "
    "torchvision spec].", metavar="C,H,W", show_default=False)]


def _shape(text: str) -> tuple[int, int, int]:
    """'3,224,224' -> (3, 224, 224): three positive whole numbers, each at most 4096."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or any(not 1 <= v <= 4096 for v in values):
        fail(f"--input {text}: give C,H,W, three whole numbers from 1 to 4096 (e.g. "
             "3,224,224)")
    return values[0], values[1], values[2]


def _mib(n: float) -> str:
    return f"{n / 2**20:.3f}"


@app.command("summary")
def summary_cmd(
    model: ModelArg,
    input: InputArg = None,
    binary: Annotated[bool, typer.Option(
        "--binary/--float", help="The XNOR network (what binarize makes of it) or the "
        "float one.", show_default=True)] = True,
    classes: Annotated[int | None, typer.Option(
        help="Output classes \\[default: the network's own].", metavar="N",
        show_default=False)] = None,
    layers: Annotated[bool, typer.Option(help="List every layer.", metavar="")] = True,
) -> None:
    """Per layer: kind, input precision, output shape, 1-bit and 32-bit parameters,
    binary and float MACs, packed size; then totals, the compression, the share of MACs
    that are binary and the paper's theoretical speedup for the whole network (like
    larq's models.summary). For a spec, what binarize did to each conv and linear."""
    from rich.console import Console
    from rich.table import Table
    from torch import nn

    from ..errors import InputError, exception_line
    from ..measure.summary import summarize
    from ..xnor.networks import model_spec, models
    from ..xnor.networks.binarize import BinarizeError

    if classes is not None and classes < 1:
        fail(f"--classes must be positive, got {classes}")
    shape = _shape(input) if input is not None else None
    try:
        models.model_ok(model)
        shape = shape or models.input_shape(model)
        kw: dict[str, Any] = {"in_channels": shape[0]}
        if classes is not None:
            kw["num_classes"] = classes
        report = None
        net: nn.Module
        if binary and model_spec.is_spec(model):
            import torch

            net, report = model_spec.binarize_spec(model, **kw,
                                                   calibration=torch.randn(2, *shape))
        else:
            net = models.build(model, binary=binary, **kw)
    except (InputError, BinarizeError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    try:
        s = summarize(net, shape)
    except Exception as exc:  # noqa: BLE001 - the forward refused the input (any network)
        fail(f"{model} on a {'x'.join(map(str, shape))} input: {exception_line(exc)}")
    console = Console()
    if layers:
        table = Table(title=f"{model} ({'XNOR' if binary else 'float'}), input "
                            f"{'x'.join(map(str, shape))}")
        for col in ("Layer", "Kind", "In bits", "Output", "1-bit params", "32-bit params",
                    "Binary MACs", "Float MACs", "Packed KiB", "Float32 KiB"):
            table.add_column(col, justify="left" if col in ("Layer", "Kind") else "right")
        for layer in s.layers:
            alphas = layer.output_shape[1] if layer.params_1bit else 0
            f32 = (layer.params_1bit + layer.params_32bit - alphas) * 4
            table.add_row(layer.name, layer.kind, str(layer.input_bits),
                          "x".join(map(str, layer.output_shape[1:])),
                          f"{layer.params_1bit:,}", f"{layer.params_32bit:,}",
                          f"{layer.macs_binary:,}", f"{layer.macs_float:,}",
                          f"{layer.memory_bytes / 1024:.1f}", f"{f32 / 1024:.1f}")
        console.print(table)
    params = sum(p.numel() for p in net.parameters())
    console.print(
        f"parameters: {params:,} ({s.params_1bit:,} at 1 bit, {s.params_32bit:,} at 32 "
        "bits including one alpha per binary filter)\n"
        f"size: {_mib(s.packed_bytes)} MiB packed vs {_mib(s.float32_bytes)} MiB float32 "
        f"({s.compression:.1f}x; BatchNorm statistics included)\n"
        f"MACs per sample: {s.macs_binary:,} binary, {s.macs_float:,} float "
        f"({100 * s.binary_mac_share:.1f} % binary)\n"
        f"theoretical speedup (the paper's 64x per binary MAC, one float operation per "
        f"binary output): {s.theoretical_speedup:.2f}x", highlight=False, soft_wrap=True)
    if report is not None:
        console.print(str(report), highlight=False, markup=False, soft_wrap=True)
