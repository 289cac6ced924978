"""``topkbench fit-heuristic`` end to end: real CPU fixtures, --install, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthetic import make_frame
from test_codegen import run_isolated, write_results
from test_fit import planted
from topkbench import dispatch
from topkbench.cli import main
from topkbench.fit import fit
from topkbench.results import select_points
from topkbench.store import read_results

FIXTURES = Path(__file__).parent / "fixtures" / "cpu-amd-epyc"


def run(capsys, command: str, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``topkbench COMMAND ARGS...``."""
    try:
        main([command, *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cli(capsys, *args) -> tuple[int, str, str]:
    return run(capsys, "fit-heuristic", *args)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert all(line.startswith(("error:", "hint:")) for line in lines), err
    return lines[0]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def test_real_cpu_measurements_fit_end_to_end(tmp_path, capsys):
    assert list(FIXTURES.glob("*.parquet")), "the committed CPU fixture is missing"
    out_path = tmp_path / "cpu.py"
    code, out, err = cli(capsys, FIXTURES, "--out", out_path)
    assert code == 0, err
    assert "fit, held-out seq_len" in out and "always numpy" in out

    points, prov = select_points(read_results([FIXTURES]))
    result = fit(points, prov)
    assert set(points.impls) == {"numpy", "torch-cpu"}
    # The fixture's documented crossover: numpy wins single short rows, torch.topk longer/more rows.
    assert result.select(1, 128, 16) == "numpy"
    assert result.select(8, 2048, 64) == "torch-cpu"
    # "always X" is one of the candidate thresholds, so the fit cannot do worse on its own points.
    training = json.loads(out_path.with_suffix(".fit.json").read_text())["evaluation"]
    by_label = {row["label"]: row["figures"] for row in training}
    for impl in points.impls:
        assert by_label["fit, in-sample"]["geomean"] <= by_label[f"always {impl}"]["geomean"]
    assert by_label["rule proposal"] is None  # no GPU kernels in CPU data

    queries = [[r, s, k] for k, r, s in points.cells]
    assert run_isolated(out_path, queries, cwd=tmp_path)["picks"] == result.choices()
    assert out_path.with_suffix(".fit.md").read_text().startswith("# Top-k dispatch fit: cpu")

    again = tmp_path / "again" / "cpu.py"
    assert cli(capsys, FIXTURES, "--out", again)[0] == 0
    for suffix in (".py", ".fit.json", ".fit.md"):
        assert again.with_suffix(suffix).read_bytes() == out_path.with_suffix(suffix).read_bytes()


def test_install_copies_the_module_where_auto_finds_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dispatch, "bundled_heuristics_dir", lambda: tmp_path / "no-shipped-modules")
    # looked up (and nothing found) before the install: the default, torch.topk on CPU ...
    assert dispatch.choose(1, 128, 16, ["torch-cpu", "numpy"], "cpu-amd-epyc") == "torch-cpu"
    # ... and --install makes this process look again
    code, out, err = cli(capsys, FIXTURES, "--out", tmp_path / "fit.py", "--install")
    assert code == 0, err
    installed = Path.home() / ".config" / "topkbench" / "heuristics" / "cpu-amd-epyc.py"
    assert installed.read_bytes() == (tmp_path / "fit.py").read_bytes()
    assert dispatch.choose(1, 128, 16, ["torch-cpu", "numpy"], "cpu-amd-epyc") == "numpy"
    assert dispatch.choose(8, 2048, 64, ["torch-cpu", "numpy"], "cpu-amd-epyc") == "torch-cpu"


def test_filters_reach_the_fit(tmp_path, capsys):
    code, _, err = cli(capsys, FIXTURES, "--out", tmp_path / "f.py", "--k", "64", "--length-mode", "fixed",
                       "--distribution", "normal", "--timing-mode", "host", "--l2", "hot")
    assert code == 0, err
    data = json.loads((tmp_path / "f.fit.json").read_text())
    assert data["selection"]["k"] == ["64"] and data["selection"]["distribution"] == ["normal"]
    assert {cell["k"] for cell in data["cells"]} == {64}


def test_unknown_filter_value_names_the_values(tmp_path, capsys):
    code, _, err = cli(capsys, FIXTURES, "--out", tmp_path / "f.py", "--k", "999")
    assert code != 0
    assert one_error_line(err) == "error: --k 999: not in the data; values there: 16, 64"
    assert not (tmp_path / "f.py").exists()


def test_only_one_implementation_is_an_error(tmp_path, capsys):
    code, _, err = cli(capsys, FIXTURES, "--out", tmp_path / "f.py", "--impl", "numpy")
    assert code != 0
    assert "only one implementation (numpy)" in one_error_line(err)


def test_several_gpus_without_gpu_lists_them(tmp_path, capsys):
    write_results(make_frame(planted(ks=(64,))), tmp_path / "a.parquet")
    write_results(make_frame(planted(ks=(64,), gpu_name="H100", gpu_slug="h100", run_id="h100-run")),
                  tmp_path / "b.parquet")
    code, _, err = cli(capsys, tmp_path, "--out", tmp_path / "f.py")
    assert code != 0
    assert "several GPUs: H100 (h100), Synthetic GPU (synthetic-gpu)" in one_error_line(err)
    code, _, err = cli(capsys, tmp_path, "--out", tmp_path / "f.py", "--gpu", "h100")
    assert code == 0, err
    assert "GPU_SLUG = 'h100'" in (tmp_path / "f.py").read_text()


def test_no_usable_points_is_an_error(tmp_path, capsys):
    failed = [{**r, "status": "unsupported", "reason": "k too large"} for r in planted(ks=(64,))]
    write_results(make_frame(failed), tmp_path / "a.parquet")
    code, _, err = cli(capsys, tmp_path / "a.parquet", "--out", tmp_path / "f.py")
    assert code != 0
    assert "no usable points" in one_error_line(err)


def test_a_file_that_is_not_topkbench_parquet_is_an_error(tmp_path, capsys):
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "other.parquet")
    code, _, err = cli(capsys, tmp_path / "other.parquet", "--out", tmp_path / "f.py")
    assert code != 0
    assert "not a topkbench result file" in one_error_line(err)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    code, _, err = cli(capsys, tmp_path / "junk.parquet", "--out", tmp_path / "f.py")
    assert code != 0
    assert "not a readable Parquet file" in one_error_line(err)


def test_out_must_be_a_python_file(tmp_path, capsys):
    code, _, err = cli(capsys, FIXTURES, "--out", tmp_path / "f.txt")
    assert code != 0
    assert "must be a .py file" in one_error_line(err)


def test_out_that_cannot_be_written_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys):
    folder = tmp_path / "fits.py"  # a folder, however it is named
    folder.mkdir()
    code, _, err = cli(capsys, FIXTURES, "--out", folder)
    assert code == 2
    assert one_error_line(err) == f"error: --out {folder}: is a folder; give the file to write"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = cli(capsys, FIXTURES, "--out", blocker / "fit.py")
    assert code == 2 and "is a file, not a folder" in one_error_line(err)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix in (".json", ".md")]
    assert list(folder.iterdir()) == []


def test_compute_capability_from_the_data_the_flag_or_the_known_names(tmp_path, capsys):
    unknown = [{**r, "gpu_name": "Mystery GPU", "gpu_slug": "mystery-gpu", "compute_capability": ""}
               for r in planted(ks=(64,))]
    write_results(make_frame(unknown), tmp_path / "mystery.parquet")
    code, out, err = cli(capsys, tmp_path / "mystery.parquet", "--out", tmp_path / "m.py")
    assert code == 0, err
    assert "pass --compute-capability" in " ".join(out.split())
    assert dispatch.load_heuristic_module(tmp_path / "m.py").DEVICE["compute_capability"] == ""
    code, _, err = cli(capsys, tmp_path / "mystery.parquet", "--out", tmp_path / "m.py", "--compute-capability", "8.6")
    assert code == 0, err
    assert dispatch.load_heuristic_module(tmp_path / "m.py").DEVICE["compute_capability"] == "8.6"
    code, _, err = cli(capsys, tmp_path / "mystery.parquet", "--out", tmp_path / "m.py", "--compute-capability", "sm90")
    assert code == 2 and "expected MAJOR.MINOR" in one_error_line(err)
    # an H100 file written before the column existed: inferred from the name
    h100 = [{**r, "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_slug": "nvidia-h100-80gb-hbm3", "compute_capability": ""}
            for r in planted(ks=(64,))]
    write_results(make_frame(h100), tmp_path / "h100.parquet")
    assert cli(capsys, tmp_path / "h100.parquet", "--out", tmp_path / "h.py")[0] == 0
    assert dispatch.load_heuristic_module(tmp_path / "h.py").DEVICE["compute_capability"] == "9.0"


def test_against_lists_the_cells_the_fit_makes_slower(tmp_path, capsys):
    # The real CPU fixture: numpy wins single short rows, torch.topk the rest. Against itself the
    # fit changes nothing; against "always numpy" it is faster at every cell where it picks
    # torch.topk, and slower nowhere (test_fit.py plants a cell where the fit is the slower one).
    first = tmp_path / "first.py"
    assert cli(capsys, FIXTURES, "--out", first)[0] == 0
    code, out, err = cli(capsys, FIXTURES, "--out", tmp_path / "again.py", "--against", first)
    assert code == 0, err
    assert "against first.py:" in out and "0 more than 5% slower" in out and " 0 of " in out

    always_numpy = tmp_path / "always_numpy.py"
    always_numpy.write_text("def select(num_rows, max_seq_len, k):\n    return 'numpy'\n")
    code, out, err = cli(capsys, FIXTURES, "--out", tmp_path / "third.py", "--against", always_numpy)
    assert code == 0, err
    assert "0 more than 5% slower" in out
    points, prov = select_points(read_results([FIXTURES]))
    faster = sum(1 for k, r, s in points.cells if fit(points, prov).select(r, s, k) == "torch-cpu")
    assert f"{faster} of {len(points.cells)} cells more than 5% faster" in " ".join(out.split())


def test_against_a_module_that_is_not_one_is_a_one_line_error_before_the_fit(tmp_path, capsys):
    out_path = tmp_path / "cpu.py"
    not_a_module = tmp_path / "notes.py"
    not_a_module.write_text("x = 1\n")
    for bad in (tmp_path / "missing.py", not_a_module):
        code, out, err = cli(capsys, FIXTURES, "--out", out_path, "--against", bad)
        assert code != 0
        assert str(bad) in one_error_line(err)
        assert not out_path.exists()
