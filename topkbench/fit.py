"""Dispatch thresholds fitted to stored measurements by minimising regret (DESIGN.md section 8).

What the fit sees (regret, and how cells combine length modes and distributions) is described in
topkbench.points, which builds the table.

Search
    For each measured k separately: the rows values are split into at most ``max_row_bands``
    contiguous bands, and inside each band the seq_len values into at most ``max_cuts + 1``
    contiguous segments, each served by one implementation. The split minimises, first, the number
    of cells where the chosen implementation is unavailable and then the sum of log regrets (the
    geometric mean regret) over the cells. It is exact: dynamic programming over the sorted
    seq_len values inside every candidate row band, then over the sorted rows values. On equal cost
    (within 1e-9) the split with fewer pieces wins, then the implementation first by name.

Cut points
    A boundary between measured values a < b sits at ceil(sqrt(a * b)), the geometric midpoint
    rounded up to an integer; values below it belong to the lower piece. The first and last pieces
    extend without bound, so a query outside the measured range gets the nearest measured band.
    k is handled the same way: each measured k has its own table, split at the midpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from topkbench.errors import FitError
from topkbench.points import Points, Provenance

DEFAULT_MAX_ROW_BANDS = 4
DEFAULT_MAX_CUTS = 3
_EPS = 1e-9


def cut_between(low: int, high: int) -> int:
    """The boundary between measured values ``low < high``: ceil(sqrt(low * high)), in (low, high]."""
    product = int(low) * int(high)
    root = math.isqrt(product)
    return root if root * root == product else root + 1


# --- the thresholds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowBand:
    """Rows below ``rows_below`` (None: no bound); ``segments`` are (seq_len_below, impl) pairs."""

    rows_below: int | None
    segments: tuple[tuple[int | None, str], ...]


@dataclass(frozen=True)
class KBand:
    """The table fitted at the measured values ``ks``, used for every k below ``k_below`` (None: no bound).

    Neighbouring k whose fitted tables are identical share one band, which changes no answer.
    """

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

    def to_data(self) -> tuple:
        """The plain-data THRESHOLDS of the generated module (see codegen)."""
        return tuple(
            (kb.k_below, tuple((rb.rows_below, tuple(rb.segments)) for rb in kb.row_bands)) for kb in self.k_bands
        )

    @classmethod
    def from_data(cls, data: Sequence) -> "Thresholds":
        """Thresholds from a generated module's THRESHOLDS (the measured k are not kept there)."""
        return cls(tuple(
            KBand((), k_below, tuple(RowBand(rows_below, tuple((b, str(i)) for b, i in segments))
                                     for rows_below, segments in row_bands))
            for k_below, row_bands in data
        ))

    def impls(self) -> list[str]:
        return sorted({impl for kb in self.k_bands for rb in kb.row_bands for _, impl in rb.segments})


def _better(a: tuple[int, float], b: tuple[int, float] | None) -> bool:
    """Lexicographic: fewer unavailable cells, then smaller log regret beyond a rounding margin."""
    if b is None:
        return True
    return a[0] < b[0] or (a[0] == b[0] and a[1] < b[1] - _EPS)


Cost = tuple[int, float]  # (cells given to an unavailable implementation, sum of log regret)


def _partition(n: int, max_pieces: int, piece: Callable[[int, int], Cost]) -> tuple[Cost, list[tuple[int, int]]]:
    """Exact best split of ``n`` ordered values into at most ``max_pieces`` contiguous [i, j) runs.

    ``piece(i, j)`` is the cost of one run. Fewer pieces win ties, so the answer never holds two
    neighbours that merging would not make worse.
    """
    costs = {(i, j): piece(i, j) for i in range(n) for j in range(i + 1, n + 1)}
    # layer[j]: best cost of covering the first j values with exactly `count` pieces, and the runs
    layer: dict[int, tuple[Cost, list[tuple[int, int]]]] = {0: ((0, 0.0), [])}
    answer: tuple[Cost, list[tuple[int, int]]] | None = None
    for _count in range(max_pieces):
        nxt: dict[int, tuple[Cost, list[tuple[int, int]]]] = {}
        for j in range(1, n + 1):
            for i, (prev_cost, runs) in layer.items():
                if i < j:
                    c = costs[(i, j)]
                    cost = (prev_cost[0] + c[0], prev_cost[1] + c[1])
                    if j not in nxt or _better(cost, nxt[j][0]):
                        nxt[j] = (cost, [*runs, (i, j)])
        layer = nxt
        if n in layer and (answer is None or _better(layer[n][0], answer[0])):
            answer = layer[n]
    assert answer is not None
    return answer


def _fit_k(points: Points, k: int, max_row_bands: int, max_cuts: int) -> tuple[RowBand, ...]:
    index = [i for i, cell in enumerate(points.cells) if cell[0] == k]
    cells = [points.cells[i] for i in index]
    regret = points.regret[index]
    unavailable = np.isinf(regret).astype(np.int64)
    log = np.log(np.where(np.isinf(regret), 1.0, regret))
    rows_values = sorted({c[1] for c in cells})

    def band(lo: int, hi: int) -> tuple[Cost, tuple[tuple[int | None, str], ...]]:
        members = [n for n, c in enumerate(cells) if rows_values[lo] <= c[1] <= rows_values[hi - 1]]
        seq_values = sorted({cells[n][2] for n in members})
        position = {s: p for p, s in enumerate(seq_values)}
        n_impls = len(points.impls)
        # prefix sums over seq_len of the band's cost per implementation
        u = np.zeros((len(seq_values) + 1, n_impls), dtype=np.int64)
        lg = np.zeros((len(seq_values) + 1, n_impls))
        for n in members:
            u[position[cells[n][2]] + 1] += unavailable[n]
            lg[position[cells[n][2]] + 1] += log[n]
        u, lg = np.cumsum(u, axis=0), np.cumsum(lg, axis=0)

        def best_impl(i: int, j: int) -> tuple[Cost, int]:
            best: Cost | None = None
            arg = 0
            for m in range(n_impls):  # first by name on a tie
                cost = (int(u[j, m] - u[i, m]), float(lg[j, m] - lg[i, m]))
                if _better(cost, best):
                    best, arg = cost, m
            return best, arg

        cost, runs = _partition(len(seq_values), max_cuts + 1, lambda i, j: best_impl(i, j)[0])
        segments = tuple(
            (None if j == len(seq_values) else cut_between(seq_values[j - 1], seq_values[j]),
             points.impls[best_impl(i, j)[1]])
            for i, j in runs
        )
        return cost, segments

    bands = {(i, j): band(i, j) for i in range(len(rows_values)) for j in range(i + 1, len(rows_values) + 1)}
    _, runs = _partition(len(rows_values), max_row_bands, lambda i, j: bands[(i, j)][0])
    return tuple(
        RowBand(None if j == len(rows_values) else cut_between(rows_values[j - 1], rows_values[j]), bands[(i, j)][1])
        for i, j in runs
    )


def fit_thresholds(points: Points, *, max_row_bands: int = DEFAULT_MAX_ROW_BANDS,
                   max_cuts: int = DEFAULT_MAX_CUTS) -> Thresholds:
    """The regret-minimising thresholds for ``points`` (see the module docstring)."""
    if max_row_bands < 1 or max_cuts < 0:
        raise FitError(f"caps must allow one row band and no cut at least (got {max_row_bands} bands, {max_cuts} cuts)")
    if not points.cells:
        raise FitError("no usable points to fit")
    ks = points.values("k")
    k_bands: list[KBand] = []
    for n, k in enumerate(ks):
        bound = None if n == len(ks) - 1 else cut_between(k, ks[n + 1])
        row_bands = _fit_k(points, k, max_row_bands, max_cuts)
        if k_bands and k_bands[-1].row_bands == row_bands:
            k_bands[-1] = KBand((*k_bands[-1].ks, k), bound, row_bands)
        else:
            k_bands.append(KBand((k,), bound, row_bands))
    return Thresholds(tuple(k_bands))


@dataclass(frozen=True)
class FitResult:
    """Fitted thresholds with the points and provenance behind them.

    ``select`` answers like the generated module; ``choices(points)`` is its pick at every cell.
    """

    thresholds: Thresholds
    points: Points
    provenance: Provenance | None = None
    max_row_bands: int = DEFAULT_MAX_ROW_BANDS
    max_cuts: int = DEFAULT_MAX_CUTS
    combine: str = field(default="worst regret over length modes and distributions")

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        return self.thresholds.select(num_rows, max_seq_len, k)

    def choices(self, points: Points | None = None) -> list[str]:
        points = self.points if points is None else points
        return [self.select(r, s, k) for k, r, s in points.cells]

    def training_regret(self) -> np.ndarray:
        return self.points.regret_of(self.choices())


def fit(points: Points, provenance: Provenance | None = None, *, max_row_bands: int = DEFAULT_MAX_ROW_BANDS,
        max_cuts: int = DEFAULT_MAX_CUTS) -> FitResult:
    thresholds = fit_thresholds(points, max_row_bands=max_row_bands, max_cuts=max_cuts)
    return FitResult(thresholds, points, provenance, max_row_bands, max_cuts)
