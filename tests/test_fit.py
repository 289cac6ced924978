"""The regret fit, its held-out evaluation and the hand rules, on planted synthetic data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from synthetic import make_frame
from topkbench import holdout, rules
from topkbench.errors import FitError, UsageError
from topkbench.evaluate import evaluate
from topkbench.fit import Complexity, cut_between, fit, fit_thresholds, interpolated_cut
from topkbench.results import Figures, Points, select_points

ROWS = [1, 4, 16, 64]
SEQ = [1024, 2048, 4096, 8192, 16384, 32768, 65536]


def planted(rows=ROWS, seq=SEQ, ks=(256, 2048), **extra):
    """per_row wins below 8192 for rows < 16 and below 4096 from 16 rows on; large_context above."""
    records = []
    for r, s, k in itertools.product(rows, seq, ks):
        crossover = 8192 if r < 16 else 4096
        fast, slow = (("per_row", "large_context") if s < crossover else ("large_context", "per_row"))
        t = 10.0 + r * s / 1000
        records.append(dict(rows=r, seq_len=s, k=k, impl=fast, median_us=t, **extra))
        records.append(dict(rows=r, seq_len=s, k=k, impl=slow, median_us=t * 1.5, **extra))
    return records


def test_cut_between_is_the_rounded_up_geometric_midpoint():
    assert cut_between(4096, 8192) == 5793  # sqrt = 5792.6
    assert cut_between(2, 8) == 4  # exact square stays
    for a, b in [(1, 2), (5, 6), (1000, 1001), (1, 1 << 20)]:
        assert a < cut_between(a, b) <= b


def test_interpolated_cut_goes_where_the_regret_difference_crosses_zero():
    # the lower side wins by 2.5x at 2048 and loses by 1.2x at 8192: the cut sits near 8192
    cut = interpolated_cut(2048, 8192, -math.log(2.5), math.log(1.2))
    assert cut == 6510  # 2048 * 4 ** (0.916 / (0.916 + 0.182)) = 6509.6, rounded up to 3 significant digits
    assert 4096 < cut < 8192
    # no crossing between the two (or a tie): the geometric midpoint
    assert interpolated_cut(2048, 8192, 0.3, 0.5) == cut_between(2048, 8192) == 4096
    assert interpolated_cut(2048, 8192, -0.3, -0.1) == 4096
    # never outside (low, high]
    assert interpolated_cut(16, 17, -1e-9, 1.0) == 17 and interpolated_cut(16, 64, -1.0, 1e-12) == 64


def test_a_held_out_seq_len_lands_on_the_side_its_neighbours_predict():
    """The H100's first miss: leaving out seq_len 4096, the midpoint cut (4096) gave it to radix,
    1.7x slower there; the interpolated cut keeps it with per_row, which won by 2.5x at 2048."""
    times = {2048: (10.0, 25.0), 4096: (10.0, 17.0), 8192: (12.0, 10.0)}
    records = [dict(rows=r, seq_len=s, k=64, impl=name, median_us=t)
               for r in (1, 2) for s, pair in times.items() for name, t in zip(("per_row", "radix"), pair)]
    points, _ = select_points(make_frame(records))
    held = holdout.held_out(points, "seq_len", lambda p: {"fit": fit_thresholds(p, Complexity(1, 1, 1))})["fit"]
    at_4096 = [i for i, cell in enumerate(points.cells) if cell[2] == 4096]
    assert list(held[at_4096]) == [1.0, 1.0]
    without = fit_thresholds(points.subset([cell[2] != 4096 for cell in points.cells]), Complexity(1, 1, 1))
    assert without.k_bands[0].row_bands[0].segments == ((6510, "per_row"), (None, "radix"))


def test_fit_recovers_a_planted_crossover_exactly():
    points, _ = select_points(make_frame(planted()))
    result = fit(points)
    data = result.thresholds.to_data()
    # equal margins on both sides (1.5x): the cut is the midpoint, rounded up to 3 significant digits
    expected_bands = (
        (cut_between(4, 16), ((5800, "per_row"), (None, "large_context"))),
        (None, ((2900, "per_row"), (None, "large_context"))),
    )
    # Both k measured the same crossover, so they share one band.
    assert data == ((None, expected_bands),)
    assert result.thresholds.k_bands[0].ks == (256, 2048)
    assert np.all(result.training_regret() == 1.0)
    # the simplest complexity that reaches the best held-out regret
    assert result.complexity == Complexity(1, 2, 1)
    assert len(result.candidates) == 4 * 8 * 7  # every complexity up to the caps: k bands 1-4, row bands 1-8, cuts 0-6
    # outside the measured range: the nearest band answers
    assert result.select(0, 1, 1) == "per_row"
    assert result.select(10**6, 10**7, 10**5) == "large_context"


def test_distributions_are_combined_by_their_worst_regret():
    records = [
        # normal: A 10% faster; relu_plateau: A 50% slower -> worst regret A 1.5, B 1.1
        dict(rows=1, seq_len=1024, k=8, impl="A", median_us=10.0, distribution="normal"),
        dict(rows=1, seq_len=1024, k=8, impl="B", median_us=11.0, distribution="normal"),
        dict(rows=1, seq_len=1024, k=8, impl="A", median_us=30.0, distribution="relu_plateau"),
        dict(rows=1, seq_len=1024, k=8, impl="B", median_us=20.0, distribution="relu_plateau"),
    ]
    points, prov = select_points(make_frame(records))
    assert points.cells == ((8, 1, 1024),)
    np.testing.assert_allclose(points.regret, [[1.5, 1.1]])
    assert fit(points).select(1, 1024, 8) == "B"
    assert dict(prov.selection)["distribution"] == ("normal", "relu_plateau")


def test_an_unavailable_implementation_is_never_chosen_where_it_failed():
    records = planted(ks=(64,))
    for rec in records:
        # large_context fails on plateaus at 65536 (wrong answer): that cell must not get it
        if rec["impl"] == "large_context" and rec["seq_len"] == 65536 and rec["rows"] == 64:
            rec.update(status="wrong", reason="dropped candidates")
    points, _ = select_points(make_frame(records))
    cell = points.cells.index((64, 64, 65536))
    assert math.isinf(points.regret[cell, points.impls.index("large_context")])
    result = fit(points)
    assert result.select(64, 65536, 64) == "per_row"
    assert not np.isinf(result.training_regret()).any()


def test_the_newest_run_of_a_point_wins():
    old = planted(ks=(64,), run_id="20260101T000000-aaaa", timestamp="2026-01-01T00:00:00+00:00")
    new = planted(ks=(64,), run_id="20260102T000000-bbbb", timestamp="2026-01-02T00:00:00+00:00")
    for rec in new:  # the re-run swapped the winner everywhere
        rec["impl"] = {"per_row": "large_context", "large_context": "per_row"}[rec["impl"]]
    points, prov = select_points(make_frame(old + new))
    assert fit(points).select(1, 1024, 64) == "large_context"
    # the banner names only the runs whose rows were used
    assert prov.sources == (("(in memory)", ("20260102T000000-bbbb",)),)


def _brute_force(regret: np.ndarray, cells, impls, max_bands: int, max_cuts: int) -> float:
    """Smallest sum of log regret over every banding with at most the given pieces (one k)."""
    rows = sorted({c[1] for c in cells})
    best = math.inf
    for n_bands in range(1, max_bands + 1):
        for row_cuts in itertools.combinations(range(1, len(rows)), n_bands - 1):
            edges = [0, *row_cuts, len(rows)]
            total = 0.0
            for lo, hi in zip(edges, edges[1:]):
                members = [i for i, c in enumerate(cells) if rows[lo] <= c[1] <= rows[hi - 1]]
                seqs = sorted({cells[i][2] for i in members})
                band_best = math.inf
                for n_seg in range(1, max_cuts + 2):
                    for seq_cuts in itertools.combinations(range(1, len(seqs)), n_seg - 1):
                        sedges = [0, *seq_cuts, len(seqs)]
                        for choice in itertools.product(range(len(impls)), repeat=n_seg):
                            cost = 0.0
                            for (a, b), m in zip(zip(sedges, sedges[1:]), choice):
                                cost += sum(math.log(regret[i, m]) for i in members
                                            if seqs[a] <= cells[i][2] <= seqs[b - 1])
                            band_best = min(band_best, cost)
                total += band_best
            best = min(best, total)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_search_is_exact(seed):
    rng = np.random.default_rng(seed)
    rows, seqs, impls = [1, 2, 8], [100, 200, 400, 800, 1600], ["a", "b", "c"]
    records = [dict(rows=r, seq_len=s, k=4, impl=i, median_us=float(rng.uniform(1, 3)))
               for r in rows for s in seqs for i in impls]
    points, _ = select_points(make_frame(records))
    for max_bands, max_cuts in [(1, 0), (1, 2), (2, 1), (3, 2)]:
        thresholds = fit_thresholds(points, Complexity(1, max_bands, max_cuts))
        choices = [thresholds.select(r, s, k) for k, r, s in points.cells]
        got = float(np.log(points.regret_of(choices)).sum())
        want = _brute_force(points.regret, points.cells, points.impls, max_bands, max_cuts)
        assert got == pytest.approx(want, abs=1e-9)
        assert len(thresholds.k_bands[0].row_bands) <= max_bands
        assert all(len(rb.segments) <= max_cuts + 1 for rb in thresholds.k_bands[0].row_bands)


def tiny_points() -> Points:
    """rows 1 and 2 alike; A: 10, 10, 30 us and B: 20, 15, 10 us at seq_len 100, 200, 400."""
    times = {100: (10.0, 20.0), 200: (10.0, 15.0), 400: (30.0, 10.0)}
    records = [dict(rows=r, seq_len=s, k=8, impl=name, median_us=t)
               for r in (1, 2) for s, pair in times.items() for name, t in zip("AB", pair)]
    return select_points(make_frame(records))[0]


def test_held_out_figures_on_a_hand_computed_case():
    points = tiny_points()
    # leave 100 out: fit on 200 (A) / 400 (B), cut 250 -> A at 100, regret 1
    # leave 200 out: fit on 100 (A) / 400 (B), cut 172 (B wins 3x at 400, loses 2x at 100) -> B at 200, regret 1.5
    # leave 400 out: fit on 100, 200 (both A) -> A everywhere, regret 3 at 400
    result = fit(points, complexity=Complexity(1, 1, 1))
    np.testing.assert_allclose(result.held_out["seq_len"], [1.0, 1.5, 3.0, 1.0, 1.5, 3.0])
    evaluation = evaluate(result)
    f = evaluation.get("fit, held-out seq_len").figures
    assert f.n == 6 and f.max == 3.0 and f.unavailable == 0
    assert f.geomean == pytest.approx(4.5 ** (1 / 3))
    assert f.within_5pct == pytest.approx(1 / 3)
    rows_figures = evaluation.get("fit, held-out rows").figures  # rows alike: the other row predicts it
    assert (rows_figures.geomean, rows_figures.max, rows_figures.within_5pct) == (1.0, 1.0, 1.0)
    training = evaluation.get("fit, in-sample").figures
    assert training.geomean == 1.0 and evaluation.get("fit, in-sample").kind == "in-sample"
    assert evaluation.get("per-cell best, in-sample").figures.geomean == 1.0
    always_a = evaluation.get("always A").figures
    assert always_a.geomean == pytest.approx(3 ** (1 / 3)) and always_a.max == 3.0
    assert always_a.within_5pct == pytest.approx(2 / 3)
    always_b = evaluation.get("always B").figures
    assert always_b.max == 2.0 and always_b.within_5pct == pytest.approx(1 / 3)


def test_held_out_needs_two_values():
    records = [dict(rows=1, seq_len=s, k=8, impl=i, median_us=t)
               for s, i, t in [(100, "A", 1.0), (100, "B", 2.0), (200, "A", 2.0), (200, "B", 1.0)]]
    points = select_points(make_frame(records))[0]
    assert holdout.held_out(points, "rows", lambda p: {}) is None
    row = evaluate(fit(points)).get("fit, held-out rows")
    assert row.figures is None and "needs two rows values" in row.note


def test_random_hold_out_judges_every_cell_once_in_five_seeded_folds():
    points = select_points(make_frame(planted()))[0]
    masks = holdout.held_out_masks(points, "random")
    assert len(masks) == 5
    assert np.array_equal(np.sum(masks, axis=0), np.ones(len(points.cells)))
    assert {int(m.sum()) for m in masks} <= {len(points.cells) // 5, len(points.cells) // 5 + 1}
    again = holdout.held_out_masks(points, "random")
    assert all(np.array_equal(a, b) for a, b in zip(masks, again))
    assert evaluate(fit(points)).get("fit, held-out random 20%").figures.n == len(points.cells)


def test_figures_count_unavailable_as_infinite():
    f = Figures.of([1.0, 1.02, math.inf])
    assert (f.n, f.unavailable, f.geomean, f.max) == (3, 1, math.inf, math.inf)
    assert f.within_5pct == pytest.approx(2 / 3)


def test_hand_rules_pick_as_published():
    proposal, batch128 = rules.get_rule("proposal"), rules.get_rule("batch128")
    assert [proposal.select(1, s, 2048) for s in (1024, 2048, 4096, 8192, 8193, 65535, 65536)] == [
        "per_row", "large_context", "per_row", "per_row", "large_context", "large_context", "radix"]
    assert batch128.select(128, 8193, 2048) == "large_context"
    assert batch128.select(129, 8193, 2048) == "per_row"
    assert batch128.select(1, 8192, 2048) == "per_row"
    with pytest.raises(UsageError, match="unknown hand rule 'nope'.*"):
        rules.get_rule("nope")


def test_hand_rules_evaluate_and_missing_implementations_are_not_applicable():
    # radix is 2x slower than the best everywhere; per_row best below 8192, large_context above
    records = []
    for s in (2048, 4096, 16384, 65536):
        best = "per_row" if s < 8192 else "large_context"
        for impl in ("per_row", "large_context", "radix"):
            records.append(dict(rows=1, seq_len=s, k=64, impl=impl,
                                median_us=10.0 if impl == best else (20.0 if impl == "radix" else 13.0)))
    points = select_points(make_frame(records))[0]
    evaluation = evaluate(fit(points))
    # proposal picks large_context (1.3), per_row (1), large_context (1), radix (2)
    f = evaluation.get("rule proposal").figures
    assert f.geomean == pytest.approx((1.3 * 2.0) ** 0.25) and f.max == 2.0 and f.within_5pct == 0.5
    # batch128 picks per_row, per_row, large_context, large_context: the oracle everywhere
    assert evaluation.get("rule batch128").figures.geomean == pytest.approx(1.0)

    without_radix = select_points(make_frame([r for r in records if r["impl"] != "radix"]))[0]
    row = evaluate(fit(without_radix)).get("rule proposal")
    assert row.figures is None and row.note == "n/a: no data for radix"


def two_gpu_frame():
    a = planted(ks=(64,))
    b = planted(ks=(64,), gpu_name="Other GPU", gpu_slug="other-gpu")
    return make_frame(a + b)


def test_selection_errors_are_clear():
    with pytest.raises(FitError, match=r"several GPUs: Other GPU \(other-gpu\), Synthetic GPU \(synthetic-gpu\)"):
        select_points(two_gpu_frame())
    assert select_points(two_gpu_frame(), gpu="other-gpu")[1].gpu_name == "Other GPU"
    with pytest.raises(FitError, match="no results for GPU 'H100'"):
        select_points(two_gpu_frame(), gpu="H100")
    frame = make_frame(planted())
    with pytest.raises(FitError, match=r"--k 999: not in the data; values there: 256, 2048"):
        select_points(frame, filters={"k": [999]})
    with pytest.raises(FitError, match=r"--distribution tie_heavy: not in the data; values there: normal"):
        select_points(frame, filters={"distribution": ["tie_heavy"]})
    with pytest.raises(FitError, match=r"--impl radix: not in the data; implementations there: large_context, per_row"):
        select_points(frame, impls=["radix"])
    assert select_points(frame, impls=["per_row", "large_context", "per_row"])[0].allowed == ("large_context", "per_row")
    with pytest.raises(FitError, match=r"only one implementation \(per_row\) may be picked"):
        select_points(frame, impls=["per_row"])
    failed = make_frame([{**r, "status": "error", "reason": "boom"} for r in planted()])
    with pytest.raises(FitError, match="no usable points"):
        select_points(failed)
    mixed = make_frame(planted(ks=(64,)) + planted(ks=(64,), timing_mode="eager"))
    with pytest.raises(FitError, match="mixes timing_mode values eager, graph.*--timing-mode"):
        select_points(mixed)
    assert select_points(mixed, filters={"timing_mode": ["eager"]})[0].cells


def test_caps_are_validated():
    points = select_points(make_frame(planted()))[0]
    with pytest.raises(FitError, match="caps"):
        fit_thresholds(points, Complexity(1, 0, 1))


def test_plugins_are_measured_but_picked_only_when_allowed():
    records = planted(ks=(64,))
    # a plugin 2x faster than everything at every point
    records += [dict(rows=r["rows"], seq_len=r["seq_len"], k=64, impl="flashinfer", median_us=r["median_us"] / 2,
                     impl_source="entry point flashinfer") for r in records if r["impl"] == "per_row"]
    points, _ = select_points(make_frame(records))
    assert points.impls == ("flashinfer", "large_context", "per_row")
    assert points.allowed == ("large_context", "per_row")
    result = fit(points)
    assert set(result.thresholds.impls()) == {"large_context", "per_row"}
    # regret stays relative to the fastest measured, plugin included: no built-in choice reaches 1
    assert result.training_regret().min() == pytest.approx(4 / 3)  # large_context t vs flashinfer 0.75 t
    allowed, _ = select_points(make_frame(records), impls=["flashinfer", "per_row"])
    assert fit(allowed).thresholds.impls() == ["flashinfer"]


def test_overlapping_runs_keep_the_newest_and_say_so():
    old = planted(ks=(64,), run_id="20260101T000000-aaaa", timestamp="2026-01-01T00:00:00+00:00")
    new = planted(ks=(64,), run_id="20260102T000000-bbbb", timestamp="2026-01-02T00:00:00+00:00")[:10]
    _, prov = select_points(make_frame(old + new))
    assert prov.overlap_notice == ("runs overlap: 10 (point, implementation) rows measured again by a newer run "
                                   "were left out (10 of run 20260101T000000-aaaa replaced by run 20260102T000000-bbbb)")
    assert select_points(make_frame(old))[1].overlap_notice is None


def test_misses_count_picks_more_than_five_percent_behind_the_fastest_allowed():
    from topkbench.fit import KBand, RowBand, Thresholds, misses
    # cells (k, rows, seq_len); regret of per_row, large_context, and a plugin not allowed
    cells = ((2048, 1, 1024), (2048, 1, 4096), (2048, 1, 16384))
    regret = np.array([[1.0, 1.04, 1.0], [1.06, 1.0, 1.0], [1.2, 1.1, 1.0]])
    points = Points(("per_row", "large_context", "plugin"), cells, regret, ("per_row", "large_context"))
    always_per_row = Thresholds((KBand((2048,), None, (RowBand(None, ((None, "per_row"),)),)),))
    # 4% behind: no miss; 6% behind: a miss; 1.2 against 1.1 (the plugin's 1.0 is not allowed): a miss
    assert misses(points, always_per_row) == 2


def test_among_held_out_equals_the_fewest_misses_win_then_the_simplest():
    from topkbench.fit import Candidate, _chosen
    figures = Figures.of([1.0])
    def candidate(k_bands, score, missed):
        return Candidate(Complexity(k_bands, 1, 0), {}, figures, score, missed)
    simple, rich, richer = candidate(1, 1.0440, 27), candidate(3, 1.0435, 0), candidate(4, 1.0435, 0)
    assert _chosen([simple, rich, richer]) is rich      # all within 0.5%: fewest misses, then simplest
    better = candidate(2, 1.0300, 5)
    assert _chosen([simple, rich, better]) is better    # a clearly lower held-out regret still wins
    # 0.25% apart on held-out cells is within a sweep's timing spread: the H200's seven runs had
    # 7 misses at the lowest held-out regret (1.0483) and 2 at 1.0509
    lowest, close = candidate(3, 1.0483, 7), candidate(3, 1.0509, 2)
    assert _chosen([lowest, close]) is close
    assert _chosen([lowest, candidate(3, 1.0540, 0)]) is lowest  # 0.54% behind: not equal


def test_against_lists_the_cells_where_the_fit_is_slower():
    from topkbench.evaluate import against
    from topkbench.results import Points

    cells = ((8, 1, 100), (8, 1, 200), (8, 2, 100), (8, 2, 200))
    regret = np.array([[1.0, 1.2], [1.3, 1.0], [1.0, 1.04], [1.0, 2.0]])
    points = Points(("a", "b"), cells, regret)

    class Picks:
        def __init__(self, *names):
            self.by_cell = dict(zip(cells, names))

        def select(self, num_rows, max_seq_len, k):
            return self.by_cell[(k, num_rows, max_seq_len)]

    # Cell by cell: faster (1.0 against 1.2), slower (1.3 against 1.0), within 5% (1.04 against
    # 1.0), and faster than a pick never measured there ("c": infinite regret).
    comparison = against(points, Picks("a", "a", "b", "a"), Picks("b", "b", "a", "c"))
    assert [(c.cell, c.before, c.before_regret, c.after, c.after_regret) for c in comparison.slower] == [
        ((8, 1, 200), "b", 1.0, "a", 1.3)]
    assert comparison.faster == 2
    assert comparison.after.geomean == pytest.approx((1.0 * 1.3 * 1.04 * 1.0) ** 0.25)
    assert comparison.before.unavailable == 1
    assert against(points, Picks("a", "b", "a", "a"), Picks("a", "b", "a", "a")).slower == ()
