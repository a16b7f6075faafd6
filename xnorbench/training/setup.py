"""One training, described and built one way: :class:`TrainingJob` says what to train
(data, network, variant, recipe, where its rows and files go) and :func:`build_setup`
assembles what its steps run (the network on the device in the recipe's memory format,
the optimizer, the loaders, the XNOR training path). The training loop, its warm-up,
the step timer of a time-boxed run and the scripts that profile a step all build
through it, so none of them trains a network set up differently from the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.splits import DataBundle
from ..distributed import World
from ..variants import PATH_VARIANTS
from ..xnor.layers.step import XNORStep, step_for
from ..xnor.networks import models
from .loaders import make_loaders
from .optim import make_optimizer
from .recipes import Recipe


@dataclass(frozen=True)
class TrainingJob:
    """One training of one variant under one seed (``recipe.seed``).

    ``variant`` (float/xnor) picks the network; ``label`` (default: the variant) is what
    the rows' variant column says, e.g. ``xnor-paper`` in the gradient-rule comparison.
    Every row carries ``recipe_key`` and the seed, plus ``extra`` in its params.
    ``checkpoint``: where each epoch's state is written; ``packed_path``: where the
    trained XNOR network is packed (the float one's weights beside it); ``binding``: what
    a checkpoint must carry to be resumed from (database and run)."""

    bundle: DataBundle
    model_name: str
    variant: str
    recipe: Recipe
    device: str = "cpu"
    label: str | None = None
    recipe_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    packed_path: Path | None = None
    binding: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The label its rows carry."""
        return self.label or self.variant

    @property
    def bound(self) -> dict[str, Any]:
        """What its checkpoints carry and a resume checks: the run's binding, the recipe
        key, the label and the seed."""
        return {**self.binding, "recipe_key": self.recipe_key, "variant": self.name,
                "seed": self.recipe.seed}


@dataclass
class TrainingSetup:
    """What a training step runs: the network (on the device, in the recipe's memory
    format), its optimizer, the train and test loaders, and the XNOR training path (None
    for float)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Any
    test_loader: Any
    step: XNORStep | None


def build_model(model_name: str, variant: str, bundle: DataBundle, grad_rule: str) -> nn.Module:
    """The network ``model_name`` for ``bundle``'s images and classes, float or XNOR."""
    return models.build(model_name, binary=(variant == "xnor"), in_channels=bundle.in_channels,
                        num_classes=bundle.num_classes, grad_rule=grad_rule,
                        input_size=bundle.image_size)


def make_xnor_step(model: nn.Module, variant: str, recipe: Recipe) -> XNORStep | None:
    """The recipe's XNOR training path for ``model`` (None for float)."""
    if variant != "xnor":
        return None
    path = PATH_VARIANTS.get(recipe.xnor_path)
    if path is None:
        raise ValueError(f"unknown XNOR training path {recipe.xnor_path!r}; choose fused or "
                         "binop")
    return step_for(model, path, recipe.grad_rule)


def build_setup(bundle: DataBundle, model_name: str, variant: str, recipe: Recipe,
                device: str = "cpu", world: World | None = None) -> TrainingSetup:
    """Seed torch with the recipe's seed, then build the network, optimizer, loaders and
    XNOR path as the recipe says (``world``: this process's share of a torchrun launch)."""
    torch.manual_seed(recipe.seed)
    model = build_model(model_name, variant, bundle, recipe.grad_rule).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    train_loader, test_loader = make_loaders(bundle, recipe, device, world)
    return TrainingSetup(model, optimizer, train_loader, test_loader,
                         make_xnor_step(model, variant, recipe))


def setup_of(job: TrainingJob, world: World | None = None) -> TrainingSetup:
    """:func:`build_setup` for a job."""
    return build_setup(job.bundle, job.model_name, job.variant, job.recipe, job.device, world)
