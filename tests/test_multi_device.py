"""--devices: one worker per device, one run, calibration flags, a killed worker and Ctrl-C.

The pool runs on CPU stand-in devices (TOPKBENCH_FAKE_DEVICES) with the CPU implementations; the
subprocess tests start real worker processes, as on a GPU host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_resume_kill import CONFIG as SLOW_CONFIG
from topkbench import calibration, multi_device
from topkbench.calibration import Deviation, calibration_points, verdict, worker_hook
from topkbench.config import load_config, parse_config
from topkbench.errors import SignalInterrupt, UsageError
from topkbench.multi_device import PoolCallbacks, PoolEta, run_pool
from topkbench.pool_devices import PoolDevice, pool_devices
from topkbench.progress import task_features
from topkbench.schema import KEY_COLUMNS
from topkbench.store import PARTS_SUFFIX, read_results
from topkbench.sweep import plan_sweep, resolve_implementations, run_sweep

REPO = Path(__file__).resolve().parents[1]
FAST = {"warmup": 1, "min_samples": 3, "max_samples": 6, "noise_target": 0.5, "budget_s": 0.02}


def _keys(frame) -> list[tuple]:
    return [tuple(r) for r in frame[list(KEY_COLUMNS)].itertuples(index=False)]


def _expected(cfg) -> set[tuple]:
    return {(p.rows, p.seq_len, p.k, p.length_mode.value, p.distribution.value, impl, "host", "hot")
            for p in cfg.points() for impl in cfg.implementations}


# ---- devices, calibration rule, ETA (in process) ---------------------------------------------

def test_pool_devices_from_the_fake_count_and_the_visible_gpus(monkeypatch):
    assert pool_devices("all", {"TOPKBENCH_FAKE_DEVICES": "3"}) == [PoolDevice(i, "", True) for i in range(3)]
    assert [d.index for d in pool_devices("0,2", {"TOPKBENCH_FAKE_DEVICES": "3"})] == [0, 2]
    for bad, needle in (("3", "0..2"), ("0,0", "once"), ("x", "expected 'all'")):
        with pytest.raises(UsageError, match=needle):
            pool_devices(bad, {"TOPKBENCH_FAKE_DEVICES": "3"})
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    # CUDA numbers the visible GPUs: index 1 is physical GPU 3, pinned by its own number
    assert pool_devices("1", {"CUDA_VISIBLE_DEVICES": "2,3"}) == [PoolDevice(3, "3")]
    assert pool_devices("all", {}) == [PoolDevice(0, "0"), PoolDevice(1, "1")]
    assert pool_devices("all", {"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})[1] == PoolDevice(1, "GPU-bb")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UsageError, match="no CUDA device"):
        pool_devices("all", {})


def _figures(medians: dict[int, float], spread: float = 0.02) -> list[dict]:
    return [{"key": [point, impl, "hot"], "median": m, "p20": m * (1 - spread), "p80": m * (1 + spread)}
            for (point, impl), m in medians.items()]


def _gpu(scale: float, noise: float = 0.0) -> list[dict]:
    base = {(0, "a"): 10.0, (0, "b"): 20.0, (1, "a"): 100.0, (1, "b"): 150.0}
    return _figures({key: m * scale * (1 + noise * (i % 2)) for i, (key, m) in enumerate(base.items())})


def test_the_slower_of_two_gpus_is_flagged_and_not_the_faster():
    result = verdict({0: _gpu(1.0), 1: _gpu(1.3)})
    assert result[1].flagged and result[1].deviating == 4 and result[1].ratio == pytest.approx(1.3)
    assert not result[0].flagged and result[0].compared == 4
    assert "slower than the other 1 NVIDIA H200 GPU(s)" in calibration.flag_text(result[1], "NVIDIA H200", 1)


def test_noise_within_the_band_flags_nothing_and_one_slow_gpu_of_four_is_named():
    assert not any(d.flagged for d in verdict({0: _gpu(1.0), 1: _gpu(1.03), 2: _gpu(0.98, 0.02)}).values())
    result = verdict({0: _gpu(1.0), 1: _gpu(1.01), 2: _gpu(1.25), 3: _gpu(0.99)})
    assert [d for d, dev in result.items() if dev.flagged] == [2]
    # slow on half the measurements only: not "most"
    half = _gpu(1.0)
    half[0]["median"] *= 1.5
    half[1]["median"] *= 1.5
    assert not verdict({0: _gpu(1.0), 1: half})[1].flagged
    assert Deviation(0, 0, 1.0).flagged is False


def test_calibration_points_are_the_largest_k_fixed_normal_at_three_sizes():
    cfg = load_config("dsv32-decode")
    points = list(cfg.points())
    picks = [points[i] for i in calibration_points(points)]
    assert len(picks) == 3 and len({p.rows * p.seq_len for p in picks}) == 3
    assert all(p.k == 2048 and p.k < p.seq_len and p.length_mode.value == "fixed" and p.distribution.value == "normal"
               for p in picks)
    assert calibration_points([p for p in points if p.k >= p.seq_len]) == []


def test_pool_eta_is_the_busiest_workers_remaining_cost():
    eta = PoolEta()
    for key in range(4):
        eta.add(0, key, task_features(2, 1e6))
    eta.add(1, 0, task_features(2, 1e6))
    four = eta.remaining_s
    assert four == pytest.approx(4 * eta.model.expected(task_features(2, 1e6)))
    eta.done(0, 0, 0.5)
    eta.done(0, 1, 0.5)
    assert eta.remaining_s == pytest.approx(2 * eta.model.expected(task_features(2, 1e6)))
    eta.drop(0)
    assert eta.remaining_s == pytest.approx(eta.model.expected(task_features(2, 1e6)))


def _tiny(name="tinypool"):
    return parse_config({"name": name, "implementations": ["torch-cpu", "numpy"], "timing": dict(FAST),
                         "axes": {"rows": [1, 2], "seq_len": [64, 256], "k": [4, 8],
                                  "length_mode": ["fixed", "ragged"]}}, name)


def test_the_calibrate_hook_stamps_its_flag_and_stores_no_calibration_row(tmp_path, monkeypatch):
    from topkbench import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "measure_copy_bandwidth_gbs", lambda cuda: 10.0)
    cfg = _tiny()
    points = list(cfg.points())
    picks = calibration_points(points)
    impls = resolve_implementations(cfg)
    tasks = plan_sweep(cfg, impls, set(), point_filter={points[i] for i in picks}.__contains__).tasks
    sent, answers = [], [{"event": "verdict", "flag": "calibration: slower"}]
    hook = worker_hook(tasks, {p: i for i, p in enumerate(points)}, lambda e, **f: sent.append((e, f)), answers.pop)
    outcome = run_sweep(cfg, tmp_path, calibrate=hook)
    frame = read_results([outcome.path])
    assert len(frame) == cfg.num_points * 2 and len(set(_keys(frame))) == len(frame)
    assert set(frame["device_flag"]) == {"calibration: slower"}
    (event, fields), = sent
    assert event == "calibration" and {tuple(f["key"]) for f in fields["figures"]} == \
        {(i, impl, "hot") for i in picks for impl in ("torch-cpu", "numpy")}
    gone = worker_hook(tasks, {p: i for i, p in enumerate(points)}, lambda e, **f: None, lambda: None)
    with pytest.raises(SignalInterrupt):
        gone(lambda task: ([], None))


@pytest.mark.slow
def test_a_flagged_device_rows_carry_the_flag_and_the_record_is_kept(tmp_path, monkeypatch):
    # the parent in this process (real workers): plant the verdict that device 1 is slow
    monkeypatch.setenv("TOPKBENCH_FAKE_DEVICES", "2")
    monkeypatch.setenv("TOPKBENCH_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(multi_device, "verdict", lambda results: {0: Deviation(0, 4, 1.0), 1: Deviation(4, 4, 1.4)})
    cfg_path = tmp_path / "tinypool.yaml"
    cfg_path.write_text(json.dumps({"name": "tinypool", "implementations": ["torch-cpu", "numpy"], "timing": FAST,
                                    "axes": {"rows": [1, 2], "seq_len": [64, 256], "k": [4, 8]}}))
    cfg = load_config(cfg_path)
    out, logs = tmp_path / "results", []
    outcome = run_pool(cfg, out, pool_devices("all"), ["sweep", str(cfg_path), "--out", str(out)],
                       PoolCallbacks(lambda plan: None, lambda *a: None, logs.append))
    assert not outcome.failures, logs
    frame = read_results([out])
    assert set(_keys(frame)) == _expected(cfg) and len(frame) == len(_expected(cfg))
    assert set(frame["device_index"]) == {0, 1}
    assert set(frame[frame["device_index"] == 0]["device_flag"]) == {""}
    flag = calibration.flag_text(Deviation(4, 4, 1.4), frame["gpu_name"].iloc[0], 1)
    assert set(frame[frame["device_index"] == 1]["device_flag"]) == {flag}
    assert any("stand-in device 1" in note and "flagged" in note for note in outcome.notes)
    records = list(out.glob("*/tinypool-*.calibration/*.json"))
    assert len(records) == 1 and set(json.loads(records[0].read_text())["flags"]) == {"1"}


# ---- real subprocesses: the pool from the command line ------------------------------------------

def _env(tmp_path: Path, devices: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOPKBENCH_LOCK_DIR": str(tmp_path / "locks"),
            "TOPKBENCH_FAKE_DEVICES": str(devices)}


def _command(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "topkbench", "sweep", str(cfg), "--out", str(out), "--devices", "all", "-q"]


@pytest.mark.slow
def test_devices_all_measures_every_point_once_spread_over_the_devices(tmp_path):
    cfg_path = tmp_path / "tinypool.yaml"
    cfg_path.write_text(json.dumps({"name": "tinypool", "implementations": ["torch-cpu", "numpy"], "timing": FAST,
                                    "axes": {"rows": [1, 2, 3], "seq_len": [64, 256], "k": [4, 8, 64]}}))
    out = tmp_path / "results"
    done = subprocess.run(_command(cfg_path, out), cwd=REPO, env=_env(tmp_path, 3), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    cfg = load_config(cfg_path)
    frame = read_results([out])
    assert set(_keys(frame)) == _expected(cfg) and len(frame) == len(_expected(cfg))
    assert frame["run_id"].nunique() == 1 and set(frame["device_index"]) == {0, 1, 2}
    # a point's implementations are measured on one device
    assert frame.groupby(["rows", "seq_len", "k"])["device_index"].nunique().max() == 1
    assert len(list(out.glob("*/tinypool-*.parquet"))) == 1 and not list(out.glob(f"*/*{PARTS_SUFFIX}"))
    record = json.loads(next(out.glob("*/tinypool-*.calibration/*.json")).read_text())
    assert set(record["devices"]) == {"0", "1", "2"} and len(record["points"]) >= 1
    assert "stand-in device 0" in done.stderr and "results: " in done.stderr


def _start(cmd: list[str], env: dict, out: Path, stem: str, parts: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(out.glob(f"*/{stem}-*{PARTS_SUFFIX}/part-*.parquet"))) >= parts:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the pool wrote no parts: {proc.communicate()[1]}")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _resume_completes(tmp_path: Path, cfg_path: Path, out: Path) -> None:
    again = subprocess.run(_command(cfg_path, out), cwd=REPO, env=_env(tmp_path, 2), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    frame = read_results([out])
    expected = _expected(load_config(cfg_path))
    assert len(frame) == len(expected) and set(_keys(frame)) == expected and frame["run_id"].nunique() == 1


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_point_the_other_carries_on_and_a_resume_completes(tmp_path):
    cfg_path = tmp_path / "killme.yaml"
    cfg_path.write_text(SLOW_CONFIG)
    out = tmp_path / "results"
    proc = _start(_command(cfg_path, out), _env(tmp_path, 2), out, "killme", 3)
    victim = _children(proc.pid)[0]
    environ = Path(f"/proc/{victim}/environ").read_bytes().split(b"\0")
    device = int(next(v for v in environ if v.startswith(b"TOPKBENCH_PHYSICAL_DEVICE=")).split(b"=")[1])
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert f"stand-in device {device} (cpu" in stderr and "killed by SIGKILL" in stderr
    assert "lost the point in flight" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("hint: run the same command to measure what is missing")
    kept = read_results([out])
    assert 0 < len(kept) < 80 and len(set(_keys(kept))) == len(kept)
    # the other device finished its whole share (its plan line: "stand-in device 1 (...): 20 points, ...")
    shares = {int(d): int(n) for d, n in re.findall(r"stand-in device (\d) \(.*\): (\d+) points", stderr)}
    assert set(shares) == {0, 1} and sum(shares.values()) == 40
    assert (kept["device_index"] == 1 - device).sum() == 2 * shares[1 - device]
    assert (kept["device_index"] == device).sum() < 2 * shares[device]
    _resume_completes(tmp_path, cfg_path, out)


@pytest.mark.slow
@pytest.mark.parametrize(("send", "code"), [
    (lambda pid: os.killpg(pid, signal.SIGINT), 130),  # Ctrl-C: the terminal signals the whole process group
    (lambda pid: os.kill(pid, signal.SIGTERM), 143),  # a scheduler's SIGTERM to the parent only: forwarded
], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_whole_pool_keeps_its_points_and_resumes(tmp_path, send, code):
    cfg_path = tmp_path / "killme.yaml"
    cfg_path.write_text(SLOW_CONFIG)
    out = tmp_path / "results"
    proc = _start(_command(cfg_path, out), _env(tmp_path, 2), out, "killme", 2)
    workers = _children(proc.pid)
    send(proc.pid)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()][-2:]
    assert lines[0].startswith("error: interrupted: ") and "kept in" in lines[0], stderr
    assert lines[1].startswith("hint: run the same command to resume")
    assert "Traceback" not in stderr and "stand-in device 0: error" not in stderr
    assert len(workers) == 2 and not [pid for pid in workers if _running(pid)]
    kept = read_results([out])
    assert 2 <= len(kept) < 80
    _resume_completes(tmp_path, cfg_path, out)


def test_gpus_of_two_models_share_one_run_id_in_a_folder_each(tmp_path):
    cfg = _tiny()
    older = multi_device.RunStore.open(tmp_path, "model-b", cfg.name, cfg.hash(), True, run_id="20260101T000000-aaaa")
    older.parts_dir.mkdir(parents=True)
    run_id, stores = multi_device.open_run(cfg, tmp_path, ["model-a", "model-b"], True, None)
    assert run_id == "20260101T000000-aaaa"  # resumed from the folder that has it
    assert [s.directory.name for s in stores.values()] == ["model-a", "model-b"]
    assert {s.run_id for s in stores.values()} == {run_id}
    fresh, _ = multi_device.open_run(cfg, tmp_path, ["model-a", "model-b"], False, None)
    assert fresh != run_id
