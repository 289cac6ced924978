"""The sweep's ETA weighs points by their cost, and logs get plain progress lines."""

from __future__ import annotations

import numpy as np

from topkbench.progress import CostModel, PlainProgress, SweepEta, format_duration, task_features


def _cost(measurements: int, nbytes: float) -> float:
    """A planted truth of the model's form, near the prior's order: 20 ms per measurement plus
    3 ns per byte for each measurement and once for the workload."""
    return 0.02 * measurements + 3e-9 * (measurements + 1) * nbytes


def test_eta_weighs_points_by_bytes_where_a_count_is_off_by_far():
    # a config ordered small to large, as sweeps are: counting points would predict the rest
    # from the cheap first ones
    sizes = [4 * r * s for r in (1, 16, 256) for s in (1024, 16384, 131072)]
    feats = [task_features(3, b) for b in sizes]
    truth = [_cost(3, b) for b in sizes]
    eta = SweepEta(feats)
    for seconds in truth[:4]:
        eta.point_done(seconds)
    remaining_truth = sum(truth[4:])
    by_count = sum(truth[:4]) / 4 * (len(sizes) - 4)
    assert abs(eta.remaining_s - remaining_truth) / remaining_truth < 0.3
    assert remaining_truth / by_count > 3  # what the old ETA did: far too short


def test_model_converges_to_the_observed_costs():
    model = CostModel()
    rng = np.random.default_rng(0)
    for _ in range(30):
        m, b = int(rng.integers(1, 5)), float(rng.uniform(1e5, 1e9))
        model.observe(task_features(m, b), _cost(m, b))
    f = task_features(2, 5e8)
    assert abs(model.expected(f) - _cost(2, 5e8)) / _cost(2, 5e8) < 0.05


def test_plain_lines_every_interval_and_at_the_end():
    lines, now = [], [0.0]
    plain = PlainProgress(10, lines.append, interval=30, clock=lambda: now[0])
    plain.advance(2, "a", 100)
    assert lines == []
    now[0] = 31
    plain.advance(2, "b", 50)
    assert len(lines) == 1 and "4/10 measurements" in lines[0] and "eta 0:50" in lines[0] and "(last: b)" in lines[0]
    now[0] = 35
    plain.advance(6, "c", 0)
    assert len(lines) == 2 and "10/10" in lines[1]


def test_format_duration():
    assert format_duration(5) == "0:05" and format_duration(3725) == "1:02:05"
