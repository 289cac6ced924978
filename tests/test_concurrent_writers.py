"""Several processes writing into one run at once: nothing lost, nothing twice; and a second
sweep on a device that is being measured is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from topkbench.device_lock import hold_device
from topkbench.errors import UsageError
from topkbench.schema import KEY_COLUMNS
from topkbench.store import RunStore, read_results

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from synthetic import make_frame
    from topkbench.store import RunStore
    directory, stem, run_id, writer, points = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    store = RunStore(directory, stem, run_id)
    for i in range(points):
        row = make_frame([{{"rows": writer + 1, "seq_len": 1000 + i, "k": 8, "impl": "w", "median_us": 1.0,
                           "run_id": run_id}}]).to_dict("records")
        store.append(row)
        if i % 7 == 3:
            store.finalize()  # compactions race with the other writers' appends
    store.finalize()
""")


def test_writers_and_compactions_in_parallel_lose_and_duplicate_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests")))
    directory, stem, run_id = tmp_path / "gpu", "cfg-0000-run", "run"
    directory.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers, points = 4, 30
    procs = [subprocess.Popen([sys.executable, str(script), str(directory), stem, run_id, str(w), str(points)], env=env)
             for w in range(writers)]
    assert [p.wait(timeout=240) for p in procs] == [0] * writers
    frame = read_results([directory])
    assert len(frame) == writers * points
    assert not frame.duplicated(subset=list(KEY_COLUMNS)).any()
    store = RunStore(directory, stem, run_id)
    assert store.finalize() == store.final_path and len(read_results([store.final_path])) == writers * points
    assert not store.parts_dir.exists()
    assert not [p for p in directory.iterdir() if ".tmp" in p.name]


def test_a_part_written_after_the_compactor_listed_the_parts_survives(tmp_path):
    from synthetic import make_frame

    store = RunStore(tmp_path, "cfg-run", "run")
    other = RunStore(tmp_path, "cfg-run", "run")
    store.append(make_frame([{"rows": 1, "seq_len": 10, "k": 2, "impl": "a", "median_us": 1.0}]).to_dict("records"))
    files_before = store._files()
    other.append(make_frame([{"rows": 2, "seq_len": 10, "k": 2, "impl": "a", "median_us": 1.0}]).to_dict("records"))
    # a compaction that listed only the first part must leave the second one
    store._files = lambda: files_before  # type: ignore[method-assign]
    store.finalize()
    assert len(read_results([tmp_path])) == 2
    del store._files
    store.finalize()
    assert len(read_results([store.final_path])) == 2


def test_second_holder_of_a_device_is_refused_with_the_first_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPKBENCH_LOCK_DIR", str(tmp_path))
    with hold_device("gpu-uuid-1", "GPU 0 (Test GPU)", "sweep quick"):
        holder = subprocess.run(
            [sys.executable, "-c", "from topkbench.device_lock import hold_device\n"
             "with hold_device('gpu-uuid-1', 'GPU 0 (Test GPU)', 'second'):\n    pass"],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        assert holder.returncode != 0 and "already being measured by pid" in holder.stderr
        assert "sweep quick" in holder.stderr
        with hold_device("gpu-uuid-2", "GPU 1", "other device"):
            pass  # another device is free
    with hold_device("gpu-uuid-1", "GPU 0", "after release"):
        pass


@pytest.mark.slow
def test_two_cli_sweeps_on_one_device_the_second_is_refused(tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text("name: slow\nimplementations: [torch-cpu]\n"
                      "timing: {min_samples: 5000, max_samples: 5000, budget_s: 60, noise_target: 0.0}\n"
                      "axes: {rows: [1], seq_len: [4096, 8192, 16384], k: [64]}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOPKBENCH_LOCK_DIR": str(tmp_path / "locks")}
    cmd = [sys.executable, "-m", "topkbench", "sweep", str(config), "--out", str(tmp_path / "r"), "-q"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list((tmp_path / "locks").glob("*.lock")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    first.kill()
    first.wait()
    assert second.returncode == 2, second.stderr
    assert "already being measured" in second.stderr and "Traceback" not in second.stderr


def test_a_config_too_big_for_the_machine_is_refused_before_allocating(tmp_path):
    from topkbench.footprint import check_fits

    with pytest.raises(UsageError, match=r"rows=4096 seq_len=1048576 needs about 256.0 GiB of host memory"):
        check_fits([(1, 10), (4096, 1 << 20)], cuda=False, available=24 << 30)
    check_fits([(256, 163840)], cuda=False, available=24 << 30)


def test_cli_refuses_a_too_big_config_with_one_line(tmp_path):
    config = tmp_path / "huge.yaml"
    config.write_text("name: huge\nimplementations: [numpy]\naxes: {rows: [100000], seq_len: [10000000], k: [8]}\n")
    for command in (["sweep", str(config), "--out", str(tmp_path)], ["verify", str(config)]):
        done = subprocess.run([sys.executable, "-m", "topkbench", *command], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "TOPKBENCH_LOCK_DIR": str(tmp_path)},
                              timeout=120)
        assert done.returncode == 2 and "GiB of host memory" in done.stderr and "Traceback" not in done.stderr
