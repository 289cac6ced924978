"""Run-to-run comparison (topkbench compare) and its regression gate."""

from __future__ import annotations

import json
import math

import pytest
from synthetic import make_frame
from test_codegen import write_results
from test_fit_cli import run

from topkbench.compare import compare_runs, verdict
from topkbench.errors import UsageError


def _run(times: dict[tuple[int, str], float], spread: float = 0.02, run_id: str = "run-a", **extra):
    """One run; every timing's p20/p80 sit ``spread`` below/above its median."""
    return make_frame([dict(rows=1, seq_len=L, k=64, impl=impl, median_us=t, p20_us=t * (1 - spread),
                            p80_us=t * (1 + spread), run_id=run_id, **extra) for (L, impl), t in times.items()])


def test_ratio_spread_and_decisive_winners():
    a = _run({(1024, "x"): 10.0, (1024, "y"): 10.5, (4096, "x"): 10.0, (4096, "y"): 20.0})
    # x gets 10% slower: the close call at 1024 flips, the decisive one at 4096 does not.
    b = _run({(1024, "x"): 11.0, (1024, "y"): 10.5, (4096, "x"): 11.0, (4096, "y"): 20.0}, run_id="run-b")
    r = compare_runs(a, b, margin=0.10).reproducibility
    assert r.pairs == 4 and r.points == 2
    assert r.ratio_median == pytest.approx(1.05)
    assert r.ratio_max_dev == pytest.approx(0.10)
    assert r.ratio_max_dev_at == "1x1024 k=64 fixed normal graph/hot x"  # the first of the two 10% pairs
    assert r.decisive_points == 1 and r.decisive_same_winner == 1.0
    assert r.all_same_winner == 0.5


def test_points_missing_an_implementation_are_not_compared_for_winners():
    a = _run({(1024, "x"): 10.0, (1024, "y"): 30.0})
    b = _run({(1024, "x"): 10.0}, run_id="run-b")
    r = compare_runs(a, b).reproducibility
    assert r.pairs == 1 and r.points == 0 and math.isnan(r.all_same_winner)


def test_disjoint_runs_are_an_error():
    with pytest.raises(UsageError):
        compare_runs(_run({(1024, "x"): 1.0}), _run({(2048, "x"): 1.0}))


def test_verdicts_allow_for_each_sides_noise():
    assert verdict(1.12, 1.20, 10) == "slower"  # even the optimistic reading is beyond 10%
    assert verdict(1.05, 1.15, 10) == "ambiguous"  # the band straddles 1.10
    assert verdict(0.97, 1.04, 10) == "same"
    assert verdict(0.80, 0.89, 10) == "faster"  # below 1 / 1.1 = 0.909 even pessimistically
    a = _run({(1024, "x"): 10.0, (2048, "x"): 10.0, (4096, "x"): 10.0}, spread=0.01)
    b = make_frame([
        # 20% slower, tight noise: slower
        dict(rows=1, seq_len=1024, k=64, impl="x", median_us=12.0, p20_us=11.9, p80_us=12.1, run_id="run-b"),
        # 12% slower but noisy (p20 10.2): the band reaches below 1.10, so ambiguous
        dict(rows=1, seq_len=2048, k=64, impl="x", median_us=11.2, p20_us=10.2, p80_us=12.5, run_id="run-b"),
        dict(rows=1, seq_len=4096, k=64, impl="x", median_us=10.1, p20_us=10.0, p80_us=10.2, run_id="run-b"),
    ])
    result = compare_runs(a, b, threshold_pct=10)
    assert dict(zip(result.pairs["seq_len"], result.pairs["verdict"])) == {1024: "slower", 2048: "ambiguous",
                                                                          4096: "same"}
    assert result.failed and result.counts() == {"slower": 1, "ambiguous": 1, "same": 1, "faster": 0}
    assert list(result.worst(2)["seq_len"]) == [1024, 2048]
    assert not compare_runs(a, b, threshold_pct=25).failed
    # no point beyond 8% on its own, but all of them 7% slower with tight noise: the geomean fails
    c = _run({(1024, "x"): 10.7, (2048, "x"): 10.7, (4096, "x"): 10.7}, spread=0.001, run_id="run-c")
    gate = compare_runs(a, c, threshold_pct=5)
    assert gate.geomean_verdict == "slower" and set(gate.pairs["verdict"]) == {"slower"}
    assert not compare_runs(a, c, threshold_pct=8).failed


def cli(capsys, *args):
    return run(capsys, "compare", *args)


def test_cli_gate_names_the_worst_points_writes_json_and_exits_1(tmp_path, capsys):
    a = write_results(_run({(1024, "x"): 10.0, (4096, "x"): 10.0}, spread=0.01), tmp_path / "a.parquet")
    b = write_results(_run({(1024, "x"): 13.0, (4096, "x"): 10.0}, spread=0.01, run_id="run-b"),
                      tmp_path / "b.parquet")
    code, out, err = cli(capsys, a, b, "--fail-above", 10, "--json", tmp_path / "out" / "gate.json")
    assert code == 1, err
    # 1.3 and 1.0: the geometric mean, 1.14, is beyond 10% too
    assert "regression: 1 pair(s) and the geometric mean slower than 10% beyond the measured noise" in err
    worst = [line for line in out.splitlines() if "1024" in line and "1.300" in line]
    assert worst and "slower" in worst[0] and " x " in worst[0]
    data = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert data["failed"] is True and data["counts"]["slower"] == 1 and data["threshold_pct"] == 10
    assert data["worst"][0] == "1x1024 k=64 fixed normal graph/hot x"
    assert {p["seq_len"]: p["verdict"] for p in data["pairs"]} == {1024: "slower", 4096: "same"}
    assert cli(capsys, a, b, "--fail-above", 40)[0] == 0
    assert cli(capsys, a, b)[0] == 0  # without a threshold it only reports


def test_cli_says_when_both_sides_are_the_same_run(tmp_path, capsys):
    a = write_results(_run({(1024, "x"): 10.0}), tmp_path / "a.parquet")
    code, out, _ = cli(capsys, a, a, "--fail-above", 5)
    assert code == 0 and "both sides are the same run (run-a)" in out


def test_cli_json_path_that_is_a_folder_is_a_one_line_error(tmp_path, capsys):
    a = write_results(_run({(1024, "x"): 10.0}), tmp_path / "a.parquet")
    code, _, err = cli(capsys, a, a, "--json", tmp_path)
    assert code == 2 and err.startswith(f"error: --json {tmp_path}: is a folder")
