"""Training recipes: every option a float/XNOR pair shares, named presets, and the recipe key.

A :class:`Recipe` is everything that decides how a network trains except the variant
(float or XNOR) and the seed. Float and XNOR of one run train under the same resolved
recipe; :func:`recipe_key` hashes it (with the dataset, the model and the data sizes) so
that tables pair only cells trained the same way, and pool seeds only within one recipe.

``PRESETS`` is the one readable place where named recipes live (``--recipe NAME``).
Explicit command-line flags override a preset; what is stored is the resolved recipe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..checks import epochs_ok, lr_ok, non_negative, positive, probability
from ..variants import GRAD_RULES, XNOR_PATHS

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
DECAY_SCOPES = ("weights", "all")
AUGMENTATIONS = ("auto", "none", "crop-flip", "crop")
BN_FLOOR = 0.01
"""The original port clamps every BatchNorm scale to at least this before a forward."""


def option(kind: str, help_: str, *decls: str, check: Callable[[Any, str], None] | None = None,
           choices: tuple[str, ...] = (), noun: str = "", minimum: int = 1,
           default_help: str | None = None) -> dict[str, Any]:
    """A field's declaration as a command-line option (its ``metadata``): how the command
    line spells it (``kind``, ``decls``), its help, its check and choices. A training
    suite's command is built from these (``suites/common.training_options``), so an
    option is declared once, beside the field it sets. ``default_help``: what the help
    says the default is, where the field's default is not it (``lr``: per optimizer)."""
    return {"option": {"kind": kind, "help": help_, "decls": decls, "check": check,
                       "choices": choices, "noun": noun, "minimum": minimum,
                       "default_help": default_help}}


@dataclass(frozen=True)
class RecipeOptions:
    """Every choice of how a network trains but the seed, each declared once with its
    command-line option: a training run's params hold these fields, and its
    :class:`Recipe` is built from them."""

    epochs: int = field(default=1, metadata=option("int", "Training epochs.", check=epochs_ok))
    batch_size: int = field(default=128, metadata=option("int", "Training batch size.",
                                                         check=positive))
    optimizer: str = field(default="sgd", metadata=option("str", "sgd or adam.",
                                                          choices=OPTIMIZERS))
    lr: float | None = field(default=None, metadata=option(  # None: the optimizer's default
        "float", "Learning rate.", check=lr_ok, default_help="0.1 for sgd, 1e-3 for adam"))
    momentum: float = field(default=0.9, metadata=option("float", "SGD momentum.",
                                                         check=non_negative))
    nesterov: bool = field(default=True, metadata=option(
        "bool", "Nesterov momentum (sgd).", "--nesterov/--no-nesterov"))
    weight_decay: float = field(default=5e-4, metadata=option(
        "float", "Weight decay (L2).", check=non_negative))
    decay_scope: str = field(default="weights", metadata=option(
        "str", "What weight decay applies to: weights (conv/linear weights) or all (every "
        "parameter, as the original port does).", choices=DECAY_SCOPES))
    schedule: str = field(default="cosine", metadata=option(
        "str", "lr schedule: cosine (to 0, per step), step (x --lr-gamma from each "
        "--milestones epoch on) or constant.", choices=SCHEDULES))
    milestones: tuple[int, ...] = field(default=(), metadata=option(
        "ints", "Epochs (counted from 1) from which the step schedule multiplies lr by "
        "--lr-gamma, e.g. 15,30,45."))
    lr_gamma: float = field(default=0.1, metadata=option(
        "float", "Factor of the step schedule.", check=positive))
    augment: str = field(default="auto", metadata=option(
        "str", "auto (random crop + flip on cifar10, none otherwise), none, crop-flip, or "
        "crop (random crop, no flip: for digits).", choices=AUGMENTATIONS,
        noun="augmentation"))
    bn_clamp: bool = field(default=False, metadata=option(
        "bool", "The original port's guard: clamp every BatchNorm scale to >= 0.01 before "
        "each step.", "--bn-clamp/--no-bn-clamp"))
    grad_rule: str = field(default="corrected", metadata=option(
        "str", "XNOR weight gradient: corrected, paper or reference.", choices=GRAD_RULES))
    amp: bool = field(default=False, metadata=option("bool", "bf16 autocast.",
                                                     "--amp/--no-amp"))
    channels_last: bool = field(default=False, metadata=option(
        "bool", "channels_last memory format.", "--channels-last/--no-channels-last"))
    xnor_path: str = field(default="fused", metadata=option(
        "str", "How XNOR trains: fused (layers binarize inside forward/backward, bits kept "
        "for backward) or binop (the original port's BinOp workflow). Both give the same "
        "results (bit for bit on the CPU); fused is faster and uses less memory.",
        choices=XNOR_PATHS, noun="XNOR training path"))
    sync_bn: bool = field(default=False, metadata=option(
        "bool", "Synchronize BatchNorm statistics across the processes of a torchrun "
        "launch (CUDA).", "--sync-bn/--no-sync-bn"))
    label_smoothing: float = field(default=0.0, metadata=option(
        "float", "Label smoothing of the training loss (0: none).", check=probability))


@dataclass(frozen=True)
class Recipe(RecipeOptions):
    """How one network trains; ``seed`` picks one of the run's seeds."""

    seed: int = 0

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 if self.optimizer == "sgd" else 1e-3

    @property
    def bn_gamma_min(self) -> float | None:
        return BN_FLOOR if self.bn_clamp else None

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the base lr in 0-based ``epoch`` under a ``step`` schedule."""
        return self.lr_gamma ** sum(1 for m in self.milestones if epoch + 1 >= m)

    def augmentation(self, dataset: str) -> str:
        if self.augment != "auto":
            return self.augment
        return "crop-flip" if dataset == "cifar10" else "none"

    def as_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr"] = self.learning_rate
        d["milestones"] = list(self.milestones)
        return d

    def describe(self) -> str:
        """One line: optimizer, lr and schedule, batch, weight decay (for footnotes)."""
        opt = self.optimizer
        if opt == "sgd":
            opt += f" (momentum {self.momentum:g}{', nesterov' if self.nesterov else ''})"
        sched = {"cosine": "cosine to 0", "constant": "constant"}.get(self.schedule, "")
        if self.schedule == "step":
            sched = (f"x{self.lr_gamma:g} from epoch(s) "
                     f"{','.join(map(str, self.milestones)) or '-'}")
        wd = f"weight decay {self.weight_decay:g}" + (
            " on every parameter" if self.decay_scope == "all" else " on conv/linear weights")
        extra = f", BN scales clamped >= {BN_FLOOR:g}" if self.bn_clamp else ""
        if self.label_smoothing:
            extra += f", label smoothing {self.label_smoothing:g}"
        amp = (", bf16 autocast" if self.amp else "") + (
            ", BatchNorm synchronized across processes" if self.sync_bn else "")
        return (f"{self.epochs} epoch(s), {opt} lr {self.learning_rate:g} {sched}, "
                f"batch {self.batch_size}, {wd}{extra}{amp}")


RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
"""Every field of a :class:`Recipe`, the seed among them."""

KEY_EXCLUDES = ("seed", "channels_last", "grad_rule", "xnor_path")
"""Not part of the recipe key: the seed (seeds are pooled within a recipe), the memory
layout and the XNOR training path (they change speed, not what is computed: the fused
path and BinOp train identically, tested), and the XNOR gradient rule (float does not
use it; it belongs to the XNOR variant, and tables keep rules apart)."""


def recipe_key(recipe: Recipe, *, dataset: str, model: str, train_size: int,
               test_size: int) -> str:
    """A stable 12-hex-digit hash of the resolved recipe, data and network, not the variant.

    Float and XNOR trained under one recipe share the key; an XNOR cell is further told
    apart by its gradient rule, which is kept out of the key because float has none.
    """
    d = {k: v for k, v in recipe.as_params().items() if k not in KEY_EXCLUDES}
    d["augment"] = recipe.augmentation(dataset)
    if d["optimizer"] != "sgd":
        d.pop("momentum")
        d.pop("nesterov")
    if d["schedule"] != "step":
        d.pop("milestones")
        d.pop("lr_gamma")
    for later in ("sync_bn", "label_smoothing"):  # options added later: keys of runs
        if not d.get(later):                     # stored before them stay as they were
            d.pop(later, None)
    d.update(dataset=dataset, model=model, train_size=int(train_size),
             test_size=int(test_size))
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Preset:
    """A named recipe: how the network trains (a :class:`Recipe`; its ``seed`` is unused,
    the preset's ``seeds`` are the run's), on which data and network, and the source of
    every choice."""

    name: str
    summary: str
    source: str
    dataset: str
    model: str
    recipe: Recipe
    seeds: tuple[int, ...] = (0,)
    limit_train: int | None = None
    limit_test: int | None = None

    @property
    def values(self) -> dict[str, Any]:
        """Every option the preset sets, as ``--recipe NAME`` applies them."""
        out: dict[str, Any] = {"dataset": self.dataset, "model": self.model}
        out.update((k, v) for k, v in asdict(self.recipe).items() if k != "seed")
        out.update(seeds=self.seeds, limit_train=self.limit_train, limit_test=self.limit_test)
        return out

    def changes(self) -> dict[str, Any]:
        """What the preset sets away from the defaults (what ``xnorbench recipes`` lists)."""
        return {k: v for k, v in self.values.items() if BASE.get(k) != v}


_SHORT_RECIPE = Recipe(batch_size=512, optimizer="adam", lr=2e-3, weight_decay=5e-5,
                       decay_scope="weights", schedule="cosine", label_smoothing=0.1,
                       grad_rule="corrected")
"""What the two short-budget ResNet-18 recipes share (their sources say why)."""

_CIFAR_RESNET = Recipe(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                       nesterov=True, weight_decay=5e-4, decay_scope="weights",
                       schedule="cosine", augment="crop-flip", grad_rule="corrected")
"""The standard CIFAR ResNet recipe (resnet18-cifar10's source says where it comes from)."""

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "port-lenet5",
        "The original PyTorch port's MNIST recipe for LeNet-5.",
        "jiecaoyu/XNOR-Net-PyTorch, MNIST/main.py: SGD lr 0.1, momentum 0.9 (no Nesterov), "
        "weight decay 1e-4 on every parameter, batch 128, 60 epochs, lr x0.1 every 15 epochs "
        "(its adjust_learning_rate counts epochs from 1, so the first drop is at epoch 15), "
        "no augmentation, seed 1, its BinOp gradient (our `reference` rule); "
        "MNIST/models/LeNet_5.py clamps every BatchNorm scale to >= 0.01 before a forward.",
        dataset="mnist", model="lenet5", seeds=(1,),
        recipe=Recipe(epochs=60, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                      nesterov=False, weight_decay=0.0001, decay_scope="all", schedule="step",
                      milestones=(15, 30, 45, 60), lr_gamma=0.1, augment="none", bn_clamp=True,
                      grad_rule="reference")),
    Preset(
        "port-nin",
        "The original PyTorch port's CIFAR-10 recipe for Network-in-Network.",
        "jiecaoyu/XNOR-Net-PyTorch, CIFAR_10/main.py: Adam, every parameter group at lr 0.01 "
        "(the groups' lr overrides the optimizer's 0.10) with weight decay 1e-5, batch 128, "
        "319 epochs (range(1, 320)), lr x0.1 at epochs 120, 200, 240 and 280, seed 1, its "
        "BinOp gradient (`reference`). The port trains on a GCN+ZCA-whitened copy of CIFAR-10 "
        "with no augmentation; here the images are normalised per channel (no ZCA).",
        dataset="cifar10", model="nin", seeds=(1,),
        recipe=Recipe(epochs=319, batch_size=128, optimizer="adam", lr=0.01, weight_decay=1e-05,
                      decay_scope="all", schedule="step", milestones=(120, 200, 240, 280),
                      lr_gamma=0.1, augment="none", grad_rule="reference")),
    Preset(
        "resnet18-cifar10",
        "ResNet-18 (pre-activation, CIFAR stem) on CIFAR-10, one recipe for float and XNOR.",
        "The standard CIFAR ResNet recipe (He et al. 2016; kuangliu/pytorch-cifar, whose "
        "ResNet-18 row is 93.02 %): SGD lr 0.1, momentum 0.9, weight decay 5e-4 on conv and "
        "linear weights, batch 128, random crop (pad 4) + flip, 200 epochs of cosine decay; "
        "Nesterov momentum as in the pre-activation reference. The XNOR variant uses the "
        "corrected gradient; binary networks keep their float first and last layers "
        "(paper sec. 4.1). A time-boxed run overrides --epochs, and the override is stored.",
        dataset="cifar10", model="resnet18", seeds=(0, 1), recipe=_CIFAR_RESNET),
    Preset(
        "resnet18-mnist",
        "ResNet-18 (pre-activation, CIFAR stem on 28x28) on MNIST, one recipe for both.",
        "The CIFAR recipe above with 20 epochs and no augmentation: MNIST converges long "
        "before 200 epochs (float ResNets reach about 99.6 % within 20), and crops or flips "
        "change digits' meaning (a flipped 2 is no 2).",
        dataset="mnist", model="resnet18", seeds=(0, 1),
        recipe=replace(_CIFAR_RESNET, epochs=20, augment="none")),
    Preset(
        "resnet18-cifar10-short",
        "ResNet-18 on CIFAR-10 in minutes of a GPU: one recipe for float and XNOR, sized "
        "by epochs (a time-boxed run stores its epochs as an override).",
        "Made for a short budget, for both variants at once. Adam, because binary networks "
        "train fastest with it (Alizadeh et al., ICLR 2019, 'An empirical study of binary "
        "neural networks' optimisation'; Liu et al., ICML 2021, 'How do Adam and training "
        "strategies help BNNs optimization?': Adam with a decaying lr and little or no "
        "weight decay on the latent weights), and a float ResNet trains well under it too. "
        "lr 2e-3 at batch 512 (1e-3 at 128 scaled by the square root of the batch, Adam's "
        "rule), cosine to 0 per step, weight decay 5e-5 on conv/linear weights (small: "
        "decay pulls latent binary weights towards sign flips), label smoothing 0.1 "
        "(Szegedy et al. 2016; a regularizer that costs nothing per step, for the float "
        "net the small decay leaves under-regularized), random crop (pad 4) + flip.",
        dataset="cifar10", model="resnet18", seeds=(0,),
        recipe=replace(_SHORT_RECIPE, epochs=100, augment="crop-flip")),
    Preset(
        "resnet18-mnist-short",
        "ResNet-18 on MNIST in a minute of a GPU: the CIFAR-10 short recipe, crops only.",
        "resnet18-cifar10-short's optimizer, lr, batch, decay and label smoothing; random "
        "crops (pad 4) but no flips (a flipped digit is another digit, or none); at most 15 "
        "epochs (float ResNets reach about 99.6 % within 10 on MNIST).",
        dataset="mnist", model="resnet18", seeds=(0,),
        recipe=replace(_SHORT_RECIPE, epochs=15, augment="crop")),
    Preset(
        "resnet18-imagenet",
        "The paper's ImageNet ResNet-18 (7x7 stem + max-pool, 224x224 crops), float and XNOR "
        "under one recipe, top-1 and top-5.",
        "From the paper (sec. 4): ImageNet ResNet-18 with its first and last layers "
        "real-valued, 224x224 inputs, top-1 and top-5 reported (top-1: XNOR 51.2 %, float "
        "69.3 %). The standard ImageNet input pipeline: random-resized 224 crop + "
        "flip to train, resize 256 + center crop 224 to evaluate. Chosen here, not read from "
        "the paper (its optimizer settings were not available to check): Adam lr 1e-3, no "
        "weight decay (decay on binary latent weights fights their sign), batch 256, 45 "
        "epochs with lr x0.1 from epochs 30 and 40. Point --data-dir at a tree with train/ "
        "and val/; launch with torchrun on several GPUs.",
        dataset="imagefolder", model="resnet18-imagenet", seeds=(0,),
        recipe=Recipe(epochs=45, batch_size=256, optimizer="adam", lr=0.001, weight_decay=0.0,
                      decay_scope="weights", schedule="step", milestones=(30, 40), lr_gamma=0.1,
                      augment="auto", grad_rule="corrected")),
    Preset(
        "smoke",
        "Seconds on a CPU: LeNet-5 on 2,048 MNIST training and 1,024 test images, 1 epoch.",
        "A first try of the whole pipeline (train, test, pack, run the packed kernel); its "
        "numbers are a subset's and are labelled so in every table.",
        dataset="mnist", model="lenet5", seeds=(0,), limit_train=2048, limit_test=1024,
        recipe=Recipe(epochs=1, batch_size=64, optimizer="adam", lr=0.002, weight_decay=0.0,
                      decay_scope="weights", schedule="cosine", augment="none",
                      grad_rule="corrected")),
)}

BASE: dict[str, Any] = {
    "dataset": "mnist", "model": "lenet5", "limit_train": None, "limit_test": None,
    "seeds": (0,), **{k: v for k, v in asdict(Recipe()).items() if k != "seed"},
}
"""What an option is when neither a flag nor a preset sets it."""


def show_value(v: Any) -> str:
    """An option's value as help texts and tables print it: 0.1, on/off, 15,30, none."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v)) or "none"
    return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def resolve(preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """BASE, then the preset's values, then every override that is not None.

    Returns the resolved options plus ``recipe`` (the preset's name or None) and
    ``overridden`` (the options the flags changed from the preset).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown recipe {preset!r}; choose one of {', '.join(PRESETS)} "
                         "(`xnorbench recipes` lists them)")
    out = dict(BASE)
    values = PRESETS[preset].values if preset else {}
    out.update(values)
    given = {k: v for k, v in overrides.items() if v is not None}
    out.update(given)
    out["milestones"] = tuple(out["milestones"])
    out["seeds"] = tuple(out["seeds"])
    if out["lr"] is None:  # stored resolved: the optimizer's default
        out["lr"] = Recipe(optimizer=out["optimizer"]).learning_rate
    out["recipe"] = preset
    out["overridden"] = sorted(k for k, v in given.items() if preset and values.get(k) != v)
    return out


def recipe_from(p: dict[str, Any], seed: int | None = None) -> Recipe:
    """The :class:`Recipe` in resolved options ``p`` (one seed: ``seed`` or the first)."""
    kw = {k: p[k] for k in RECIPE_FIELDS if k in p and k != "seed"}
    if "milestones" in kw:
        kw["milestones"] = tuple(kw["milestones"])
    seeds = p.get("seeds") or (p.get("seed", 0),)
    return replace(Recipe(**kw), seed=seeds[0] if seed is None else seed)
