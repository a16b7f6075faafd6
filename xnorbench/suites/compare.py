"""Suite ``compare``: vanilla vs binary training, and the three gradient rules, in one run.

The same recipe trains the float network, then the XNOR network once per gradient rule
(``corrected``, ``paper``, ``reference``); rows (per-epoch test accuracy, final and best
accuracy, seconds per epoch, images/s, CUDA peak memory on GPU) share one run so they
are comparable. Variant labels: ``float``, ``xnor-corrected``, ``xnor-paper``,
``xnor-reference``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..db import Row
from ..harness.registry import SuiteContext, register
from ..harness.training import train
from ..xnor import GRAD_RULES
from .accuracy import DEFAULTS as ACC_DEFAULTS
from .accuracy import recipe_from
from .common import begin, forget_after

DEFAULTS: dict[str, Any] = {**ACC_DEFAULTS, "rules": list(GRAD_RULES)}
DEFAULTS.pop("variant")


@register("compare", "Float vs XNOR under each gradient rule, one recipe, one run.", DEFAULTS)
def run_compare(ctx: SuiteContext, params: dict[str, Any]) -> Iterator[Row]:
    p = {**DEFAULTS, **params}
    bundle, done, first = begin(ctx, p)
    yield from first
    recipe = recipe_from(p)
    jobs = [("float", "float", recipe)]
    jobs += [("xnor", f"xnor-{rule}", replace(recipe, grad_rule=rule)) for rule in p["rules"]]
    for variant, label, rec in jobs:
        if label in done:
            continue
        yield from train(bundle, p["model"], variant, rec, device=ctx.device,
                         progress=ctx.progress, checkpoint=ctx.checkpoint_path(label),
                         resume=ctx.resume, label=label, on_resume=forget_after(ctx, label))
