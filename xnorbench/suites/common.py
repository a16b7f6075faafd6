"""Helpers shared by suites: loading the dataset a run asks for, recording provenance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields
from typing import Any, NamedTuple

from ..data.datasets import DATASETS, load_dataset
from ..data.files import DatasetError, data_dir
from ..data.splits import DataBundle
from ..db import Row
from ..distributed import broadcast
from ..errors import InputError
from ..runs import options as o
from ..runs.options import Opt
from ..runs.params import SuiteParams
from ..runs.registry import CheckFn, SuiteContext
from ..training.loop import restore, train
from ..training.recipes import (
    BASE,
    PRESETS,
    Recipe,
    RecipeOptions,
    option,
    recipe_key,
    resolve,
    show_value,
)
from ..training.setup import TrainingJob
from ..variants import Variant
from ..xnor.networks.models import IMAGENET_MODELS, model_ok


def _seeds_ok(values: list[int], flag: str) -> None:
    for v in values:  # each once: the list parser refuses a value given twice
        o.seed_ok(v, flag)


@dataclass(frozen=True)
class TrainingParams(SuiteParams, RecipeOptions):
    """What a training run (accuracy, compare) stores: every :class:`RecipeOptions` field
    (a :class:`Recipe` but its seed; each declares its own command-line option), the data
    and the network (declared here, the same way), the run's ``seeds``, the preset the
    options were resolved from (``recipe``) and the options given beside it
    (``overridden``), where the data is. Defaults are :data:`BASE`'s."""

    dataset: str = field(default="mnist", metadata=option(
        "str", "mnist, fashion-mnist, kmnist (IDX files under DATA/<MNIST|FashionMNIST|KMNIST>"
        "/raw), cifar10, or imagefolder (DATA/train/<class>/* and DATA/test/ or DATA/val/; "
        "channels, size, classes and normalization from the data).", choices=DATASETS))
    model: str = field(default="lenet5", metadata=option(
        "str", "resnet18, lenet5, nin, or resnet18-imagenet (the paper's ImageNet ResNet-18: "
        "224x224 crops read from an imagefolder tree of any image sizes, top-5 beside "
        "top-1), torchvision:NAME (untrained; :cifar for a 3x3 stem on 32x32 images) or "
        "module.path:function (your factory returning an nn.Module); XNOR variants go "
        "through xnorbench.binarize.", check=model_ok))
    limit_train: int | None = field(default=None, metadata=option(
        "int", "Train on a seeded subset of this many images (0: the whole split).",
        check=o.non_negative))
    limit_test: int | None = field(default=None, metadata=option(
        "int", "Test on a seeded subset of this many images (0: the whole split).",
        check=o.non_negative))
    seeds: tuple[int, ...] = field(default=(0,), metadata=option(
        "ints", "Seeds, e.g. 0,1,2: each variant trains once per seed within the run; "
        "tables show mean +- std (n).", check=_seeds_ok, minimum=0))
    data_dir: str | None = None
    download: bool = False
    recipe: str | None = None
    overridden: tuple[str, ...] = ()

    @classmethod
    def upgrade(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """A run stored with one ``seed`` (before ``seeds``) keeps it."""
        if "seeds" not in stored and "seed" in stored:
            stored["seeds"] = [stored.pop("seed")]
        return stored

    def recipe_for(self, seed: int) -> Recipe:
        """The :class:`Recipe` one seed of this run trains under: its own recipe fields
        (the fields it inherits), and the seed."""
        own = {f.name: getattr(self, f.name) for f in fields(RecipeOptions)}
        return Recipe(**own, seed=seed)


PACKED_METRICS = ("packed_test_accuracy", "packed_agreement", "packed_file_bytes",
                  "float_latency_ms", "xnor_packed_latency_ms")
"""Rows of the trained XNOR network run through the packed kernel (once per training)."""

SUMMARY_METRICS = ("final_test_accuracy", "final_test_top5_accuracy", "best_test_accuracy",
                   "train_cuda_max_allocated_mib", "float_weights_file_bytes",
                   *PACKED_METRICS)
"""Rows a training yields once, after its last epoch (``best_test_accuracy`` last)."""

EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "epoch_seconds", "train_images_per_second")
"""Rows a training yields once per epoch."""


class TrainingKind(NamedTuple):
    """One training of a seed: the label its rows carry, the variant trained (``float``
    or ``xnor``) and, for a comparison of rules, the gradient rule (None: the recipe's)."""

    label: str
    variant: str
    rule: str | None = None


def training_check(jobs: Callable[[Any], list[TrainingKind]]) -> CheckFn:
    """The completeness check of a training suite whose ``jobs(p)`` are the trainings of
    each seed: one ``dataset_size`` row, every epoch's rows and every summary row of
    every training, each exactly once."""

    def check(ctx: SuiteContext, p: TrainingParams) -> list[str]:
        counts = Counter((r.metric, r.variant, r.seed, r.epoch)
                         for r in ctx.store.results([ctx.run_id]))
        out = []
        n_data = sum(v for (m, *_), v in counts.items() if m == "dataset_size")
        if n_data != 1:
            out.append(f"dataset_size ({n_data} rows, want 1)")
        epochs = p.epochs
        imagenet = p.model in IMAGENET_MODELS
        for seed in p.seeds:
            for label, variant, _rule in jobs(p):
                per_epoch = EPOCH_METRICS + (("test_top5_accuracy",) if imagenet else ())
                want = [(m, e) for e in range(1, epochs + 1) for m in per_epoch]
                summary = ["final_test_accuracy", "best_test_accuracy"]
                if imagenet:
                    summary.append("final_test_top5_accuracy")
                if variant == "xnor":
                    summary += PACKED_METRICS
                if ctx.device.startswith("cuda"):
                    summary.append("train_cuda_max_allocated_mib")
                want += [(m, epochs) for m in summary]
                for metric, epoch in want:
                    n = counts[(metric, label, seed, epoch)]
                    if n != 1:
                        out.append(f"{metric} epoch {epoch} of {label} seed {seed} "
                                   f"({n} rows, want 1)")
        return out

    return check


RECIPE_PANEL = "Recipe (each option overrides --recipe)"


def _declared(f: Field[Any]) -> Opt:
    """The option a field declares (:func:`~xnorbench.training.recipes.option`): not given
    (None), it takes the recipe's value, which its help names."""
    spec = f.metadata["option"]
    default = spec["default_help"] or (show_value(BASE[f.name]) if f.name in BASE else None)
    suffix = f" \\[default: {default}, or the recipe's]" if default is not None else ""
    return Opt(f.name, spec["kind"], None, spec["help"] + suffix, check=spec["check"],
               decls=spec["decls"], panel=RECIPE_PANEL, show_default=False,
               choices=spec["choices"], minimum=spec["minimum"], noun=spec["noun"])


DECLARED = {f.name: _declared(f) for f in fields(TrainingParams) if "option" in f.metadata}
"""Every option a training run's params field declares, by name."""


def training_options(choice: Opt) -> tuple[Opt, ...]:
    """The options of a training suite (accuracy, compare): the recipe, the data and the
    network, ``choice`` (its own: which variants, or which gradient rules; ``rules``
    replaces ``--grad-rule``), every other declared field, and how the run happens."""
    first = ("dataset", "model")
    rest = [opt for name, opt in DECLARED.items()
            if name not in first and not (name == "grad_rule" and choice.name == "rules")]
    return (
        Opt("recipe", "str", None, "Named recipe that fills every training option "
            "(`xnorbench recipes` lists them); options given beside it override it.",
            panel=RECIPE_PANEL, show_default=False),
        *(DECLARED[name] for name in first), choice, *rest,
        Opt("seed", "int", None, "One seed (the same as --seeds N).", check=o.seed_ok,
            panel=RECIPE_PANEL, show_default=False, stored_as="seeds"),
        Opt("data_dir", "path", None, "Folder holding MNIST/raw (FashionMNIST/raw, "
            "KMNIST/raw), cifar10-jpeg or cifar-10-batches-py, or the ImageFolder tree "
            "itself \\[default: $XNORBENCH_DATA, else ./data].", show_default=False),
        Opt("download", "bool", False, "Download the dataset if missing.", resume_free=True),
        DEVICE_OPT, THREADS_OPT,
    )


DEVICE_OPT = Opt("device", "device", "auto", "Where to compute: auto picks cuda if present.",
                 param=None)
THREADS_OPT = Opt("threads", "int", None, "torch intra-op threads (recorded).", param=None,
                  check=o.threads_ok)

RECIPE_FLAGS = tuple(name for name in DECLARED if name != "seeds")
"""The options that override a recipe (None: not given): every declared field but the
seeds (``--seed``/``--seeds``, resolved on their own): the recipe's fields, the data and
the network."""


def prepare_training(given: dict[str, Any]) -> dict[str, Any]:
    """The command line's training options (None: not given) resolved through
    ``--recipe`` into the params a training run stores; ``InputError`` on bad input."""
    if given.get("seeds") is not None and given.get("seed") is not None:
        raise InputError("give --seeds or --seed, not both")
    over = {k: given.get(k) for k in RECIPE_FLAGS}
    if given.get("seed") is not None:
        over["seeds"] = (given["seed"],)
    elif (seeds := given.get("seeds")) is not None:
        over["seeds"] = tuple(seeds)
    if (milestones := over.get("milestones")) is not None:
        over["milestones"] = tuple(milestones)
    recipe = given.get("recipe")
    if recipe is not None and recipe not in PRESETS:
        raise InputError(f"unknown recipe {recipe!r}; choose one of {', '.join(PRESETS)} "
                         "(`xnorbench recipes` lists them)")
    p = resolve(recipe, over)
    for limit in ("limit_train", "limit_test"):
        if p[limit] == 0:
            p[limit] = None
    if p["limit_train"] == 1:
        raise InputError("--limit-train 1: BatchNorm needs at least 2 images per batch; "
                         "give 2 or more (or 0 for the whole split)")
    if p["schedule"] == "step" and not p["milestones"]:
        raise InputError("--schedule step needs --milestones (e.g. 15,30,45)")
    folder = data_dir(given.get("data_dir"))
    o.path_ok(folder, "--data-dir")  # before a run exists and the kernels load
    p.update(seeds=list(p["seeds"]), milestones=list(p["milestones"]),
             data_dir=str(folder.resolve()),
             download=bool(given.get("download")))
    for key in ("variant", "rules"):
        if key in given:
            p[key] = given[key]
    return p


def load_for_run(ctx: SuiteContext, p: TrainingParams) -> tuple[DataBundle, Row]:
    """Load ``p.dataset`` as the run asks, and a row that records which files and sizes."""
    bundle = load_dataset(p.dataset, p.data_dir, download=p.download,
                          limit_train=p.limit_train, limit_test=p.limit_test,
                          progress=ctx.progress.track, files=p.model in IMAGENET_MODELS)
    row = Row("dataset_size", len(bundle.train), "images", dataset=bundle.name,
              params={**bundle.provenance})
    return bundle, row


def begin(ctx: SuiteContext, p: TrainingParams
          ) -> tuple[DataBundle, set[tuple[str, int | None]], list[Row]]:
    """Dataset, the (variant, seed) trainings already finished (on --resume), first rows."""
    bundle, data_row = load_for_run(ctx, p)
    if not ctx.resume:
        return bundle, set(), [data_row]
    have = ctx.store.results([ctx.run_id], metric="dataset_size")
    for stored in have:
        same_data(ctx.run_id, stored.params or {}, bundle.provenance)
    done = {(r.variant, r.seed) for r in ctx.store.results([ctx.run_id],
                                                             metric="best_test_accuracy")
            if r.variant}
    done = broadcast(done)  # rank 0 reads the database; the other processes follow it
    return bundle, done, [] if have else [data_row]


def same_data(run_id: int, stored: dict[str, Any], now: dict[str, Any]) -> None:
    """``DatasetError`` if the data a resumed run would read is not what it started on
    (other files at the stored path, or other sizes): one line that says where it looked."""
    keys = ("fingerprint", "train_size", "test_size", "train_full", "test_full")
    differs = [k for k in keys if k in stored and stored[k] != now.get(k)]
    if differs:
        raise DatasetError(
            f"--resume {run_id}: the data at {now.get('data_dir')} is not what run {run_id} "
            f"started on ({', '.join(differs)} differ; it read {stored.get('data_dir')}); "
            "point --data-dir or XNORBENCH_DATA at that data, or start a new run")


def key_for(recipe: Recipe, p: TrainingParams, bundle: DataBundle) -> str:
    """The recipe key of a training of ``p.model`` on ``bundle`` under ``recipe``."""
    return recipe_key(recipe, dataset=bundle.name, model=p.model,
                      train_size=len(bundle.train), test_size=len(bundle.test))


def train_job(ctx: SuiteContext, job: TrainingJob) -> Iterator[Row]:
    """The rows of one training of the run. On a resumed run it continues from its
    checkpoint, if one was written, and first has the store drop the rows it had written
    after that checkpoint (an epoch cut short, a summary), which it then writes again."""
    state = None
    if ctx.resume:
        state = restore(job)
        ctx.store.delete_results_after(ctx.run_id, job.name,
                                       state["epoch"] if state is not None else 0,
                                       seed=job.recipe.seed, metrics=SUMMARY_METRICS)
    yield from train(job, ctx.progress, state)


def job_for(ctx: SuiteContext, p: TrainingParams, bundle: DataBundle, recipe: Recipe,
            variant: str, label: str | None = None) -> TrainingJob:
    """The training of ``variant`` (rows labelled ``label``) under ``recipe`` in this
    run: its recipe key, checkpoint and packed file named after the label and seed."""
    name = f"{label or variant}-seed{recipe.seed}"
    checkpoint = ctx.checkpoint_path(name)
    return TrainingJob(bundle, p.model, variant, recipe, device=ctx.device, label=label,
                       recipe_key=key_for(recipe, p, bundle),
                       extra={"recipe": p.recipe, "seeds": list(p.seeds)},
                       checkpoint=checkpoint, packed_path=checkpoint.with_suffix(".packed"),
                       binding=ctx.binding)


def variants(choice: str) -> list[str]:
    if choice == "both":
        return ["float", "xnor"]
    if choice in ("float", "xnor"):
        return [choice]
    raise ValueError(f"unknown variant {choice!r}; choose float, xnor or both")


def fastest_rows(prefix: str, t: dict[str, Any], fast: str, engines: dict[str, Any],
                 prm: dict[str, Any], tag: dict[str, Any],
                 unavailable: dict[str, str] | None = None, variant: str | None = None
                 ) -> Iterator[Row]:
    """Per precision that ran, the fastest baseline's time and the XNOR time (``fast``'s)
    against it: ``<prefix>fastest_float_ms`` / ``<prefix>speedup_vs_fastest`` (fp32, the
    names rows had before precisions) and ``<prefix>fastest_<bf16|int8>_ms`` /
    ``<prefix>speedup_vs_fastest_<bf16|int8>``, each naming its engine with eager's time
    beside it (the speed suites share them). ``unavailable``: what was left out and why,
    where the suite left out more than the baselines (the sweep's binary peer);
    ``variant``: the speedup rows' variant where ``fast`` is a timing key, not one."""
    from ..measure import baselines

    for precision in baselines.PRECISIONS:
        found = baselines.fastest(t, engines, precision)
        if found is None:
            continue
        fastest, fprm = found
        fprm = {**prm, **fprm}
        if unavailable is not None:
            fprm["unavailable"] = unavailable
        name, suffix = (("float", "") if precision == "fp32"
                        else (precision, f"_{precision}"))
        yield Row(f"{prefix}fastest_{name}_ms", t[fastest].median_ms, "ms",
                  variant=Variant.FLOAT, params=fprm, **tag)
        yield Row(f"{prefix}speedup_vs_fastest{suffix}", t[fastest].median_s
                  / t[fast].median_s, "x", variant=variant or fast, params=fprm, **tag)
