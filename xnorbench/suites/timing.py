"""Suite ``timing``: inference latency per layer and end to end, and training step time.

Float vs XNOR with the packed kernels (and the float-simulated XNOR model, which is
what a training port without bit operations runs), measured side by side in one
process at a stated thread count. Weights are random: latency does not depend on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from ..db import Row
from ..harness.registry import SuiteContext, register
from ..harness.timing import compare
from ..harness.training import train_step
from ..xnor import BinOp, binary_layers, models
from ..xnor.kernels import kernel_isa
from ..xnor.models import INPUT_SHAPE, NATIVE_DATASET
from ..xnor.packed import pack_model

DEFAULTS: dict[str, Any] = {
    "models": ["resnet18", "lenet5", "nin"], "batches": [1, 64], "threads": 1,
    "train_batch": 32, "rounds": 3, "min_run_time": 0.05, "per_layer": True, "seed": 0,
}


def _layer_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The input tensor each named module sees during one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_pre_hook(
        lambda _m, args, n=n: seen.__setitem__(n, args[0].detach().clone())) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@register("timing", "Latency per layer and end to end, float vs packed XNOR; train steps.",
          DEFAULTS)
def run_timing(ctx: SuiteContext, params: dict[str, Any]) -> Iterator[Row]:
    p = {**DEFAULTS, **params}
    threads = p["threads"]
    torch.set_num_threads(threads)
    isa = kernel_isa()
    for name in ctx.progress.track(p["models"], "models"):
        torch.manual_seed(p["seed"])
        fmodel = models.build(name, binary=False).eval()
        xmodel = models.build(name, binary=True).eval()
        packed = pack_model(xmodel)
        base = {"threads": threads, "kernel_isa": isa, "input": list(INPUT_SHAPE[name])}
        tag = {"dataset": NATIVE_DATASET[name], "model": name}
        for batch in p["batches"]:
            x = torch.randn(batch, *INPUT_SHAPE[name])
            with torch.no_grad():
                t = compare({"float": lambda m=fmodel, x=x: m(x),
                             "xnor": lambda m=packed, x=x: m(x),
                             "xnor_simulated": lambda m=xmodel, x=x: m(x)},
                            threads=threads, rounds=p["rounds"], min_run_time=p["min_run_time"])
            prm = {**base, "batch": batch}
            for variant, tm in t.items():
                yield Row("inference_latency_ms", tm.median_ms, "ms", variant=variant,
                          params={**prm, "iqr_ms": tm.iqr_s * 1e3, "runs": tm.runs}, **tag)
            yield Row("inference_speedup", t["float"].median_s / t["xnor"].median_s, "x",
                      variant="xnor", params=prm, **tag)
        if p["per_layer"]:
            names = [n for n, _ in binary_layers(xmodel)]
            x1 = torch.randn(1, *INPUT_SHAPE[name])
            inputs = _layer_inputs(xmodel, x1, names)
            fmods, pmods = dict(fmodel.named_modules()), dict(packed.named_modules())
            for lname in ctx.progress.track(names, f"{name} layers"):
                xin = inputs[lname]
                with torch.no_grad():
                    t = compare({"float": lambda m=fmods[lname], x=xin: m(x),
                                 "xnor": lambda m=pmods[lname], x=xin: m(x)},
                                threads=threads, rounds=p["rounds"],
                                min_run_time=p["min_run_time"] / 2)
                prm = {**base, "batch": 1, "layer": lname, "layer_input": list(xin.shape)}
                for variant, tm in t.items():
                    yield Row("layer_latency_ms", tm.median_ms, "ms", variant=variant,
                              params={**prm, "iqr_ms": tm.iqr_s * 1e3}, **tag)
                yield Row("layer_speedup", t["float"].median_s / t["xnor"].median_s, "x",
                          variant="xnor", params=prm, **tag)
        # training step: float autograd vs XNOR through BinOp (float-simulated binarization)
        xb = torch.randn(p["train_batch"], *INPUT_SHAPE[name])
        yb = torch.randint(0, 10, (p["train_batch"],))
        ftrain = models.build(name, binary=False).train()
        xtrain = models.build(name, binary=True).train()
        fopt = torch.optim.SGD(ftrain.parameters(), lr=1e-3)
        xopt = torch.optim.SGD(xtrain.parameters(), lr=1e-3)
        xbin = BinOp(xtrain)
        t = compare({"float": partial(train_step, ftrain, xb, yb, fopt, None),
                     "xnor": partial(train_step, xtrain, xb, yb, xopt, xbin)},
                    threads=threads, rounds=p["rounds"], min_run_time=p["min_run_time"])
        prm = {**base, "batch": p["train_batch"]}
        for variant, tm in t.items():
            yield Row("train_step_ms", tm.median_ms, "ms", variant=variant,
                      params={**prm, "iqr_ms": tm.iqr_s * 1e3}, **tag)
        yield Row("train_step_ratio", t["xnor"].median_s / t["float"].median_s, "x",
                  variant="xnor", params=prm, **tag)
