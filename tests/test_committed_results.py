"""The committed H100 results regenerate the committed dispatch module and report."""

from __future__ import annotations

from pathlib import Path

import pytest

from topkbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "results" / "nvidia-h100-80gb-hbm3"
MAIN_RUN = H100 / "dsv32-decode-242e9613-20261125T100822-1149.parquet"
MODULE = H100 / "fit" / "nvidia_h100_80gb_hbm3.py"


def test_module_regenerates_byte_for_byte(tmp_path, capsys):
    out = tmp_path / MODULE.name
    main(["fit-heuristic", str(MAIN_RUN), "--out", str(out)])
    assert out.read_bytes() == MODULE.read_bytes()
    for suffix in (".fit.json", ".fit.md"):
        generated = out.with_name(out.stem + suffix)
        assert generated.read_bytes() == MODULE.with_name(MODULE.stem + suffix).read_bytes()


@pytest.mark.slow
def test_report_builds_from_committed_results(tmp_path):
    pytest.importorskip("plotly")
    out = tmp_path / "report.html"
    main(["report", str(H100), "--out", str(out), "--heuristic", str(MODULE)])
    html = out.read_text()
    assert "graph/hot L2 - fixed lengths - normal" in html and "large_context" in html
