"""``xnorbench export``: a trained XNOR network (a run's packed file, or any ``*.packed``
file) written as an OpenVINO model, its binary layers on OpenVINO's BinaryConvolution,
so it runs on a maintained runtime outside this harness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, fail, open_store
from .summary import InputArg, _shape

DATASET_INPUT = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "kmnist": (1, 28, 28),
                 "cifar10": (3, 32, 32)}
"""One sample's shape per dataset, for runs stored before packed rows said it."""


def run_packed_file(run_id: int, seed: int | None) -> tuple[Path, tuple[int, int, int] | None,
                                                            str]:
    """(packed file, one sample's shape, the model spec) of a run's trained XNOR network
    (``seed``: which, where the run trained several)."""
    store = open_store()
    if store.run(run_id) is None:
        fail(f"--run {run_id}: no such run in {store.engine.url}")
    rows = [r for r in store.results([run_id], metric="packed_test_accuracy")
            if seed is None or r.seed == seed]
    if not rows:
        seeds = sorted({r.seed for r in store.results([run_id],
                                                      metric="packed_test_accuracy")
                        if r.seed is not None})
        fail(f"--run {run_id}: " + (f"no trained XNOR network of seed {seed} (seeds: "
                                    f"{', '.join(map(str, seeds))})" if seeds else
                                    "has no trained XNOR network (an accuracy or compare "
                                    "run that finished training one has)"))
    row = min(rows, key=lambda r: r.seed or 0)
    p = row.params or {}
    shape = tuple(p["input"]) if p.get("input") else DATASET_INPUT.get(row.dataset or "")
    return Path(p["packed_file"]), shape, str(row.model)


@app.command("export")
def export_cmd(
    output: Annotated[Path, typer.Option(
        "--output", help="Folder to write model.xml and model.bin into (made if missing).",
        metavar="DIR")],
    run: Annotated[int | None, typer.Option(
        "--run", help="A run that trained an XNOR network: its packed file.",
        metavar="ID", show_default=False)] = None,
    packed: Annotated[Path | None, typer.Option(
        "--packed", help="A *.packed file (xnorbench.save_packed).", metavar="FILE",
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="With --run: which seed's network \\[default: the lowest].",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="The module.path:function factory a packed file names, allowed "
        "to be imported and run (a built-in or torchvision: network needs none).",
        metavar="SPEC", show_default=False)] = None,
    input: InputArg = None,
    batch: Annotated[int, typer.Option(
        help="Batch size the model is written for (OpenVINO's BinaryConvolution needs a "
        "static shape; model.reshape() changes it).", min=1, max=65536)] = 1,
) -> None:
    """Write a trained XNOR network as an OpenVINO model (DIR/model.xml + .bin): binary
    layers as BinaryConvolution with the BatchNorm-and-sign folded into the thresholds
    the packed network uses, float first/last layers as they are. Prints the path."""
    import torch

    from ..errors import InputError, exception_line
    from ..xnor import load_packed
    from ..xnor.inference.openvino_export import save_openvino
    from ..xnor.networks import model_spec

    if (run is None) == (packed is None):
        fail("give one of --run ID or --packed FILE")
    shape: Any = None
    if run is not None:
        path, shape, spec = run_packed_file(run, seed)
        factory = model or (spec if model_spec.is_factory(spec) else None)
    else:
        assert packed is not None
        path, factory = packed, model
    if input is not None:
        shape = _shape(input)
    if not path.is_file():
        fail(f"packed file {path} does not exist")
    try:
        net = load_packed(path, factory=factory)
    except (InputError, ValueError, OSError) as exc:
        fail(f"{path}: {exception_line(exc) if not isinstance(exc, InputError) else exc}")
    if shape is None:
        name = str((getattr(net, "xnorbench_spec", None) or {}).get("name", ""))
        try:
            from ..xnor.networks.models import input_shape
            shape = input_shape(name)
        except (KeyError, InputError, ValueError):
            fail(f"{path}: the network's input shape is unknown; give --input C,H,W")
    try:
        xml = save_openvino(net, torch.zeros(batch, *shape), output)
    except InputError as exc:
        fail(f"cannot export {path}: {exc}")
    except RuntimeError as exc:
        fail(f"cannot export {path}: {exception_line(exc)}")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(str(xml))
