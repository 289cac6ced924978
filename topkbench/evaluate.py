"""How much time a dispatch choice leaves on the table, on points it was not fitted to.

Every figure is over cells (rows, seq_len, k) of a `topkbench.points.Points` table, whose
regret is already the worst over length modes and distributions (see topkbench.fit):

- ``geomean``: geometric-mean regret (1.0 = always the oracle's choice);
- ``max``: the worst regret;
- ``within_5pct``: share of cells with regret <= 1.05;
- ``unavailable``: cells where the choice was unsupported, wrong or failed there. Such a cell has
  infinite regret, so ``geomean`` and ``max`` are ``inf`` as soon as one occurs: a dispatch that
  picks a kernel which cannot run a shape is not a slower dispatch, it is a broken one.

Held-out figures of the fitted thresholds: leave one seq_len value out (fit on every other
seq_len, evaluate on the cells of the one left out, for each value in turn), and likewise for the
rows values. Fixed choices ("always X") and the hand rules (topkbench.rules) need no fitting and
are evaluated on every cell; a rule naming an implementation absent from the data is reported as
not applicable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from topkbench import rules as rules_mod
from topkbench.fit import DEFAULT_MAX_CUTS, DEFAULT_MAX_ROW_BANDS, FitResult, fit_thresholds
from topkbench.points import CELL_COLUMNS, Points

WITHIN = 1.05


@dataclass(frozen=True)
class Figures:
    n: int
    geomean: float
    max: float
    within_5pct: float
    unavailable: int

    @classmethod
    def of(cls, regret: Sequence[float] | np.ndarray) -> "Figures":
        regret = np.asarray(regret, dtype=float)
        if regret.size == 0:
            return cls(0, math.nan, math.nan, math.nan, 0)
        unavailable = int(np.isinf(regret).sum())
        geomean = math.inf if unavailable else float(np.exp(np.mean(np.log(regret))))
        return cls(int(regret.size), geomean, float(regret.max()), float(np.mean(regret <= WITHIN)), unavailable)


@dataclass(frozen=True)
class EvalRow:
    """One line of the evaluation: ``figures`` is None when ``note`` says why it does not apply."""

    label: str
    kind: str  # "fitted", "fixed" or "rule"
    figures: Figures | None
    note: str = ""


@dataclass(frozen=True)
class Evaluation:
    rows: tuple[EvalRow, ...]

    def get(self, label: str) -> EvalRow:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)

    def to_dict(self) -> list[dict]:
        return [{"label": r.label, "kind": r.kind, "note": r.note,
                 "figures": None if r.figures is None else asdict(r.figures)} for r in self.rows]


def held_out(points: Points, column: str, *, max_row_bands: int = DEFAULT_MAX_ROW_BANDS,
             max_cuts: int = DEFAULT_MAX_CUTS) -> np.ndarray | None:
    """Regret at every cell of thresholds fitted without that cell's ``column`` value.

    None when ``column`` has fewer than two values (nothing is left to fit on).
    """
    position = CELL_COLUMNS.index(column)
    values = points.values(column)
    if len(values) < 2:
        return None
    regret = np.full(len(points.cells), np.nan)
    for value in values:
        test = np.array([cell[position] == value for cell in points.cells])
        thresholds = fit_thresholds(points.subset(~test), max_row_bands=max_row_bands, max_cuts=max_cuts)
        held = points.subset(test)
        choices = [thresholds.select(r, s, k) for k, r, s in held.cells]
        regret[test] = held.regret_of(choices)
    return regret


def evaluate(result: FitResult, rule_names: Sequence[str] | None = None) -> Evaluation:
    """Held-out figures of the fit, then every fixed choice and every hand rule, on ``result.points``."""
    points = result.points
    caps = {"max_row_bands": result.max_row_bands, "max_cuts": result.max_cuts}
    rows: list[EvalRow] = []
    for column, label in (("seq_len", "fit, held-out seq_len"), ("rows", "fit, held-out rows")):
        regret = held_out(points, column, **caps)
        if regret is None:
            rows.append(EvalRow(label, "fitted", None, f"n/a: needs two {column} values at least"))
        else:
            rows.append(EvalRow(label, "fitted", Figures.of(regret)))
    rows.append(EvalRow("fit, training points", "fitted", Figures.of(result.training_regret())))
    for j, impl in enumerate(points.impls):
        rows.append(EvalRow(f"always {impl}", "fixed", Figures.of(points.regret[:, j])))
    for name in rule_names if rule_names is not None else rules_mod.names():
        rule = rules_mod.get_rule(name)
        missing = rule.missing(points.impls)
        if missing:
            rows.append(EvalRow(f"rule {name}", "rule", None, f"n/a: no data for {', '.join(missing)}"))
            continue
        choices = [rule.select(r, s, k) for k, r, s in points.cells]
        rows.append(EvalRow(f"rule {name}", "rule", Figures.of(points.regret_of(choices))))
    return Evaluation(tuple(rows))
