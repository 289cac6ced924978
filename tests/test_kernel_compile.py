"""Every kernel source compiles for sm_90 with each define set topkbench uses, without spills.

CPU-only (runs in CI): nvcc builds a cubin from the same include-expanded text that CuPy compiles,
and ptxas's -v report is checked for spill stores/loads, which would quietly cost bandwidth.
Skipped when nvcc is not on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from topkbench.cuda import loader
from topkbench.cuda.variants import compile_variants

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

_FUNCTION = re.compile(r"Compiling entry function '([^']+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def _variant_id(pair: tuple[str, dict[str, int]]) -> str:
    source, defines = pair
    return source + ("[" + ",".join(f"{k}={v}" for k, v in sorted(defines.items())) + "]" if defines else "[defaults]")


def parse_ptxas_report(text: str) -> dict[str, dict[str, int]]:
    """Per entry function: stack frame, spill stores, spill loads and registers from ptxas -v."""
    report: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if (m := _FUNCTION.search(line)):
            current = m.group(1)
            report[current] = {}
        elif current is not None and (m := _SPILLS.search(line)):
            report[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _REGISTERS.search(line)):
            report[current]["registers"] = int(m.group(1))
    return report


def test_parse_ptxas_report_reads_spills():
    text = ("ptxas info    : Compiling entry function 'f' for 'sm_90'\n"
            "ptxas info    : Function properties for f\n"
            "    48 bytes stack frame, 44 bytes spill stores, 76 bytes spill loads\n"
            "ptxas info    : Used 64 registers, used 1 barriers, 41120 bytes smem\n")
    assert parse_ptxas_report(text) == {"f": {"stack": 48, "spill_stores": 44, "spill_loads": 76, "registers": 64}}


def test_every_source_is_covered():
    covered = {source for source, _ in compile_variants()}
    assert set(loader.source_names()) <= covered
    assert {"per_row.cu", "large_context.cu"} <= covered


@pytest.mark.parametrize("pair", compile_variants(), ids=_variant_id)
def test_kernel_compiles_without_spills(pair, tmp_path):
    source, defines = pair
    path = tmp_path / source
    path.write_text(loader.expand_includes(source), encoding="utf-8")
    cmd = [NVCC, "-arch=sm_90", "-cubin", "-Xptxas", "-v", loader.CXX_STANDARD,
           *loader.define_options(defines), "-o", str(tmp_path / "out.cubin"), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed for {_variant_id(pair)}:\n{output}"
    report = parse_ptxas_report(output)
    assert report, f"no entry function in the ptxas report:\n{output}"
    spilling = {name: r for name, r in report.items() if r.get("spill_stores", 0) or r.get("spill_loads", 0)}
    assert not spilling, f"{_variant_id(pair)} spills registers (stack frame, stores, loads): {spilling}"
