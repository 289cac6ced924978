"""Held-out regret: fit without some cells, judge the fit on those cells.

Three ways of holding cells out, each covering every cell exactly once:

- ``seq_len``: leave one seq_len value out (fit on the other values, judge the cells of the one
  left out, for each value in turn): how well the rule carries to a length between (or beyond)
  the measured ones;
- ``rows``: the same for the rows values;
- ``random``: five folds of a seeded random shuffle of the cells, each held out once (a random
  20% hold-out, repeated so that every cell is judged): how well the rule fills gaps in the grid.

The same splits judge every candidate complexity of a fit (topkbench.fit), so the figures of the
chosen one come out of the selection without a refit.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Protocol

import numpy as np

from topkbench.results import CELL_COLUMNS, Points

SCHEMES = ("seq_len", "rows", "random")
LABELS = {"seq_len": "leave one seq_len out", "rows": "leave one rows value out",
          "random": "random 20% held out (5 folds)"}
RANDOM_FOLDS = 5
#: Fixed, so that a module regenerated from the same data is byte-identical.
RANDOM_SEED = 0


class Selects(Protocol):
    def select(self, num_rows: int, max_seq_len: int, k: int) -> str: ...


def held_out_masks(points: Points, scheme: str) -> list[np.ndarray] | None:
    """The held-out cells of each split; None when the scheme has nothing to fit on."""
    n = len(points.cells)
    if scheme == "random":
        if n < 2:
            return None
        folds = min(RANDOM_FOLDS, n)
        order = np.random.default_rng(RANDOM_SEED).permutation(n)
        fold = np.empty(n, dtype=int)
        fold[order] = np.arange(n) % folds
        return [fold == f for f in range(folds)]
    position = CELL_COLUMNS.index(scheme)
    values = points.values(scheme)
    if len(values) < 2:
        return None
    return [np.array([cell[position] == value for cell in points.cells]) for value in values]


def held_out(points: Points, scheme: str,
             fit_all: Callable[[Points], Mapping[Hashable, Selects]]) -> dict[Hashable, np.ndarray] | None:
    """Per key of ``fit_all``'s answer (e.g. a complexity): the held-out regret at every cell.

    ``fit_all(training points)`` returns the rules to judge, by key; None when ``scheme`` has
    nothing to fit on (one value only).
    """
    masks = held_out_masks(points, scheme)
    if masks is None:
        return None
    regret: dict[Hashable, np.ndarray] = {}
    for test in masks:
        rules = fit_all(points.subset(~test))
        held = points.subset(test)
        for key, rule in rules.items():
            choices = [rule.select(r, s, k) for k, r, s in held.cells]
            regret.setdefault(key, np.full(len(points.cells), np.nan))[test] = held.regret_of(choices)
    return regret
