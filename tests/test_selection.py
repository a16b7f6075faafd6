"""What the results table shows: one recipe per line, seeds pooled, nothing replaced silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.db import Row, Store
from xnorbench.report.selection import Selection, accuracy_pairs, pooled_difference
from xnorbench.report.table_format import to_markdown
from xnorbench.report.tables import accuracy_table, per_seed_table

runner = CliRunner()


def fake_run(store: Store, cells: list[tuple[str, int, float]], *, key: str = "k1",
             rule: str = "corrected", subset: bool = False, epochs: int = 5,
             train_size: int = 60000, recipe: str | None = None, lr: float = 0.1,
             model: str = "lenet5") -> int:
    """A finished accuracy run whose rows say: (variant, seed, final accuracy) per cell."""
    rid = store.start_run("accuracy", {"limit_train": 512 if subset else None},
                          {"device": "cpu", "cpu_model": "test CPU", "threads": 1,
                           "git_commit": "abcdef0123", "git_dirty": False})
    for variant, seed, final in cells:
        params = {"epochs": epochs, "batch_size": 128, "optimizer": "sgd", "lr": lr,
                  "grad_rule": rule, "train_size": train_size, "test_size": 10000,
                  "subset": subset, "recipe": recipe, "seed": seed}
        common = {"dataset": "mnist", "model": model, "variant": variant, "seed": seed,
                  "recipe_key": key, "params": params, "epoch": epochs}
        rows = [Row("final_test_accuracy", final, "%", **common),
                Row("best_test_accuracy", final + 0.5, "%", **common)]
        if variant == "xnor":
            rows += [Row("packed_test_accuracy", final, "%", **common),
                     Row("packed_agreement", 100.0, "%", **common)]
        store.add_rows(rid, rows)
    store.finish_run(rid, "finished")
    return rid


def lenet_lines(t) -> list[list[str]]:
    return [r for r in t.rows if r[1].startswith("LeNet-5")]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "sel.db"))


def test_seeds_pool_into_mean_std_n_with_one_recipe_note(store: Store):
    fake_run(store, [("float", 0, 99.0), ("xnor", 0, 97.0), ("float", 1, 99.4),
                     ("xnor", 1, 98.0)], recipe="smoke")
    t = accuracy_table(store)
    (line,) = lenet_lines(t)
    assert line[2] == "97.50 ± 0.71 % (n=2) [1]" and line[3] == "99.20 ± 0.28 % (n=2) [1]"
    assert line[4] == "97.50 % (agrees on 100.00 %)"
    (note,) = t.footnotes
    assert note.startswith("[1] recipe smoke, key k1: 5 epoch(s), sgd") and "seeds 0,1" in note
    assert "full data" in note and "commit abcdef0" in note
    seeds = per_seed_table(store)
    assert [(r[2], r[3], r[5], r[6]) for r in seeds.rows] == [
        ("XNOR, corrected rule", "0", "97.00", "97.50"), ("XNOR, corrected rule", "1", "98.00",
                                                          "98.50"),
        ("float", "0", "99.00", "99.50"), ("float", "1", "99.40", "99.90")]


def test_a_later_subset_run_never_replaces_the_headline(store: Store):
    fake_run(store, [("float", 0, 99.0), ("xnor", 0, 97.0)])
    before = lenet_lines(accuracy_table(store))
    quick = fake_run(store, [("float", 0, 10.2), ("xnor", 0, 9.4)], key="k2", subset=True,
                     epochs=1, train_size=128)
    after = accuracy_table(store)
    assert lenet_lines(after) == before
    assert after.footnotes == accuracy_table(store, Selection(run_ids=(1,))).footnotes[:1]
    assert any(f"(runs {quick})" in n and "not shown" in n for n in after.remarks)
    # named, it is shown, labelled as a subset
    forced = accuracy_table(store, Selection(run_ids=(quick,)))
    (line,) = lenet_lines(forced)
    assert line[2] == "9.40 % (n=1), subset [1]" and "SUBSET" in forced.footnotes[0]
    # so is a tagged run
    store.tag(quick, "quick")
    assert lenet_lines(accuracy_table(store, Selection(tag="quick"))) == [line]


def test_more_data_outranks_a_newer_longer_subset(store: Store):
    fake_run(store, [("float", 0, 95.0), ("xnor", 0, 90.0)], key="big", subset=True,
             train_size=2048, epochs=1)
    fake_run(store, [("float", 0, 80.0), ("xnor", 0, 70.0)], key="small", subset=True,
             train_size=128, epochs=20)
    (line,) = lenet_lines(accuracy_table(store))
    assert line[2].startswith("90.00 %")


def test_pairs_only_within_a_recipe_unless_forced_and_then_labelled(store: Store):
    a = fake_run(store, [("xnor", 0, 97.0)], key="ka", lr=0.1)
    b = fake_run(store, [("float", 0, 99.0)], key="kb", lr=0.05)
    (line,) = lenet_lines(accuracy_table(store))
    assert "n/a (not run under this recipe)" in line
    forced = accuracy_table(store, Selection(run_ids=(a, b)))
    (line,) = lenet_lines(forced)
    assert line[2] == "97.00 % (n=1), different recipes [1]"
    assert line[3] == "99.00 % (n=1), different recipes [2]"
    assert "key ka" in forced.footnotes[0] and "lr 0.1" in forced.footnotes[0]
    assert "key kb" in forced.footnotes[1] and "lr 0.05" in forced.footnotes[1]
    assert any("not a like-for-like pair" in n for n in forced.footnotes)
    (pair,) = accuracy_pairs(store, Selection(run_ids=(a, b)))
    assert pair.mismatched


def test_seeds_of_one_recipe_pool_across_runs_newest_seed_wins(store: Store):
    fake_run(store, [("float", 0, 99.0), ("xnor", 0, 97.0)])
    fake_run(store, [("float", 1, 99.2), ("xnor", 1, 97.4), ("xnor", 0, 96.0)])
    (pair,) = accuracy_pairs(store)
    assert pair.float.n == 2 and pair.xnor.n == 2
    assert pair.xnor.values("final_test_accuracy") == [96.0, 97.4]  # seed 0 from the newer run


def test_two_rules_under_one_recipe_get_a_line_each(store: Store):
    fake_run(store, [("float", 1, 99.3), ("xnor", 1, 10.1)], rule="reference",
             recipe="port-lenet5")
    fake_run(store, [("xnor", 1, 99.1)], rule="corrected", recipe="port-lenet5")
    lines = lenet_lines(accuracy_table(store))
    assert [line[1] for line in lines] == ["LeNet-5 (corrected rule)", "LeNet-5 (reference rule)"]
    assert all(line[3].startswith("99.30 %") for line in lines)


def test_pooled_difference_says_whether_a_gap_exceeds_the_seed_spread(store: Store):
    from xnorbench.report.selection import Cell

    def cell(values):
        c = Cell("mnist", "lenet5", "xnor-x", "x", "k", {})
        run = store.run(fake_run(store, []))
        for i, v in enumerate(values):
            from xnorbench.report.selection import SeedValues
            c.seeds[i] = SeedValues(i, run, {"final_test_accuracy": v})
        return c

    gap, pooled, verdict = pooled_difference(cell([98.0, 98.2, 98.1]), cell([97.0, 97.1, 96.9]))
    assert gap == pytest.approx(1.1) and pooled == pytest.approx(0.1)
    assert verdict.startswith("exceeds the seed spread")
    gap, pooled, verdict = pooled_difference(cell([98.0, 97.0, 98.5]), cell([97.9, 97.4, 98.0]))
    assert verdict.startswith("is within the seed spread")
    _, pooled, verdict = pooled_difference(cell([98.0]), cell([97.0]))
    assert pooled is None and verdict.startswith("cannot be told from seed noise")


def test_smoke_recipe_two_seeds_then_quick_run_leaves_the_table(tmp_path: Path,
                                                                mnist_dir: Path):
    db = str(tmp_path / "s.db")
    base = ["--db", db, "run", "accuracy", "--data-dir", str(mnist_dir), "--device", "cpu",
            "--no-progress"]
    res = runner.invoke(app, [*base, "--recipe", "smoke", "--seeds", "0,1", "--batch-size",
                              "32"])
    assert res.exit_code == 0, res.output
    table = runner.invoke(app, ["--db", db, "table"]).stdout
    line = next(x for x in table.splitlines() if "LeNet-5" in x)
    assert line.count("(n=2)") == 2 and "[1]" in line and "[2]" not in table
    notes = [x for x in table.splitlines() if x.startswith("[")]
    assert len(notes) == 1 and "recipe smoke" in notes[0] and "seeds 0,1" in notes[0]
    res = runner.invoke(app, [*base, "--limit-train", "32", "--limit-test", "16", "--tag",
                              "quick"])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, ["--db", db, "table"]).stdout
    assert next(x for x in again.splitlines() if "LeNet-5" in x) == line
    assert [x for x in again.splitlines() if x.startswith("[")] == notes
    out = tmp_path / "again.md"
    res = runner.invoke(app, ["--db", db, "table", "--output", str(out)])
    assert out.read_text() == table  # the very same table, byte for byte
    assert "note: not shown for MNIST / LeNet-5" in res.stderr  # and the user is told
    seeds = runner.invoke(app, ["--db", db, "table", "--suite", "seeds"])
    assert "note: not shown for MNIST / LeNet-5" in seeds.stderr  # the per-seed view too
    assert "subset" not in seeds.stdout and "| 2 |" not in seeds.stdout  # run 2 hidden
    quick = runner.invoke(app, ["--db", db, "table", "--tag", "quick"]).output
    assert "subset" in next(x for x in quick.splitlines() if "LeNet-5" in x)
    res = runner.invoke(app, ["--db", db, "table", "--tag", "nope"])
    assert res.exit_code == 2 and "no run has this tag" in res.output
    res = runner.invoke(app, ["--db", db, "table", "--run", "99"])
    assert res.exit_code == 2 and "no run with id 99" in res.output


def test_runs_tag_and_untag(tmp_path: Path, store: Store):
    db = str(store.engine.url.database)
    rid = fake_run(store, [("float", 0, 99.0)])
    res = runner.invoke(app, ["--db", db, "runs", "tag", str(rid), "headline"])
    assert res.exit_code == 0 and "tagged 'headline'" in res.output
    assert store.tags([rid]) == {rid: ["headline"]}
    assert "headline" in runner.invoke(app, ["--db", db, "runs"]).output
    res = runner.invoke(app, ["--db", db, "runs", "tag", str(rid), "headline", "--remove"])
    assert res.exit_code == 0 and store.tags([rid]) == {}
    res = runner.invoke(app, ["--db", db, "runs", "tag", "42", "x"])
    assert res.exit_code == 2 and "no run with id 42" in res.output
    assert to_markdown(accuracy_table(store))
