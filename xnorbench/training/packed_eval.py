"""The trained XNOR network, packed to bits and run through the C++ kernel.

A trained XNOR model is written with :func:`~xnorbench.xnor.save_packed`, read back with
:func:`~xnorbench.xnor.load_packed`, its XNOR layers swapped for the packed-kernel layers
(:func:`~xnorbench.xnor.packed.pack_model`) and evaluated on the CPU over the whole test
split. The rows say whether the 1-bit file classifies like the simulated model that
training evaluated: packed accuracy, the share of test images on which both predict the
same class, the file's size, and batch-1 CPU latency beside the float network's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.splits import DataBundle
from ..db import Row
from ..measure.timing import compare
from ..progress import Progress
from ..xnor import load_packed, save_packed
from ..xnor.inference.packed_layers import pack_model
from ..xnor.kernels import kernel_isa
from ..xnor.networks import model_spec, models
from .checkpoints import CheckpointError, write_failure
from .loaders import eval_loader

LATENCY_ROUNDS = 3


@torch.no_grad()
def predict(model: nn.Module, loader: Any, progress: Progress | None = None,
            what: str = "packed test") -> torch.Tensor:
    """Predicted classes of ``model`` over ``loader`` (CPU)."""
    model.eval()
    preds = []
    items = progress.track(loader, what) if progress else loader
    for x, _ in items:
        preds.append(model(x).argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def packed_rows(model: nn.Module, model_name: str, bundle: DataBundle,
                simulated: torch.Tensor, path: Path, *, progress: Progress | None = None,
                row: dict[str, Any]) -> Iterator[Row]:
    """Pack ``model`` to ``path``, reload it, evaluate it with the kernel; yield its rows.

    ``simulated`` holds the simulated model's predicted class per test image (in test
    order); ``row`` the fields every row of this training carries.
    """
    cpu_model = copy.deepcopy(model).float().cpu().eval()
    cpu_model = cpu_model.to(memory_format=torch.contiguous_format)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_bytes = save_packed(cpu_model, path)
    except OSError as exc:  # a full disk: no half-written file stays behind
        path.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the packed network {path}: "
                              f"{write_failure(exc, path)}") from None
    # the network was named by the user (a factory too): the reload may build it
    factory = model_name if model_spec.is_factory(model_name) else None
    packed = pack_model(load_packed(path, factory=factory))

    loader = eval_loader(bundle, 256, "cpu")
    preds = predict(packed, loader, progress)
    labels = bundle.test.labels.cpu()
    n = max(len(labels), 1)
    acc = 100.0 * int((preds == labels).sum()) / n
    agree = 100.0 * int((preds == simulated.cpu()).sum()) / n
    threads = torch.get_num_threads()
    base = dict(row)
    params = {**base.pop("params"), "kernel_isa": kernel_isa(), "packed_file": str(path),
              "threads": threads, "input": [bundle.in_channels, *bundle.image_size]}
    yield Row("packed_test_accuracy", acc, "%", params=params, **base)
    yield Row("packed_agreement", agree, "%", params=params, **base)
    yield Row("packed_file_bytes", float(file_bytes), "bytes", params=params, **base)
    x1 = next(iter(eval_loader(bundle, 1, "cpu")))[0]
    fmodel = models.build(model_name, binary=False, in_channels=bundle.in_channels,
                          input_size=bundle.image_size,
                          num_classes=bundle.num_classes).eval()
    with torch.no_grad():
        t = compare({"float": lambda: fmodel(x1), "xnor_packed": lambda: packed(x1)},
                    threads=threads, rounds=LATENCY_ROUNDS)
    for variant, tm in t.items():
        yield Row(f"{variant}_latency_ms", tm.median_ms, "ms",
                  params={**params, "batch": 1, **tm.spread()},
                  **base)


def float_weights_row(model: nn.Module, bundle: DataBundle, path: Path,
                      row: dict[str, Any]) -> Iterator[Row]:
    """Keep the trained float network's weights (tensors only: they load without running
    code) at ``path``, for the trade-off suite's int8 and bf16 forms of it; one row says
    where and how large."""
    state = {k: v.detach().float().cpu().contiguous()
             for k, v in model.state_dict().items() if v.is_floating_point()}
    state.update({k: v.detach().cpu() for k, v in model.state_dict().items()
                  if not v.is_floating_point()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
    except OSError as exc:
        path.with_suffix(".tmp").unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the float network {path}: "
                              f"{write_failure(exc, path)}") from None
    base = dict(row)
    params = {**base.pop("params"), "weights_file": str(path),
              "input": [bundle.in_channels, *bundle.image_size]}
    yield Row("float_weights_file_bytes", float(path.stat().st_size), "bytes", params=params,
              **base)
