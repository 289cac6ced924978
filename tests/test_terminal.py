"""The sweep's terminal summary reads results as the fit does."""

from __future__ import annotations

from rich.console import Console

from synthetic import make_frame
from topkbench.terminal import summary_table


def _rows(table) -> list[list[str]]:
    console = Console(width=200, record=True)
    console.print(table)
    return [[cell.strip() for cell in line.split("│")] for line in console.export_text().splitlines() if "│" in line]


def test_best_is_the_least_worst_case_regret_and_times_are_geometric_means():
    # a is faster on normal data, b on plateaus by more: the geometric-mean time favours a,
    # but a dispatcher must hold up on both, so b (worst regret 1.1 against a's 1.5) is best
    frame = make_frame([
        dict(rows=1, seq_len=1024, k=8, impl="a", median_us=10.0, distribution="normal"),
        dict(rows=1, seq_len=1024, k=8, impl="b", median_us=11.0, distribution="normal"),
        dict(rows=1, seq_len=1024, k=8, impl="a", median_us=30.0, distribution="relu_plateau"),
        dict(rows=1, seq_len=1024, k=8, impl="b", median_us=20.0, distribution="relu_plateau"),
        dict(rows=1, seq_len=1024, k=8, impl="torch", median_us=40.0, distribution="normal"),
        dict(rows=1, seq_len=1024, k=8, impl="torch", median_us=40.0, distribution="relu_plateau"),
    ])
    table, hidden = summary_table(frame)
    ((rows, seq_len, k, a, b, torch, best, speedup),) = _rows(table)
    assert hidden == 0
    assert (a, b, torch) == ("17.3", "14.8", "40")  # sqrt(10 * 30), sqrt(11 * 20)
    assert (best, speedup) == ("b", f"{40 / (11 * 20) ** 0.5:.2f}x")


def test_a_newer_run_replaces_an_older_one_and_failures_are_not_timings():
    old = dict(run_id="20260101T000000-aaaa", timestamp="2026-01-01T00:00:00+00:00")
    new = dict(run_id="20260102T000000-bbbb", timestamp="2026-01-02T00:00:00+00:00")
    frame = make_frame([
        dict(rows=2, seq_len=4096, k=8, impl="a", median_us=5.0, **old),
        dict(rows=2, seq_len=4096, k=8, impl="a", status="wrong", reason="bad", **new),
        dict(rows=2, seq_len=4096, k=8, impl="b", median_us=9.0, **new),
    ])
    # a's old 5 us would win; its newest result is wrong, so a has no timing at all
    ((rows, seq_len, k, b, best),) = _rows(summary_table(frame)[0])
    assert (b, best) == ("9", "b")
