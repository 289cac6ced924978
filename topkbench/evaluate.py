"""How much time a dispatch choice leaves on the table: the figures of fit.md and of the report.

Every figure is a :class:`topkbench.results.Figures` over the cells of a
:class:`topkbench.results.Points` table, so regret, the combination of length modes and
distributions (worst case) and unavailable picks (infinite regret) mean the same wherever a
figure appears: the fit summary and the report call :func:`judge` on the same table.

Kinds of rows:

- ``held-out``: the fitted thresholds on cells they were not fitted to (topkbench.holdout:
  leave one seq_len out, leave one rows value out, random 20%): the fit's quality;
- ``in-sample``: the fitted thresholds on the cells they were fitted to (optimistic), and the
  per-cell best, the least worst-case regret any rule that sees only (rows, seq_len, k) can reach
  on these cells: the part of the regret that no dispatch rule can remove;
- ``fixed`` ("always X") and ``rule`` (the hand rules of topkbench.rules) need no fitting and are
  judged on every cell; a rule naming an implementation absent from the data is not applicable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np

from topkbench import holdout
from topkbench import rules as rules_mod
from topkbench.fit import MISS_MARGIN, FitResult
from topkbench.results import Figures, Points

HELD_OUT_LABELS = {scheme: f"fit, held-out {name}" for scheme, name in
                   (("seq_len", "seq_len"), ("rows", "rows"), ("random", "random 20%"))}
IN_SAMPLE_LABEL = "fit, in-sample"
BOUND_LABEL = "per-cell best, in-sample"


class Selector(Protocol):
    def select(self, num_rows: int, max_seq_len: int, k: int) -> str: ...


@dataclass(frozen=True)
class EvalRow:
    """One line of the evaluation: ``figures`` is None when ``note`` says why it does not apply."""

    label: str
    kind: str  # "held-out", "in-sample", "fixed" or "rule"
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


def picks(points: Points, selector: Selector) -> list[str]:
    """``selector``'s pick at every cell of ``points``, in their order."""
    return [str(selector.select(r, s, k)) for k, r, s in points.cells]


def judge(points: Points, label: str, kind: str, selector: Selector) -> EvalRow:
    """The figures of ``selector``'s picks over every cell of ``points``."""
    return EvalRow(label, kind, Figures.of(points.regret_of(picks(points, selector))))


def reference_rows(points: Points, rule_names: Sequence[str] | None = None) -> list[EvalRow]:
    """'Always X' for every implementation measured, then every hand rule."""
    rows = [EvalRow(f"always {impl}", "fixed", Figures.of(points.regret[:, j])) for j, impl in enumerate(points.impls)]
    for name in rule_names if rule_names is not None else rules_mod.names():
        rule = rules_mod.get_rule(name)
        missing = rule.missing(points.impls)
        if missing:
            rows.append(EvalRow(f"rule {name}", "rule", None, f"n/a: no data for {', '.join(missing)}"))
        else:
            rows.append(judge(points, f"rule {name}", "rule", rule))
    return rows


def bound_row(points: Points) -> EvalRow:
    """The per-cell best among the implementations a fit may pick (see the module docstring)."""
    columns = [points.impls.index(name) for name in points.allowed]
    best = points.regret[:, columns].min(axis=1) if points.cells else np.zeros(0)
    return EvalRow(BOUND_LABEL, "in-sample", Figures.of(best),
                   "the least worst-case regret a rule seeing only (rows, seq_len, k) can reach here")


def evaluate(result: FitResult, rule_names: Sequence[str] | None = None) -> Evaluation:
    """Held-out and in-sample figures of the fit, the per-cell bound, every fixed choice and hand rule."""
    rows: list[EvalRow] = []
    for scheme in holdout.SCHEMES:
        regret = result.held_out.get(scheme)
        label = HELD_OUT_LABELS[scheme]
        if regret is None:
            need = "two cells" if scheme == "random" else f"two {scheme} values"
            rows.append(EvalRow(label, "held-out", None, f"n/a: needs {need} at least"))
        else:
            rows.append(EvalRow(label, "held-out", Figures.of(regret), holdout.LABELS[scheme]))
    rows.append(EvalRow(IN_SAMPLE_LABEL, "in-sample", Figures.of(result.training_regret()),
                        "on the cells it was fitted to"))
    rows.append(bound_row(result.points))
    rows += reference_rows(result.points, rule_names)
    return Evaluation(tuple(rows))


@dataclass(frozen=True)
class CellChange:
    """A cell where two selectors' picks differ in regret: ``before`` is the other selector's."""

    cell: tuple[int, int, int]  # (k, rows, seq_len)
    before: str
    before_regret: float
    after: str
    after_regret: float


@dataclass(frozen=True)
class Against:
    """A fit judged beside another selector (the module shipped before it, say) on the same cells:
    the cells where the fit's pick is more than ``margin`` slower, and how many are more than
    ``margin`` faster. "Does the refit make any measured shape slower than what ships today?"."""

    before: Figures
    after: Figures
    slower: tuple[CellChange, ...]
    faster: int
    margin: float


def against(points: Points, fitted: Selector, before: Selector, margin: float = MISS_MARGIN) -> Against:
    """``fitted`` against ``before`` on every cell of ``points`` (the regret of the fit's table: worst
    over length modes and distributions, infinite where the pick was not measured). A cell where
    ``before`` picks an implementation never measured there cannot be slower under the fit."""
    after_picks, before_picks = picks(points, fitted), picks(points, before)
    after_regret, before_regret = points.regret_of(after_picks), points.regret_of(before_picks)
    slower: list[CellChange] = []
    faster = 0
    for cell, b, b_regret, a, a_regret in zip(points.cells, before_picks, before_regret, after_picks, after_regret):
        if a_regret > b_regret * (1 + margin):
            slower.append(CellChange(cell, b, float(b_regret), a, float(a_regret)))
        elif a_regret * (1 + margin) < b_regret:
            faster += 1
    return Against(Figures.of(before_regret), Figures.of(after_regret), tuple(slower), faster, margin)
