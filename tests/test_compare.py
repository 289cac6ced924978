"""Run-to-run comparison (topkbench compare)."""

from __future__ import annotations

import math

import pytest
from synthetic import make_frame

from topkbench.compare import compare_runs
from topkbench.errors import UsageError


def _run(times: dict[tuple[int, str], float]):
    return make_frame([dict(rows=1, seq_len=L, k=64, impl=impl, median_us=t) for (L, impl), t in times.items()])


def test_ratio_spread_and_decisive_winners():
    a = _run({(1024, "x"): 10.0, (1024, "y"): 10.5, (4096, "x"): 10.0, (4096, "y"): 20.0})
    # x gets 10% slower: the close call at 1024 flips, the decisive one at 4096 does not.
    b = _run({(1024, "x"): 11.0, (1024, "y"): 10.5, (4096, "x"): 11.0, (4096, "y"): 20.0})
    r = compare_runs(a, b, margin=0.10)
    assert r.pairs == 4 and r.points == 2
    assert r.ratio_median == pytest.approx(1.05)
    assert r.ratio_max_dev == pytest.approx(0.10)
    assert r.decisive_points == 1 and r.decisive_same_winner == 1.0
    assert r.all_same_winner == 0.5


def test_points_missing_an_implementation_are_not_compared_for_winners():
    a = _run({(1024, "x"): 10.0, (1024, "y"): 30.0})
    b = _run({(1024, "x"): 10.0})
    r = compare_runs(a, b)
    assert r.pairs == 1 and r.points == 0 and math.isnan(r.all_same_winner)


def test_disjoint_runs_are_an_error():
    with pytest.raises(UsageError):
        compare_runs(_run({(1024, "x"): 1.0}), _run({(2048, "x"): 1.0}))
