"""The command line through ``main()``: one-line errors, --debug tracebacks, list, verify, sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from topkbench.store import read_results

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

TINY = """\
name: tiny-cli
implementations: [torch-cpu, numpy]
axes:
  rows: [1, 3]
  seq_len: [64, 300]
  k: [7, 64]
  length_mode: [fixed, ragged]
timing:
  warmup: 1
  min_samples: 3
  max_samples: 6
  noise_target: 0.5
  budget_s: 0.02
"""

VERIFY = """\
name: tiny-verify
implementations: [torch-cpu, numpy]
axes:
  rows: [1, 5]
  seq_len: [1, 2, 257]
  k: [1, 7, 256, 300]
  length_mode: [fixed, ragged]
  distribution: [normal, relu_plateau, lsb10, constant, ascending, tie_heavy, specials]
"""

# Runs main() with the broken test implementations registered.
WITH_FAKES = (
    "import sys, fake_impls; from topkbench.impls import registry; "
    "registry._ENTRIES.update(fake_impls.ENTRIES); registry.get.cache_clear(); "
    "from topkbench.cli import main; main(sys.argv[1:])"
)


def run_cli(*args: str, fakes: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "COLUMNS": "200"}
    env.pop("TOPKBENCH_DEBUG", None)
    cmd = [sys.executable, "-c", WITH_FAKES, *args] if fakes else [sys.executable, "-m", "topkbench", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def main_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """``main(argv)`` in this process (cheaper than a subprocess), as a CompletedProcess."""
    from topkbench.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert lines[0] == errors[0], proc.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]) and len(lines) <= 2, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    path = tmp_path / "tiny-cli.yaml"
    path.write_text(TINY)
    return path


def test_missing_config(tmp_path):
    proc = run_cli("sweep", str(tmp_path / "nope.yaml"), "--out", str(tmp_path))
    assert_one_line_error(proc, "config not found", "nope.yaml")
    assert "hint: " in proc.stderr


def test_bad_yaml(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("axes:\n  rows: [1, 2\n  k: 3\n")
    assert_one_line_error(main_in_process(capsys, "sweep", str(path), "--out", str(tmp_path)), "bad.yaml", "line")


def test_invalid_key_names_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("axes: {rows: [1], seq_len: [8], k: [2]}\ntiming: {noise_target: lots}\n")
    assert_one_line_error(main_in_process(capsys, "verify", str(path)), "timing.noise_target")


def test_unknown_implementation(tiny_cfg, tmp_path, capsys):
    proc = main_in_process(capsys, "sweep", str(tiny_cfg), "--out", str(tmp_path), "-i", "no-such-impl")
    assert_one_line_error(proc, "unknown implementation", "no-such-impl")
    assert "torch-cpu" in proc.stderr  # the hint names the choices
    assert not any(tmp_path.rglob("*.parquet"))


def test_gpu_implementation_on_cpu_machine(tiny_cfg, tmp_path, capsys):
    proc = main_in_process(capsys, "sweep", str(tiny_cfg), "--out", str(tmp_path), "-i", "torch")
    assert_one_line_error(proc, "'torch'", "cannot run here")
    assert_one_line_error(main_in_process(capsys, "verify", str(tiny_cfg), "-i", "torch"), "'torch'")


def test_corrupt_result_file_when_resuming(tiny_cfg, tmp_path):
    from topkbench.config import load_config
    from topkbench.provenance import device_info

    cfg = load_config(tiny_cfg)
    folder = tmp_path / device_info(False).gpu_slug
    folder.mkdir()
    junk = folder / f"{cfg.name}-{cfg.hash()[:8]}-20260101T000000-abcd.parquet"
    junk.write_bytes(os.urandom(2048))
    proc = run_cli("sweep", str(tiny_cfg), "--out", str(tmp_path), "-q")
    assert_one_line_error(proc, str(junk))
    assert junk.read_bytes() and len(list(folder.iterdir())) == 1  # nothing else written


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "sweep", str(tmp_path / "nope.yaml"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_usage_error_from_click(capsys):
    proc = main_in_process(capsys, "sweep", "--no-such-option")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "No such option" in proc.stderr


def test_list():
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    for name in ("torch-cpu", "numpy", "torch"):
        assert name in proc.stdout
    assert "cpu:" in proc.stdout and "quick" in proc.stdout


def test_version(capsys):
    proc = main_in_process(capsys, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("topkbench ")


def test_verify_tiny_config_passes(tmp_path, capsys):
    path = tmp_path / "tiny-verify.yaml"
    path.write_text(VERIFY)
    proc = main_in_process(capsys, "verify", str(path), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "checked cases exact" in proc.stderr
    assert "specials" in proc.stdout and "FAIL" not in proc.stdout


def test_verify_wrong_implementation_fails_and_names_the_case(tmp_path):
    path = tmp_path / "tiny-verify.yaml"
    path.write_text(VERIFY)
    proc = run_cli("verify", str(path), "-q", "-i", "numpy", "-i", "ignores-lengths", fakes=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "FAIL" in proc.stdout
    fail_lines = [line for line in proc.stderr.splitlines() if line.strip().startswith("wrong ")]
    assert fail_lines and all("ignores-lengths" in line and "ragged" in line for line in fail_lines)
    assert "outside [0, length)" in fail_lines[0] and "rows=" in fail_lines[0] and "seq_len=" in fail_lines[0]
    assert "error: " in proc.stderr and "cases failed" in proc.stderr


@pytest.mark.slow
def test_sweep_tiny_writes_parquet_and_prints_summary(tiny_cfg, tmp_path):
    out = tmp_path / "results"
    proc = run_cli("sweep", str(tiny_cfg), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    files = list(out.glob("*/tiny-cli-*.parquet"))
    assert len(files) == 1
    frame = read_results(files)
    assert len(frame) == 16 * 2
    assert set(frame["status"]) == {"ok", "unsupported"}  # k=64 at seq_len=64 is unsupported
    assert "results: " in proc.stderr and str(files[0]) in proc.stderr.replace("\n", "")
    assert "median us per selection" in proc.stdout
    assert "torch-cpu" in proc.stdout and "numpy" in proc.stdout
    assert "unsupported" in proc.stderr


def test_sweep_again_has_nothing_new(tiny_cfg, tmp_path, capsys, monkeypatch):
    from topkbench import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "measure_copy_bandwidth_gbs", lambda cuda: 10.0)
    out = tmp_path / "results"
    first = main_in_process(capsys, "sweep", str(tiny_cfg), "--out", str(out), "-q")
    assert first.returncode == 0, first.stderr
    again = main_in_process(capsys, "sweep", str(tiny_cfg), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "nothing new to measure" in again.stderr and "32 already in this run" in again.stderr
    assert len(read_results([out])) == 32


def test_sweep_out_on_a_file_is_a_one_line_error(tiny_cfg, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    proc = run_cli("sweep", str(tiny_cfg), "--out", str(blocker), "-q")
    assert_one_line_error(proc, "cannot write results under", str(blocker))
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_report_stops_on_ctrl_c_and_leaves_no_file(tmp_path):
    """A report interrupted while it builds: exit 130, one line, and neither the report nor a
    temporary file left behind."""
    import signal
    import time

    pytest.importorskip("plotly")
    out = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "topkbench", "report", str(REPO / "results" / "nvidia-h100-80gb-hbm3"),
                             "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(3.0)
    assert proc.poll() is None, "the report finished before the signal"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
