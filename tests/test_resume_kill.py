"""A sweep killed with SIGKILL resumes without losing or duplicating a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topkbench.config import load_config
from topkbench.schema import KEY_COLUMNS
from topkbench.store import PARTS_SUFFIX, read_results

REPO = Path(__file__).resolve().parents[1]

# 40 points x 2 implementations; noise_target 0 keeps every point sampling for its whole budget
# (2 x 0.1 s), so the sweep takes several seconds and can be killed half way.
CONFIG = """\
name: killme
implementations: [torch-cpu, numpy]
axes:
  rows: [1, 2]
  seq_len: [256, 512, 1024, 2048, 4096]
  k: [8, 16]
  length_mode: [fixed, ragged]
timing:
  warmup: 1
  min_samples: 3
  max_samples: 100000
  noise_target: 0.0
  budget_s: 0.1
"""


def _keys(frame) -> list[tuple]:
    return [tuple(r) for r in frame[list(KEY_COLUMNS)].itertuples(index=False)]


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    cfg_path = tmp_path / "killme.yaml"
    cfg_path.write_text(CONFIG)
    cfg = load_config(cfg_path)
    assert cfg.num_points == 40
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "topkbench", "sweep", str(cfg_path), "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts_dirs: list[Path] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            parts_dirs = list(out.glob(f"*/killme-*{PARTS_SUFFIX}"))
            if parts_dirs and len(list(parts_dirs[0].glob("part-*.parquet"))) >= 3:
                break
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.communicate()}"
            time.sleep(0.02)
        else:
            pytest.fail("no part files appeared")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    parts_dir = parts_dirs[0]
    stem = parts_dir.name[: -len(PARTS_SUFFIX)]
    final = parts_dir.parent / f"{stem}.parquet"
    assert not final.exists(), "the sweep finished before the kill; make the config slower"
    parts = sorted(parts_dir.glob("part-*.parquet"))
    assert 3 <= len(parts) < 40
    before = read_results(parts)
    assert len(before) == 2 * len(parts)
    run_id = before["run_id"].iloc[0]
    assert set(before["run_id"]) == {run_id}

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert final.exists() and not parts_dir.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]  # no second run, no leftovers

    after = read_results([final])
    keys = _keys(after)
    assert len(keys) == len(set(keys)) == 80
    expected = {(p.rows, p.seq_len, p.k, p.length_mode.value, p.distribution.value, impl, "host", "hot")
                for p in cfg.points() for impl in ("torch-cpu", "numpy")}
    assert set(keys) == expected
    assert set(after["run_id"]) == {run_id}
    assert set(after["status"]) == {"ok"}

    merged = before.merge(after, on=list(KEY_COLUMNS), suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    for column in ("timestamp", "median_us", "p20_us", "p80_us", "n_samples"):
        assert (merged[f"{column}_before"] == merged[f"{column}_after"]).all(), column
    assert all(list(a) == list(b) for a, b in zip(merged["samples_us_before"], merged["samples_us_after"]))
