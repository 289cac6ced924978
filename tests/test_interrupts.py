"""Ctrl-C (SIGINT) and SIGTERM, sent as real signals to real `topkbench` processes: one line on
stderr saying what was kept and how to go on, exit 130 / 143, and a resumable run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_resume_kill import CONFIG, _keys

from topkbench.store import PARTS_SUFFIX, read_results

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOPKBENCH_LOCK_DIR": str(tmp_path / "locks")}


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, list[str], Path]:
    cfg = tmp_path / "killme.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "topkbench", "sweep", str(cfg), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        parts = list(out.glob(f"*/killme-*{PARTS_SUFFIX}/part-*.parquet"))
        if len(parts) >= 2:
            return proc, cmd, out
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the sweep wrote no parts: {proc.communicate()[1]}")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sweep_stops_on_a_signal_keeps_its_points_and_resumes(tmp_path, signum, code):
    proc, cmd, out = _start_sweep(tmp_path)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()][-2:]
    assert lines[0].startswith("error: interrupted:") and "kept in" in lines[0], stderr
    assert lines[1].startswith("hint: run the same command to resume")
    assert "Traceback" not in stderr
    kept = read_results([out])
    assert len(kept) >= 2 * 2  # at least the two parts seen before the signal
    resumed = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = read_results([out])
    assert len(final) == 80 and len(set(_keys(final))) == 80 and final["run_id"].nunique() == 1


@pytest.mark.slow
def test_verify_stops_on_ctrl_c_with_a_nonzero_exit(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("name: big\nimplementations: [torch-cpu, numpy]\n"
                   "axes: {rows: [1, 64], seq_len: [100000, 200000, 300000], k: [100, 1000],"
                   " distribution: [normal, relu_plateau, tie_heavy, constant]}\n")
    proc = subprocess.Popen([sys.executable, "-m", "topkbench", "verify", str(cfg), "-q"], cwd=REPO,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    assert proc.poll() is None, "verify finished before the signal: make the config bigger"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "nothing is certified" in stderr and "Traceback" not in stderr
