"""The committed H100, H200 and CPU results regenerate the shipped dispatch modules, their
summaries and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from topkbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "results" / "nvidia-h100-80gb-hbm3"
MAIN_RUN = H100 / "dsv32-decode-242e9613-20261125T104124-d049.parquet"
#: The one shipped copy, with its .fit.md and .fit.json beside it.
MODULE = ROOT / "topkbench" / "heuristics" / "nvidia-h100-80gb-hbm3.py"
#: The full dsv32-decode grid (built-in kernels), and its k=2048 slice measured again with filtered
#: and FlashInfer: the fit takes the newest run at each point.
H200_RUNS = [ROOT / "results" / "nvidia-h200" / f"dsv32-decode-{run}.parquet"
             for run in ("a74542a7-20261128T110547-142a", "1eeda980-20261128T130337-43aa",
                         "1eeda980-20261128T142437-86b3", "1eeda980-20261128T143334-3e5a",
                         "1eeda980-20261128T152031-785f", "1eeda980-20261128T154744-1733",
                         "1eeda980-20261128T170216-4811", "1eeda980-20261128T175423-b442",
                         "1eeda980-20261128T180558-1035", "1eeda980-20261128T185102-c431",
                         "1eeda980-20261128T190025-5fc0", "1eeda980-20261128T190344-3af4",
                         "1eeda980-20261128T202131-f2cd")]
H200_MODULE = ROOT / "topkbench" / "heuristics" / "nvidia-h200.py"
CPU_RUNS = ROOT / "results" / "cpu-amd-epyc"
CPU_MODULE = ROOT / "topkbench" / "heuristics" / "cpu-amd-epyc.py"


@pytest.mark.parametrize("data, module", [([MAIN_RUN], MODULE), (H200_RUNS, H200_MODULE), ([CPU_RUNS], CPU_MODULE)],
                         ids=["h100", "h200", "cpu"])
def test_module_regenerates_byte_for_byte(tmp_path, capsys, data, module):
    out = tmp_path / module.name
    main(["fit-heuristic", *map(str, data), "--out", str(out)])
    assert out.read_bytes() == module.read_bytes()
    for suffix in (".fit.json", ".fit.md"):
        generated = out.with_name(out.stem + suffix)
        assert generated.read_bytes() == module.with_name(module.stem + suffix).read_bytes()


def test_auto_on_this_cpu_picks_the_baseline_measured_faster(monkeypatch, tmp_path):
    """numpy only for one or two rows of up to 128 columns; torch.topk everywhere else."""
    from topkbench import dispatch

    monkeypatch.setattr(dispatch, "user_heuristics_dir", lambda: tmp_path)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.reload()
    cpu = ["numpy", "torch-cpu"]
    assert dispatch.choose(1, 128, 16, cpu, "cpu-amd-epyc") == "numpy"
    assert dispatch.choose(2, 128, 64, cpu, "cpu-amd-epyc") == "numpy"
    for shape in [(1, 256, 64), (4, 128, 16), (8, 2048, 64), (64, 131072, 2048)]:
        assert dispatch.choose(*shape, cpu, "cpu-amd-epyc") == "torch-cpu"


@pytest.mark.slow
def test_report_builds_from_committed_results(tmp_path):
    pytest.importorskip("plotly")
    out = tmp_path / "report.html"
    main(["report", str(H100), "--out", str(out), "--heuristic", str(MODULE)])
    html = out.read_text()
    assert "graph/hot L2 - fixed lengths - normal" in html and "large_context" in html


def test_auto_on_an_h100_uses_the_shipped_module(monkeypatch, tmp_path):
    from topkbench import dispatch

    monkeypatch.setattr(dispatch, "user_heuristics_dir", lambda: tmp_path)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.reload()
    kernels = ["torch", "per_row", "large_context", "radix"]
    assert dispatch.choose(1, 131072, 2048, kernels, "nvidia-h100-80gb-hbm3") == "radix"
    assert dispatch.choose(256, 131072, 2048, kernels, "nvidia-h100-80gb-hbm3") == "large_context"
    assert dispatch.choose(256, 4096, 2048, kernels, "nvidia-h100-80gb-hbm3") == "per_row"
