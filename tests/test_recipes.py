"""Named recipes resolve, flags override them, and the recipe key means 'trained the same'."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Store
from xnorbench.training.recipes import PRESETS, Recipe, recipe_from, recipe_key, resolve

runner = CliRunner()


def test_port_lenet5_is_the_ports_mnist_recipe():
    p = resolve("port-lenet5", {})
    assert (p["dataset"], p["model"], p["optimizer"], p["lr"], p["momentum"]) == \
        ("mnist", "lenet5", "sgd", 0.1, 0.9)
    assert p["nesterov"] is False and p["weight_decay"] == 1e-4 and p["decay_scope"] == "all"
    assert (p["batch_size"], p["epochs"], p["grad_rule"], p["seeds"]) == (128, 60,
                                                                          "reference", (1,))
    r = recipe_from(p)
    # the port's adjust_learning_rate: lr * 0.1 ** (epoch // 15), epochs counted from 1
    assert [r.lr_factor(e) for e in (0, 13, 14, 28, 29, 44, 59)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.0001])
    assert r.bn_clamp and r.augmentation("mnist") == "none"


def test_flags_override_a_preset_and_are_recorded():
    p = resolve("port-lenet5", {"lr": 0.01, "epochs": None, "seeds": (0, 1)})
    assert p["lr"] == 0.01 and p["epochs"] == 60 and p["seeds"] == (0, 1)
    assert p["overridden"] == ["lr", "seeds"] and p["recipe"] == "port-lenet5"
    base = resolve(None, {})
    assert base["recipe"] is None and base["overridden"] == [] and base["epochs"] == 1
    assert base["lr"] == 0.1 and resolve(None, {"optimizer": "adam"})["lr"] == 1e-3
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        resolve("nope", {})


def test_every_preset_resolves_to_a_recipe():
    for name in PRESETS:
        p = resolve(name, {})
        r = recipe_from(p)
        assert r.epochs >= 1 and r.learning_rate > 0 and p["seeds"]
        assert r.describe()


def test_a_preset_is_a_recipe_and_a_run_under_it_trains_exactly_that():
    """Presets are :class:`Recipe` instances; resolving one and reading the recipe back
    gives that recipe (first seed), the data and the network it names."""
    for name, preset in PRESETS.items():
        assert isinstance(preset.recipe, Recipe)
        p = resolve(name, {})
        assert recipe_from(p) == replace(preset.recipe, seed=preset.seeds[0]), name
        assert (p["dataset"], p["model"], p["seeds"]) == (preset.dataset, preset.model,
                                                          preset.seeds)
        assert (p["limit_train"], p["limit_test"]) == (preset.limit_train, preset.limit_test)


def _key(recipe: Recipe, **kw) -> str:
    args = {"dataset": "mnist", "model": "lenet5", "train_size": 60000, "test_size": 10000,
            **kw}
    return recipe_key(recipe, **args)


def test_recipe_key_ignores_seed_layout_and_rule_but_nothing_that_trains():
    r = Recipe(epochs=3, lr=0.1)
    k = _key(r)
    assert len(k) == 12 and k == _key(Recipe(epochs=3, lr=0.1))
    assert k == _key(replace(r, seed=7)) == _key(replace(r, channels_last=True))
    assert k == _key(replace(r, grad_rule="reference"))
    assert r.learning_rate == Recipe(epochs=3).learning_rate and k == _key(Recipe(epochs=3))
    for changed in (replace(r, epochs=4), replace(r, lr=0.05), replace(r, nesterov=False),
                    replace(r, weight_decay=0), replace(r, decay_scope="all"),
                    replace(r, schedule="step", milestones=(2,)), replace(r, bn_clamp=True),
                    replace(r, batch_size=64), replace(r, optimizer="adam"),
                    replace(r, augment="crop-flip"), replace(r, amp=True)):
        assert _key(changed) != k, changed
    assert _key(r, train_size=128) != k and _key(r, model="resnet18") != k
    assert _key(r, dataset="cifar10") != k
    # options that do nothing under the recipe do not split it
    adam = Recipe(optimizer="adam")
    assert _key(adam) == _key(replace(adam, momentum=0.5, nesterov=False))


def test_recipes_command_lists_values_and_sources():
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0, res.output
    for name in PRESETS:
        assert name in res.output
    assert "MNIST/main.py" in res.output and "CIFAR_10/main.py" in res.output
    res = runner.invoke(app, ["recipes", "port-nin"])
    assert res.exit_code == 0 and "port-nin" in res.output and "port-lenet5" not in res.output
    res = runner.invoke(app, ["recipes", "bogus"])
    assert res.exit_code == 2 and "unknown recipe 'bogus'" in res.output


def test_cli_recipe_with_override_stores_resolved_values(tmp_path: Path, mnist_dir: Path):
    db = str(tmp_path / "r.db")
    res = runner.invoke(app, ["--db", db, "run", "accuracy", "--recipe", "port-lenet5",
                              "--epochs", "1", "--batch-size", "32", "--variant", "float",
                              "--data-dir", str(mnist_dir), "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    (run,) = store.runs()
    p = run.params
    assert p["recipe"] == "port-lenet5" and sorted(p["overridden"]) == ["batch_size", "epochs"]
    assert (p["epochs"], p["batch_size"], p["lr"], p["weight_decay"]) == (1, 32, 0.1, 1e-4)
    assert p["seeds"] == [1] and run.seed == 1
    (final,) = store.results([run.id], metric="final_test_accuracy")
    assert final.seed == 1 and final.params["nesterov"] is False
    assert final.params["decay_scope"] == "all" and final.params["recipe"] == "port-lenet5"
    res = runner.invoke(app, ["--db", db, "runs", "show", str(run.id), "--json"])
    assert json.loads(res.output)["params"]["milestones"] == [15, 30, 45, 60]
    res = runner.invoke(app, ["--db", db, "table", "--suite", "cells"])
    line = next(x for x in res.output.splitlines() if "LeNet-5" in x)
    assert "| port-lenet5 with batch_size=32, epochs=1 |" in line and "| float |" in line


@pytest.mark.parametrize("args,message", [
    (["--recipe", "bogus"], "unknown recipe 'bogus'"),
    (["--seeds", "0,0"], "0 given twice"),
    (["--seeds", "1", "--seed", "2"], "not both"),
    (["--seeds", "a,b"], "comma-separated list"),
    (["--schedule", "step"], "needs --milestones"),
    (["--decay-scope", "bn"], "unknown decay scope 'bn'"),
    (["--augment", "mixup"], "unknown augmentation 'mixup'"),
    (["--tag", ""], "a tag is 1 to 64 printable characters"),
    (["--limit-train", "-3"], "non-negative"),
])
def test_bad_recipe_input_is_one_line(tmp_path: Path, args, message):
    res = runner.invoke(app, ["--db", str(tmp_path / "b.db"), "run", "accuracy", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "b.db").exists() or Store.open(str(tmp_path / "b.db")).runs() == []


def test_help_names_the_defaults_and_the_recipe():
    res = runner.invoke(app, ["run", "accuracy", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    out = " ".join(res.output.replace("│", " ").split())  # help lines may wrap in the box
    assert "Training epochs. [default: 1, or the recipe's]" in out
    assert "[default: 0.1 for sgd, 1e-3 for adam, or the recipe's]" in out
    assert "[default: $XNORBENCH_DATA, else ./data]" in out


def test_a_run_stored_with_one_seed_keeps_it_on_resume():
    """Runs stored before --seeds had `seed` only; resuming them must not switch to 0."""
    from xnorbench.suites.accuracy import AccuracyParams

    assert AccuracyParams.from_stored({"seed": 3}).seeds == (3,)
    assert AccuracyParams.from_stored({"seeds": [0, 1], "seed": 3}).seeds == (0, 1)
    assert AccuracyParams.from_stored({}).seeds == AccuracyParams().seeds == (0,)


def test_training_params_hold_every_recipe_field_with_its_default():
    """The training suites' params class cannot drift from :class:`Recipe`: every field
    but the seed, at Recipe's default, and a seed's recipe is exactly Recipe's."""
    from xnorbench.suites.common import TrainingParams
    from xnorbench.training.recipes import BASE

    assert set(BASE) | {"data_dir", "download", "recipe", "overridden"} == \
        set(TrainingParams.field_names())
    assert all(getattr(TrainingParams(), k) == v for k, v in BASE.items())
    p = TrainingParams.from_stored({"epochs": 7, "milestones": [2, 4], "seeds": [5, 6]})
    assert p.recipe_for(6) == Recipe(epochs=7, milestones=(2, 4), seed=6)
    assert p.recipe_for(5) == recipe_from(p.asdict())
