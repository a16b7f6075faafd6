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
from ..xnor import GRAD_RULES
from .common import (
    TrainingKind,
    TrainingParams,
    begin,
    job_for,
    prepare_training,
    train_job,
    training_check,
    training_options,
)


@dataclass(frozen=True)
class CompareParams(TrainingParams):
    """A training run's params, and the gradient rules XNOR trains under."""

    rules: tuple[str, ...] = tuple(GRAD_RULES)


def jobs(p: CompareParams) -> list[TrainingKind]:
    """The trainings of each seed: float, then XNOR under each rule, labelled
    ``xnor-<rule>`` so the rows of the rules stay apart."""
    return [TrainingKind("float", "float")] + [TrainingKind(f"xnor-{r}", "xnor", r)
                                               for r in p.rules]


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
    for seed in p.seeds:
        recipe = p.recipe_for(seed)
        for label, variant, rule in jobs(p):
            rec = recipe if rule is None else replace(recipe, grad_rule=rule)
            if (label, seed) not in done:
                yield from train_job(ctx, job_for(ctx, p, bundle, rec, variant, label))
