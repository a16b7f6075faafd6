"""Suite ``compare``: vanilla vs binary training, and the three gradient rules, in one run.

The same recipe trains the float network, then the XNOR network once per gradient rule
(``corrected``, ``paper``, ``reference``), once per seed; rows (per-epoch test accuracy,
final and best accuracy, seconds per epoch, images/s, CUDA peak memory on GPU, the packed
network's accuracy) share one run and one recipe key (which never includes the rule).
Variant labels: ``float``, ``xnor-corrected``, ``xnor-paper``, ``xnor-reference``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from ..db import Row
from ..runs.options import Opt
from ..runs.registry import SuiteContext, register
from ..training.loop import train
from ..xnor import GRAD_RULES
from .common import (
    Job,
    TrainingParams,
    begin,
    forget_after,
    key_for,
    prepare_training,
    training_check,
    training_options,
)


@dataclass(frozen=True)
class CompareParams(TrainingParams):
    """A training run's params, and the gradient rules XNOR trains under."""

    rules: tuple[str, ...] = tuple(GRAD_RULES)


def jobs(p: CompareParams) -> list[Job]:
    """The trainings of each seed: float, then XNOR under each rule, labelled
    ``xnor-<rule>`` so the rows of the rules stay apart."""
    return [Job("float", "float")] + [Job(f"xnor-{r}", "xnor", r) for r in p.rules]


OPTIONS = training_options(Opt("rules", "strs", list(GRAD_RULES),
                               "Gradient rules to train XNOR with.", choices=GRAD_RULES,
                               noun="grad rule"))


@register("compare", "Float vs XNOR under each gradient rule, one recipe, one run.",
          CompareParams,
          check=training_check(jobs), options=OPTIONS, prepare=prepare_training,
          checkpoints=True, distributed=True,
          doc="Vanilla vs binary: float, then XNOR under each gradient rule, same recipe, per "
              "seed.\n\nWith several --seeds the report says whether the gap between two "
              "rules exceeds their seed-to-seed spread.")
def run_compare(ctx: SuiteContext, p: CompareParams) -> Iterator[Row]:
    bundle, done, first = begin(ctx, p)
    yield from first
    extra = {"recipe": p.recipe, "seeds": list(p.seeds)}
    for seed in p.seeds:
        recipe = p.recipe_for(seed)
        key = key_for(recipe, p, bundle)
        for label, variant, rule in jobs(p):
            rec = recipe if rule is None else replace(recipe, grad_rule=rule)
            if (label, seed) in done:
                continue
            name = f"{label}-seed{seed}"
            yield from train(bundle, p.model, variant, rec, device=ctx.device,
                             progress=ctx.progress, checkpoint=ctx.checkpoint_path(name),
                             resume=ctx.resume, label=label,
                             on_resume=forget_after(ctx, label, seed), recipe_key=key,
                             extra=extra, binding=ctx.binding,
                             packed_path=ctx.checkpoint_path(name).with_suffix(".packed"))
