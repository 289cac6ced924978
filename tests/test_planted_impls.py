"""Implementations that cheat the exactness check in the ways a real bug would, planted into
``sweep`` and ``verify``: each must come out ``wrong`` at every point, never as a timing.

- writes-nothing / writes-half: their output buffer already holds the correct answer (as memory
  recycled from another implementation can); only the harness's poison exposes them.
- stale-indices: selects at prepare and copies that answer in run(); only the check on new scores
  written in place exposes it. It is tested on normal scores: with plateaus of ties, a stale
  answer can be a correct one (an all-zero relu row), which no check can or should reject.
- claims-deterministic: exact values, highest-index ties, while declaring the lowest-index rule.
"""

from __future__ import annotations

import pytest

import fake_impls
from topkbench import sweep as sweep_mod
from topkbench.config import parse_config
from topkbench.impls import registry
from topkbench.schema import Status
from topkbench.store import read_results
from topkbench.sweep import run_sweep
from topkbench.verify import verify

PLANTED = ("writes-nothing", "writes-half", "stale-indices")
FAST = {"warmup": 1, "min_samples": 3, "max_samples": 4, "noise_target": 0.9, "budget_s": 0.01}


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    monkeypatch.setattr(registry, "_ENTRIES", {**registry._ENTRIES, **fake_impls.ENTRIES})
    monkeypatch.setattr(sweep_mod, "measure_copy_bandwidth_gbs", lambda cuda: 10.0)
    registry.get.cache_clear()
    yield
    registry.get.cache_clear()


def config(impls, distributions=("normal", "relu_plateau", "tie_heavy")):
    return parse_config({"name": "planted", "implementations": list(impls), "timing": FAST,
                         "axes": {"rows": [1, 4], "seq_len": [64, 301], "k": [8, 33],
                                  "length_mode": ["fixed", "ragged"], "distribution": list(distributions)}},
                        "planted")


@pytest.mark.parametrize("run", [1, 2])
def test_sweep_stores_every_planted_implementation_as_wrong(tmp_path, run):
    cfg = config((*PLANTED, "torch-cpu"), distributions=("normal",))
    frame = read_results([run_sweep(cfg, tmp_path, resume=False).path])
    for name in PLANTED:
        rows = frame[frame["impl"] == name]
        assert len(rows) == cfg.num_points, name
        assert set(rows["status"]) == {"wrong"}, (name, rows["reason"].tolist()[:3])
        assert rows["median_us"].isna().all() and (rows["n_samples"] == 0).all()
    assert set(frame[frame["impl"] == "torch-cpu"]["status"]) == {"ok"}


def test_unwritten_outputs_are_caught_on_tie_heavy_data_too(tmp_path):
    cfg = config(("writes-nothing", "writes-half"))
    frame = read_results([run_sweep(cfg, tmp_path).path])
    assert len(frame) == 2 * cfg.num_points and set(frame["status"]) == {"wrong"}


def test_stale_indices_are_caught_only_on_new_scores(tmp_path):
    frame = read_results([run_sweep(config(["stale-indices"], distributions=("normal",)), tmp_path).path])
    assert frame["reason"].str.startswith("on new scores written in place").all()


def test_verify_reports_every_planted_implementation_as_wrong():
    cfg = config((*PLANTED, "torch-cpu"), distributions=("normal",))
    outcome = verify(cfg)
    for name in PLANTED:
        statuses = {r.status for r in outcome.results if r.impl == name}
        assert statuses == {Status.WRONG}, name
    assert {r.status for r in outcome.results if r.impl == "torch-cpu"} == {Status.OK}


def test_a_false_determinism_claim_is_wrong_and_a_true_one_ok(tmp_path):
    cfg = config(["claims-deterministic", "correct-deterministic"], distributions=("tie_heavy",))
    frame = read_results([run_sweep(cfg, tmp_path).path])
    claims = frame[frame["impl"] == "claims-deterministic"]
    assert set(claims["status"]) == {"wrong"} and claims["reason"].str.contains("lowest indices").all()
    honest = frame[frame["impl"] == "correct-deterministic"]
    assert set(honest["status"]) == {"ok"} and honest["deterministic"].all()


@pytest.mark.parametrize("order", [("torch-cpu", "stale-indices"), ("stale-indices", "torch-cpu")])
def test_stale_indices_are_wrong_in_verify_whatever_runs_before_them(order):
    outcome = verify(config(order, distributions=("normal",)))
    assert {r.status for r in outcome.results if r.impl == "stale-indices"} == {Status.WRONG}
    assert {r.status for r in outcome.results if r.impl == "torch-cpu"} == {Status.OK}
