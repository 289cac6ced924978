"""Dispatch thresholds fitted to stored measurements by minimising regret (docs/design.md section 8).

What the fit sees (regret, cells, unavailable implementations) is described in
topkbench.results, which builds the table.

Model
    k bands, inside each a few row bands, inside each a few seq_len segments, each segment served
    by one implementation. One table serves every measured k of a k band (fitted on their cells
    together), so a k measured on fewer seq_len values borrows the shape its neighbours measured.

Search
    The cost of a choice over cells is (cells where it is unavailable, sum of log regret),
    compared in that order. For every complexity up to the caps (k bands, row bands per k band,
    seq_len cuts per row band) the search is exact: dynamic programming over the sorted seq_len
    values of every (k range, rows range), then over the rows values, then over the k values.
    On equal cost (within 1e-9) fewer pieces win, then the implementation first by name.

Cut points
    A boundary between neighbouring measured values a < b goes where the difference of the two
    sides' log regret, taken as linear in log(value) between a and b, crosses zero: a side that
    wins by a wide margin at its end keeps most of the gap. (The geometric midpoint, which the
    fit used before, put a held-out 4096 on the side of the kernel 1.7x slower there.) Where the
    sides do not cross, or one of them is unavailable at a or b, the boundary is the geometric
    midpoint ceil(sqrt(a * b)). Interpolated cuts are rounded up to 3 significant digits. Values
    below a cut belong to the lower piece; the first and last pieces extend without bound (a
    value outside the measured range gets the nearest band). k bands split at the midpoint.

Complexity
    Chosen by held-out regret (topkbench.holdout): every candidate is fitted without the cells
    of each split of the three schemes (leave one seq_len out, leave one rows value out, random
    20%) and judged on them. The winner has the fewest unavailable held-out picks, then the
    smallest pooled geometric-mean held-out regret; among candidates within 0.5% of that (equal
    on cells they did not see: a sweep's timings spread by 1-3%), the one with the fewest misses
    on the measured cells (a pick more than 5% slower than the cell's fastest allowed
    implementation), then the simplest (fewest k bands, then row bands, then cuts). The reported held-out figures are
    those of the chosen candidate, so they carry a little selection optimism; every
    candidate's figures are written to the .fit.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from topkbench import holdout
from topkbench.errors import FitError
from topkbench.results import Figures, Points, Provenance

_EPS = 1e-9
#: Candidates within this share of the best pooled held-out geomean count as equal (the fewest
#: misses, then the simplest, wins). At 0.1% the H200's seven runs kept a model with 7 misses
#: where one 0.25% behind on held-out cells has 2, and the H100's one with 2 where one 0.4% behind
#: has none.
SELECTION_TOLERANCE = 5e-3
#: A pick more than this share slower than the cell's fastest allowed implementation is a miss.
MISS_MARGIN = 0.05
Cost = tuple[float, float]  # (cells given to an unavailable implementation, sum of log regret)
Segments = tuple[tuple[int | None, str], ...]


def cut_between(low: int, high: int) -> int:
    """The geometric midpoint of measured values ``low < high``: ceil(sqrt(low * high)), in (low, high]."""
    product = int(low) * int(high)
    root = math.isqrt(product)
    return root if root * root == product else root + 1


def interpolated_cut(low: int, high: int, diff_low: float, diff_high: float) -> int:
    """Where (lower side's - upper side's log regret) crosses zero between ``low`` and ``high``,
    linear in log(value); the midpoint unless it goes from below zero to above it."""
    if not diff_low < 0 < diff_high:
        return cut_between(low, high)
    t = -diff_low / (diff_high - diff_low)
    raw = math.ceil(low * (high / low) ** t)
    digits = max(0, len(str(raw)) - 3)
    rounded = -(-raw // 10**digits) * 10**digits  # up to 3 significant digits: a readable table
    return min(max(rounded, low + 1), high)


@dataclass(frozen=True, order=True)
class Complexity:
    """Caps of a threshold table; ordered simplest first."""

    k_bands: int
    row_bands: int
    cuts: int

    def __str__(self) -> str:
        return f"{self.k_bands} k band(s) x {self.row_bands} row band(s) x {self.cuts} seq_len cut(s)"


DEFAULT_CAPS = Complexity(k_bands=4, row_bands=8, cuts=6)


# --- the thresholds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowBand:
    """Rows below ``rows_below`` (None: no bound); ``segments`` are (seq_len_below, impl) pairs."""

    rows_below: int | None
    segments: Segments


@dataclass(frozen=True)
class KBand:
    """The table fitted on the measured values ``ks``, used for every k below ``k_below`` (None: no bound)."""

    ks: tuple[int, ...]
    k_below: int | None
    row_bands: tuple[RowBand, ...]

    @property
    def fitted_at(self) -> str:
        return "k = " + ", ".join(map(str, self.ks))


def _first(bands: Sequence[Any], value: int, bound) -> Any:
    for band in bands:
        limit = bound(band)
        if limit is None or value < limit:
            return band
    return bands[-1]


@dataclass(frozen=True)
class Thresholds:
    """Per k band, per row band, seq_len cut points between implementations."""

    k_bands: tuple[KBand, ...]

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        """The same walk as the generated module's ``select``: first band whose bound exceeds the value."""
        kband = _first(self.k_bands, k, lambda b: b.k_below)
        rband = _first(kband.row_bands, num_rows, lambda b: b.rows_below)
        return _first(rband.segments, max_seq_len, lambda s: s[0])[1]

    def choices(self, points: Points) -> list[str]:
        """The pick at every cell of ``points``, in their order."""
        return [self.select(r, s, k) for k, r, s in points.cells]

    def to_data(self) -> tuple:
        """The plain-data THRESHOLDS of the generated module (see codegen)."""
        return tuple(
            (kb.k_below, tuple((rb.rows_below, tuple(rb.segments)) for rb in kb.row_bands)) for kb in self.k_bands
        )

    def impls(self) -> list[str]:
        return sorted({impl for kb in self.k_bands for rb in kb.row_bands for _, impl in rb.segments})


# --- the exact search ---------------------------------------------------------------------------


def _better(a: Cost, b: Cost | None) -> bool:
    """Lexicographic: fewer unavailable cells, then smaller log regret beyond a rounding margin."""
    return b is None or a[0] < b[0] or (a[0] == b[0] and a[1] < b[1] - _EPS)


def _partition_all(unavailable: np.ndarray, log_regret: np.ndarray,
                   max_pieces: int) -> list[tuple[Cost, list[tuple[int, int]]]]:
    """For p = 1..max_pieces: the exact best split of n ordered values into at most p contiguous
    runs [i, j), whose costs are ``unavailable[i, j]`` and ``log_regret[i, j]``. More pieces are
    taken only when strictly better, so no answer holds two neighbours that merging would not hurt.
    """
    n = unavailable.shape[0] - 1
    index = np.arange(n + 1)
    ahead = index[:, None] < index[None, :]
    # best cost of covering the first j values with exactly p pieces, and where its last run starts
    used = np.full(n + 1, np.inf)
    logs = np.full(n + 1, np.inf)
    used[0] = logs[0] = 0.0
    starts: list[np.ndarray] = []
    answers: list[tuple[Cost, list[tuple[int, int]]]] = []
    best: tuple[Cost, int] | None = None
    for pieces in range(1, max_pieces + 1):
        total_used = np.where(ahead, used[:, None] + unavailable, np.inf)
        total_logs = np.where(ahead, logs[:, None] + log_regret, np.inf)
        fewest = total_used.min(axis=0)
        tied = total_used == fewest
        lowest = np.where(tied, total_logs, np.inf).min(axis=0)
        start = (tied & (total_logs <= lowest + _EPS)).argmax(axis=0)  # the first on a tie
        used, logs = total_used[start, index], total_logs[start, index]
        starts.append(start)
        if np.isfinite(used[n]) and (best is None or _better((used[n], logs[n]), best[0])):
            best = ((float(used[n]), float(logs[n])), pieces)
        assert best is not None
        runs, end = [], n
        for start_of in reversed(starts[: best[1]]):
            runs.append((int(start_of[end]), end))
            end = runs[-1][0]
        answers.append((best[0], runs[::-1]))
    return answers


def _segment_fits(seq: np.ndarray, unavailable: np.ndarray, log: np.ndarray, impls: Sequence[str],
                  max_cuts: int) -> list[tuple[Cost, Segments]]:
    """The best seq_len segments of one (k range, rows range) for every cut count 0..max_cuts."""
    values = np.unique(seq)
    position = np.searchsorted(values, seq)
    n, m = len(values), len(impls)
    per_value_u, per_value_l = np.zeros((n, m)), np.zeros((n, m))
    np.add.at(per_value_u, position, unavailable)
    np.add.at(per_value_l, position, log)
    counts = np.bincount(position, minlength=n)
    prefix_u = np.vstack([np.zeros(m), np.cumsum(per_value_u, axis=0)])
    prefix_l = np.vstack([np.zeros(m), np.cumsum(per_value_l, axis=0)])
    run_u = prefix_u[None, :, :] - prefix_u[:, None, :]  # [i, j, impl]: the run [i, j)
    run_l = prefix_l[None, :, :] - prefix_l[:, None, :]
    fewest = run_u.min(axis=2, keepdims=True)
    tied = run_u == fewest
    lowest = np.where(tied, run_l, np.inf).min(axis=2, keepdims=True)
    pick = (tied & (run_l <= lowest + _EPS)).argmax(axis=2)  # the first by name on a tie
    cost_u = np.take_along_axis(run_u, pick[..., None], 2)[..., 0]
    cost_l = np.take_along_axis(run_l, pick[..., None], 2)[..., 0]
    out = []
    for cost, runs in _partition_all(cost_u, cost_l, max_cuts + 1):
        segments = []
        for (i, j), following in zip(runs, [*runs[1:], None]):
            lower = pick[i, j]
            if following is None:
                segments.append((None, impls[lower]))
                continue
            upper = pick[following]
            a, b = int(values[j - 1]), int(values[j])
            if per_value_u[j - 1, [lower, upper]].any() or per_value_u[j, [lower, upper]].any():
                cut = cut_between(a, b)
            else:  # per cell: the two values may hold different numbers of cells
                cut = interpolated_cut(a, b, (per_value_l[j - 1, lower] - per_value_l[j - 1, upper]) / counts[j - 1],
                                       (per_value_l[j, lower] - per_value_l[j, upper]) / counts[j])
            segments.append((cut, impls[lower]))
        out.append((cost, tuple(segments)))
    return out


def _table_cost(segments: Segments, seq: np.ndarray, regret: np.ndarray, impls: Sequence[str]) -> Cost:
    picks = [impls.index(_first(segments, int(s), lambda x: x[0])[1]) for s in seq]
    chosen = regret[np.arange(len(seq)), picks]
    finite = np.isfinite(chosen)
    return float((~finite).sum()), float(np.log(chosen[finite]).sum())


def _row_band_fits(rows: np.ndarray, seq: np.ndarray, regret: np.ndarray, impls: Sequence[str],
                   caps: Complexity) -> dict[tuple[int, int], tuple[Cost, tuple[RowBand, ...]]]:
    """(cuts, row bands) -> the best row bands of one k range, for every complexity up to ``caps``."""
    unavailable = np.isinf(regret).astype(float)
    log = np.log(np.where(np.isinf(regret), 1.0, regret))
    values = np.unique(rows)
    n = len(values)
    fits = {(i, j): _segment_fits(seq[band], unavailable[band], log[band], impls, caps.cuts)
            for i in range(n) for j in range(i + 1, n + 1)
            for band in [(rows >= values[i]) & (rows <= values[j - 1])]}
    out = {}
    for cuts in range(caps.cuts + 1):
        cost_u, cost_l = np.full((n + 1, n + 1), np.inf), np.full((n + 1, n + 1), np.inf)
        for (i, j), per_cuts in fits.items():
            cost_u[i, j], cost_l[i, j] = per_cuts[cuts][0]
        for bands, (cost, runs) in enumerate(_partition_all(cost_u, cost_l, caps.row_bands), start=1):
            row_bands = []
            for run, following in zip(runs, [*runs[1:], None]):
                lower = fits[run][cuts][1]
                if following is None:
                    row_bands.append(RowBand(None, lower))
                    continue
                upper = fits[following][cuts][1]
                a, b = int(values[run[1] - 1]), int(values[run[1]])
                at_a, at_b = rows == a, rows == b
                low_a, up_a = (_table_cost(s, seq[at_a], regret[at_a], impls) for s in (lower, upper))
                low_b, up_b = (_table_cost(s, seq[at_b], regret[at_b], impls) for s in (lower, upper))
                if low_a[0] or up_a[0] or low_b[0] or up_b[0]:
                    cut = cut_between(a, b)
                else:  # per cell, as for seq_len cuts
                    cut = interpolated_cut(a, b, (low_a[1] - up_a[1]) / at_a.sum(), (low_b[1] - up_b[1]) / at_b.sum())
                row_bands.append(RowBand(cut, lower))
            out[(cuts, bands)] = (cost, tuple(row_bands))
    return out


def fit_family(points: Points, caps: Complexity = DEFAULT_CAPS) -> dict[Complexity, Thresholds]:
    """The regret-minimising thresholds of ``points`` for every complexity up to ``caps``."""
    if caps.k_bands < 1 or caps.row_bands < 1 or caps.cuts < 0:
        raise FitError(f"caps must allow one k band, one row band and no cut at least (got {caps})")
    if not points.cells:
        raise FitError("no usable points to fit")
    columns = [points.impls.index(name) for name in points.allowed]
    cells = np.array(points.cells, dtype=np.int64)
    regret = points.regret[:, columns]
    ks = points.values("k")
    fits = {(i, j): _row_band_fits(cells[in_range, 1], cells[in_range, 2], regret[in_range], points.allowed, caps)
            for i in range(len(ks)) for j in range(i + 1, len(ks) + 1)
            for in_range in [(cells[:, 0] >= ks[i]) & (cells[:, 0] <= ks[j - 1])]}
    family: dict[Complexity, Thresholds] = {}
    for cuts in range(caps.cuts + 1):
        for bands in range(1, caps.row_bands + 1):
            cost_u, cost_l = np.full((len(ks) + 1,) * 2, np.inf), np.full((len(ks) + 1,) * 2, np.inf)
            for (i, j), per in fits.items():
                cost_u[i, j], cost_l[i, j] = per[(cuts, bands)][0]
            for k_bands, (_, runs) in enumerate(_partition_all(cost_u, cost_l, caps.k_bands), start=1):
                table: list[KBand] = []
                for i, j in runs:
                    bound = None if j == len(ks) else cut_between(ks[j - 1], ks[j])
                    row_bands = fits[(i, j)][(cuts, bands)][1]
                    if table and table[-1].row_bands == row_bands:  # the same table: one band, same answers
                        table[-1] = KBand((*table[-1].ks, *ks[i:j]), bound, row_bands)
                    else:
                        table.append(KBand(tuple(ks[i:j]), bound, row_bands))
                family[Complexity(k_bands, bands, cuts)] = Thresholds(tuple(table))
    return family


def fit_thresholds(points: Points, complexity: Complexity = DEFAULT_CAPS) -> Thresholds:
    """The regret-minimising thresholds of ``points`` at one complexity."""
    return fit_family(points, complexity)[complexity]


# --- complexity by held-out regret ---------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One complexity and its held-out figures per scheme (None: the scheme does not apply)."""

    complexity: Complexity
    held_out: dict[str, Figures | None]
    #: Over every scheme's held-out cells together.
    pooled: Figures
    #: Geometric mean of the pooled held-out regret over the cells where the pick was available.
    score: float
    #: Cells, fitted on all of them, whose pick is more than MISS_MARGIN slower than the fastest
    #: allowed implementation there.
    misses: int = 0


@dataclass(frozen=True)
class FitResult:
    """Fitted thresholds with the points, provenance and held-out regret behind them."""

    thresholds: Thresholds
    points: Points
    provenance: Provenance | None
    complexity: Complexity
    caps: Complexity
    #: Held-out regret of the chosen complexity at every cell, per scheme (None: not applicable).
    held_out: dict[str, np.ndarray | None] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    combine: str = "worst regret over length modes and distributions"

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        return self.thresholds.select(num_rows, max_seq_len, k)

    def choices(self, points: Points | None = None) -> list[str]:
        return self.thresholds.choices(self.points if points is None else points)

    def training_regret(self) -> np.ndarray:
        return self.points.regret_of(self.choices())


def _candidates(held: dict[str, dict | None], keys: Sequence[Complexity]) -> list[Candidate]:
    out = []
    for key in keys:
        per_scheme = {s: (Figures.of(h[key]) if h is not None else None) for s, h in held.items()}
        pooled = np.concatenate([h[key] for h in held.values() if h is not None] or [np.zeros(0)])
        finite = pooled[np.isfinite(pooled)]
        score = float(np.exp(np.mean(np.log(finite)))) if finite.size else math.inf
        out.append(Candidate(key, per_scheme, Figures.of(pooled), score))
    return out


def misses(points: Points, thresholds: Thresholds) -> int:
    """Cells whose pick is more than MISS_MARGIN slower than the fastest allowed implementation there."""
    if not points.cells:
        return 0
    picked = points.regret_of(thresholds.choices(points))
    allowed = [j for j, name in enumerate(points.impls) if name in points.allowed]
    best = points.regret[:, allowed].min(axis=1)
    return int(np.sum(picked > best * (1 + MISS_MARGIN)))


def _chosen(candidates: Sequence[Candidate]) -> Candidate:
    """Fewest unavailable held-out picks; then, within SELECTION_TOLERANCE of the best score, the
    fewest misses, then the simplest."""
    fewest = min(c.pooled.unavailable for c in candidates)
    eligible = [c for c in candidates if c.pooled.unavailable == fewest]
    best = min(c.score for c in eligible)
    return min((c for c in eligible if c.score <= best * (1 + SELECTION_TOLERANCE)),
               key=lambda c: (c.misses, c.complexity))


def fit(points: Points, provenance: Provenance | None = None, *, caps: Complexity = DEFAULT_CAPS,
        complexity: Complexity | None = None) -> FitResult:
    """Thresholds for ``points`` at ``complexity``, or at the complexity up to ``caps`` that held-out
    regret chooses (see the module docstring), with the held-out regret of the one returned."""
    search = complexity or caps
    family = fit_family(points, search)
    keys = [complexity] if complexity else sorted(family)

    def fit_all(training: Points) -> dict[Complexity, Thresholds]:
        fitted = fit_family(training, search)
        return {key: fitted[key] for key in keys}

    held = {scheme: holdout.held_out(points, scheme, fit_all) for scheme in holdout.SCHEMES}
    candidates = [replace(c, misses=misses(points, family[c.complexity])) for c in _candidates(held, keys)]
    chosen = candidates[0] if complexity else _chosen(candidates)
    return FitResult(
        thresholds=family[chosen.complexity], points=points, provenance=provenance, complexity=chosen.complexity,
        caps=search, held_out={s: (h[chosen.complexity] if h is not None else None) for s, h in held.items()},
        candidates=tuple(candidates),
    )
