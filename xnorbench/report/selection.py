"""Which trained networks a table shows: cells pooled over seeds, paired by recipe key.

A *cell* is one variant (float, or XNOR under one gradient rule) of one network on one
dataset, trained under one resolved recipe (its recipe key), with one value per seed.
Seeds of the same recipe are pooled across runs (the newest run of a seed wins); cells
of different recipes are never pooled and never paired silently.

Without a selection, each (dataset, network) shows the recipe that ranks first:
full-data before subset, then one that has both variants, then the larger training set,
the larger test set, more epochs, more seeds, the newest run. A quick subset run
therefore never replaces a headline (``table`` says on stderr what it does not show).
``--run`` / ``--tag`` restrict the candidates to exactly the runs named; within such a
selection a float and an XNOR cell of different recipes may be paired, and the table
labels that pair as such.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..db import Run, Store
from ..training.recipes import Recipe, recipe_from

CELL_METRICS = ("final_test_accuracy", "best_test_accuracy", "packed_test_accuracy",
                "packed_agreement", "packed_file_bytes", "xnor_packed_latency_ms",
                "float_latency_ms")


@dataclass(frozen=True)
class Selection:
    """What the user asked a table to show: run ids and/or a tag (None: rank by default)."""

    run_ids: tuple[int, ...] | None = None
    tag: str | None = None

    @property
    def forced(self) -> bool:
        return self.run_ids is not None or self.tag is not None

    def runs(self, store: Store, suite: str) -> list[Run]:
        """Finished runs of ``suite`` in the selection, newest first."""
        return store.runs(suite=suite, status="finished", ids=self.run_ids, tag=self.tag)

    def describe(self) -> str:
        parts = []
        if self.run_ids is not None:
            parts.append("runs " + ",".join(map(str, self.run_ids)))
        if self.tag is not None:
            parts.append(f"tag {self.tag!r}")
        return " and ".join(parts) if parts else "the default ranking"


@dataclass
class SeedValues:
    seed: int | None
    run: Run
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Cell:
    """One variant under one recipe, its values per seed."""

    dataset: str
    model: str
    variant: str          # float, xnor, or a compare label such as xnor-paper
    rule: str | None      # the XNOR gradient rule (None for float)
    key: str | None
    params: dict[str, Any]
    seeds: dict[int | None, SeedValues] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def runs(self) -> list[Run]:
        by_id = {s.run.id: s.run for s in self.seeds.values()}
        return [by_id[i] for i in sorted(by_id)]

    def values(self, metric: str) -> list[float]:
        return [s.values[metric] for _, s in sorted(self.seeds.items(), key=_seed_order)
                if metric in s.values]

    def mean(self, metric: str) -> float | None:
        v = self.values(metric)
        return statistics.fmean(v) if v else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation over seeds (None with fewer than two)."""
        v = self.values(metric)
        return statistics.stdev(v) if len(v) > 1 else None

    @property
    def full_data(self) -> bool:
        """Trained and tested on whole splits (rows before ``subset`` was stored: no limit)."""
        if "subset" in self.params:
            return not self.params["subset"]
        return all((r.params or {}).get("limit_train") is None
                   and (r.params or {}).get("limit_test") is None for r in self.runs)

    @property
    def recipe(self) -> Recipe:
        return recipe_from(self.params)

    @property
    def newest(self) -> Any:
        return max(r.started_at for r in self.runs)


def _seed_order(item: tuple[int | None, SeedValues]) -> tuple[int, int]:
    seed = item[0]
    return (0, seed) if seed is not None else (1, 0)


def collect_cells(store: Store, runs: Iterable[Run]) -> list[Cell]:
    """Every cell in ``runs`` (newest first): rows grouped by data, net, recipe, variant."""
    cells: dict[tuple, Cell] = {}
    for run in runs:
        for r in store.results([run.id]):
            if r.metric not in CELL_METRICS or r.variant is None:
                continue
            p = r.params or {}
            rule = None if r.variant == "float" else p.get("grad_rule")
            key = (r.dataset, r.model, r.recipe_key, r.variant, rule)
            cell = cells.setdefault(key, Cell(r.dataset or "", r.model or "", r.variant, rule,
                                              r.recipe_key, p))
            seed = r.seed if r.seed is not None else p.get("seed")
            sv = cell.seeds.setdefault(seed, SeedValues(seed, run))
            if sv.run.id == run.id and r.value is not None:  # an older run of a seed
                sv.values.setdefault(r.metric, r.value)      # already seen is ignored
    return [c for c in cells.values() if c.values("final_test_accuracy")]


@dataclass
class PairRow:
    """One line of the mission table: an XNOR cell beside the float cell it is paired with."""

    dataset: str
    model: str
    xnor: Cell | None
    float: Cell | None
    mismatched: bool = False    # forced together from different recipes
    others: list[Cell] = field(default_factory=list)  # recipes not shown


def shown_cells(pairs: Iterable[PairRow]) -> Iterable[Cell]:
    """Every cell of ``pairs``, XNOR before float, each once."""
    seen: set[int] = set()
    for r in pairs:
        for c in (r.xnor, r.float):
            if c is not None and id(c) not in seen:
                seen.add(id(c))
                yield c


def _rank(cells: list[Cell]) -> tuple:
    c = cells[0]
    p = c.params
    both = {x.variant for x in cells} >= {"float", "xnor"}
    return (c.full_data, both, p.get("train_size") or 0, p.get("test_size") or 0,
            p.get("epochs") or 0, max(x.n for x in cells), max(x.newest for x in cells))


def _rule_order(cell: Cell) -> tuple[int, str]:
    """The rule the recipe names first, then alphabetical."""
    return (0 if cell.rule == cell.params.get("grad_rule") else 1, cell.rule or "")


def accuracy_pairs(store: Store, selection: Selection = Selection(),
                   suite: str = "accuracy") -> list[PairRow]:
    """The mission table's lines: per (dataset, network), the chosen recipe's cells."""
    cells = [c for c in collect_cells(store, selection.runs(store, suite))
             if c.variant in ("float", "xnor")]
    by_net: dict[tuple[str, str], dict[str | None, list[Cell]]] = {}
    for c in cells:
        by_net.setdefault((c.dataset, c.model), {}).setdefault(c.key, []).append(c)
    out: list[PairRow] = []
    for (ds, model), by_key in by_net.items():
        ranked = sorted(by_key.values(), key=_rank, reverse=True)
        chosen = ranked[0]
        others = [c for group in ranked[1:] for c in group]
        floats = [c for c in chosen if c.variant == "float"]
        xnors = sorted((c for c in chosen if c.variant == "xnor"), key=_rule_order)
        if selection.forced and (not floats or not xnors):
            # the user named these runs: pair across recipes, and say so
            want = "xnor" if not xnors else "float"
            pool = [c for c in others if c.variant == want]
            if pool:
                best = max(pool, key=lambda c: _rank([c]))
                others = [c for c in others if c is not best]
                if want == "xnor":
                    xnors = [best]
                else:
                    floats = [best]
                out += [PairRow(ds, model, x, floats[0] if floats else None, True, others)
                        for x in xnors]
                continue
        fl = floats[0] if floats else None
        if not xnors:
            out.append(PairRow(ds, model, None, fl, False, others))
        out += [PairRow(ds, model, x, fl, False, others) for x in xnors]
    return out


def pooled_difference(a: Cell, b: Cell, metric: str = "final_test_accuracy"
                      ) -> tuple[float, float | None, str]:
    """(mean a - mean b, pooled std, verdict) of two cells' per-seed values.

    The verdict compares the difference with twice its standard error under the pooled
    standard deviation (a rough two-sample 95 % criterion); with one seed on either side
    no spread is known and the verdict says so.
    """
    va, vb = a.values(metric), b.values(metric)
    diff = statistics.fmean(va) - statistics.fmean(vb)
    na, nb = len(va), len(vb)
    if na < 2 or nb < 2:
        return diff, None, (f"cannot be told from seed noise (n={na} and n={nb}: one seed "
                            "gives no spread)")
    ss = sum((x - statistics.fmean(va)) ** 2 for x in va) + \
        sum((x - statistics.fmean(vb)) ** 2 for x in vb)
    pooled = (ss / (na + nb - 2)) ** 0.5
    se = pooled * (1 / na + 1 / nb) ** 0.5
    if pooled == 0:
        verdict = ("exceeds the seed spread (the seeds agree exactly)" if diff
                   else "is no gap at all")
    elif abs(diff) > 2 * se:
        verdict = (f"exceeds the seed spread (|gap| {abs(diff):.2f} > 2 x standard error "
                   f"{se:.2f}; {abs(diff) / pooled:.1f} pooled std)")
    else:
        verdict = (f"is within the seed spread (|gap| {abs(diff):.2f} <= 2 x standard error "
                   f"{se:.2f}; {abs(diff) / pooled:.1f} pooled std)")
    return diff, pooled, verdict
