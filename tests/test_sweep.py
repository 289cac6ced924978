"""In-process sweeps over tiny configs with the CPU implementations and broken test ones."""

from __future__ import annotations

import math

import pytest

import fake_impls
from topkbench import sweep as sweep_mod
from topkbench.config import parse_config
from topkbench.errors import DeviceError, UsageError
from topkbench.impls import registry
from topkbench.schema import KEY_COLUMNS, SCHEMA_VERSION
from topkbench.store import read_results
from topkbench.sweep import plan_sweep, resolve_implementations, run_sweep

FAST_TIMING = {"warmup": 1, "min_samples": 3, "max_samples": 6, "noise_target": 0.5, "budget_s": 0.02}


def tiny(impls=("torch-cpu", "numpy"), name="tiny", **axes) -> object:
    data = {"name": name, "implementations": list(impls), "timing": dict(FAST_TIMING),
            "axes": {"rows": [1, 3], "seq_len": [64], "k": [4], "length_mode": ["fixed", "ragged"], **axes}}
    return parse_config(data, name)


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    monkeypatch.setattr(registry, "_ENTRIES", {**registry._ENTRIES, **fake_impls.ENTRIES})
    registry.get.cache_clear()
    yield
    registry.get.cache_clear()


@pytest.fixture
def fixed_bandwidth(monkeypatch):
    monkeypatch.setattr(sweep_mod, "measure_copy_bandwidth_gbs", lambda cuda: 10.0)


def keys_of(frame) -> list[tuple]:
    return [tuple(r) for r in frame[list(KEY_COLUMNS)].itertuples(index=False)]


def test_rows_per_point_and_impl(tmp_path):
    cfg = tiny()
    outcome = run_sweep(cfg, tmp_path)
    assert outcome.path is not None and outcome.path.exists()
    frame = read_results([outcome.path])
    assert len(frame) == cfg.num_points * 2 == 8
    assert len(set(keys_of(frame))) == 8
    assert set(frame["status"]) == {"ok"}
    assert set(frame["impl"]) == {"torch-cpu", "numpy"}
    assert set(frame["timing_mode"]) == {"host"} and set(frame["l2"]) == {"hot"}
    assert (frame["median_us"] > 0).all() and (frame["min_us"] > 0).all()
    assert (frame["p20_us"] <= frame["median_us"]).all() and (frame["median_us"] <= frame["p80_us"]).all()
    assert (frame["n_samples"] >= 3).all() and (frame["n_samples"] <= 6).all()
    assert all(len(s) == n for s, n in zip(frame["samples_us"], frame["n_samples"]))
    assert (frame["launches_per_sample"] >= 1).all()
    assert (frame["bandwidth_gbs"] > 0).all()
    assert all(math.isfinite(v) and v > 0 for v in frame["pct_of_floor"])
    assert (frame["floor_us"] * 100 / frame["median_us"] - frame["pct_of_floor"]).abs().max() < 1e-9
    fixed = frame[frame["length_mode"] == "fixed"]
    assert (fixed["bytes"] == fixed["rows"] * 64 * 4 + fixed["rows"] * 4 * 4).all()
    ragged = frame[frame["length_mode"] == "ragged"]
    assert ((ragged["mean_length"] >= 0.8 * 64) & (ragged["mean_length"] <= 64)).all()
    # provenance
    assert frame["gpu_name"].str.startswith("cpu:").all()
    assert frame["gpu_slug"].nunique() == 1 and outcome.path.parent.name == frame["gpu_slug"].iloc[0]
    assert set(frame["run_id"]) == {outcome.store.run_id}
    assert set(frame["config_hash"]) == {cfg.hash()} and set(frame["config_name"]) == {"tiny"}
    assert set(frame["schema_version"]) == {SCHEMA_VERSION}
    assert frame["timestamp"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$").all()
    assert frame["torch_version"].str.len().gt(0).all() and frame["host"].str.len().gt(0).all()
    assert set(frame["l2_bytes"]) == {0} and (frame["sm_count"] >= 1).all()
    assert outcome.path.name.startswith(f"tiny-{cfg.hash()[:8]}-{outcome.store.run_id}")


def test_unsupported_points_counted_in_plan(tmp_path, fixed_bandwidth):
    cfg = tiny(k=[4, 64, 100])  # k == seq_len and k > seq_len: nothing to time
    plans = []
    outcome = run_sweep(cfg, tmp_path, on_plan=lambda plan, store: plans.append(plan))
    plan = plans[0]
    assert plan.unsupported == 2 * 2 * 2 * 2  # (k=64, k=100) x rows x modes x impls
    assert plan.to_measure == 2 * 2 * 2 and plan.already_done == 0
    frame = read_results([outcome.path])
    unsupported = frame[frame["status"] == "unsupported"]
    assert len(unsupported) == 16 and set(unsupported["k"]) == {64, 100}
    assert unsupported["reason"].str.contains("seq_len").all()
    assert unsupported["median_us"].isna().all() and (unsupported["n_samples"] == 0).all()
    assert (frame[frame["k"] == 4]["status"] == "ok").all()


def test_max_k_unsupported_in_plan(tmp_path, fixed_bandwidth):
    cfg = tiny(impls=("small-k", "numpy"), k=[2, 8])
    plan = plan_sweep(cfg, resolve_implementations(cfg), set())
    assert plan.unsupported == 4 and plan.to_measure == 12
    frame = read_results([run_sweep(cfg, tmp_path).path])
    bad = frame[(frame["impl"] == "small-k") & (frame["k"] == 8)]
    assert set(bad["status"]) == {"unsupported"} and bad["reason"].str.contains("limit").all()


def test_raising_impl_gives_error_rows_and_sweep_goes_on(tmp_path, fixed_bandwidth):
    cfg = tiny(impls=("raises", "torch-cpu"))
    frame = read_results([run_sweep(cfg, tmp_path).path])
    errors = frame[frame["impl"] == "raises"]
    assert len(errors) == 4 and set(errors["status"]) == {"error"}
    assert errors["reason"].str.contains("RuntimeError: kaboom").all()
    ok = frame[frame["impl"] == "torch-cpu"]
    assert len(ok) == 4 and set(ok["status"]) == {"ok"}


def test_wrong_impl_gives_wrong_rows_never_timings(tmp_path, fixed_bandwidth):
    cfg = tiny(impls=("one-wrong", "ignores-lengths", "numpy"))
    outcome = run_sweep(cfg, tmp_path)
    frame = read_results([outcome.path])
    one = frame[frame["impl"] == "one-wrong"]
    assert set(one["status"]) == {"wrong"} and one["reason"].str.contains("differ").all()
    ign = frame[frame["impl"] == "ignores-lengths"]
    assert set(ign[ign["length_mode"] == "ragged"]["status"]) == {"wrong"}
    assert ign[ign["length_mode"] == "ragged"]["reason"].str.contains("outside").all()
    assert set(ign[ign["length_mode"] == "fixed"]["status"]) == {"ok"}  # harmless without lengths
    wrong = frame[frame["status"] == "wrong"]
    assert wrong["median_us"].isna().all() and (wrong["n_samples"] == 0).all()
    assert wrong["samples_us"].map(len).eq(0).all()
    assert set(frame[frame["impl"] == "numpy"]["status"]) == {"ok"}


def test_resume_measures_nothing_new(tmp_path, fixed_bandwidth):
    cfg = tiny()
    first = run_sweep(cfg, tmp_path)
    before = read_results([first.path])
    plans = []
    second = run_sweep(cfg, tmp_path, on_plan=lambda plan, store: plans.append(plan))
    assert second.measured_rows == []
    assert plans[0].already_done == 8 and plans[0].to_measure == 0 and plans[0].unsupported == 0
    assert second.path == first.path and second.store.run_id == first.store.run_id
    after = read_results([second.path])
    assert len(after) == 8
    assert sorted(after["timestamp"]) == sorted(before["timestamp"])
    assert sorted(after["median_us"]) == sorted(before["median_us"])
    assert len(list(first.path.parent.glob("*.parquet"))) == 1


def test_resume_adds_only_missing_points(tmp_path, fixed_bandwidth):
    small = tiny(impls=("numpy",))
    first = run_sweep(small, tmp_path)
    # a run killed half way: only part of the config measured, as parts
    store = first.store
    frame = read_results([first.path])
    store.final_path.unlink()
    store.append(frame[frame["rows"] == 1].drop(columns="source_file").to_dict("records"))
    plans = []
    second = run_sweep(small, tmp_path, on_plan=lambda plan, s: plans.append(plan))
    assert plans[0].already_done == 2 and plans[0].to_measure == 2
    assert len(second.measured_rows) == 2 and {r["rows"] for r in second.measured_rows} == {3}
    final = read_results([second.path])
    assert len(final) == 4 and len(set(keys_of(final))) == 4
    assert set(final["run_id"]) == {first.store.run_id}


def test_no_resume_makes_a_second_run_file(tmp_path, fixed_bandwidth):
    cfg = tiny(impls=("numpy",))
    first = run_sweep(cfg, tmp_path)
    second = run_sweep(cfg, tmp_path, resume=False)
    assert second.path != first.path and second.store.run_id != first.store.run_id
    assert len(second.measured_rows) == 4
    files = sorted(first.path.parent.glob("*.parquet"))
    assert files == sorted([first.path, second.path])
    both = read_results([tmp_path])
    assert len(both) == 8 and both["run_id"].nunique() == 2


def test_requested_impls_override_config(tmp_path, fixed_bandwidth):
    cfg = tiny()
    outcome = run_sweep(cfg, tmp_path, requested=["numpy"])
    assert set(read_results([outcome.path])["impl"]) == {"numpy"}


def test_available_takes_cpu_impls_here():
    cfg = parse_config({"axes": {"rows": 1, "seq_len": 8, "k": 2}}, "a")
    names = [i.name for i in resolve_implementations(cfg)]
    assert {"torch-cpu", "numpy"} <= set(names)
    assert "torch" not in names


def test_unknown_and_gpu_impls_are_refused():
    cfg = tiny()
    with pytest.raises(UsageError, match="nope"):
        resolve_implementations(cfg, ["nope"])
    with pytest.raises(DeviceError, match="torch"):
        resolve_implementations(cfg, ["torch"])


def test_point_callback(tmp_path, fixed_bandwidth):
    seen = []
    run_sweep(tiny(), tmp_path, on_point=lambda task, rows, seconds: seen.append((task, len(rows), seconds)))
    assert len(seen) == 4 and sum(n for _, n, _ in seen) == 8
    assert all("rows=" in task.label and seconds > 0 for task, _, seconds in seen)


def test_slices_of_a_config_share_one_run(tmp_path, fixed_bandwidth):
    cfg = tiny()
    first = run_sweep(cfg, tmp_path, only=cfg.parse_only(["rows=1"]))
    assert {r["rows"] for r in first.measured_rows} == {1} and len(first.measured_rows) == 4
    second = run_sweep(cfg, tmp_path, only=cfg.parse_only(["rows=1,3"]))
    assert {r["rows"] for r in second.measured_rows} == {3} and len(second.measured_rows) == 4
    assert second.store.run_id == first.store.run_id
    final = read_results([second.path])
    assert len(final) == 8 and len(set(keys_of(final))) == 8
