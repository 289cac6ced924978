"""Every kernel source compiles for sm_90 with each define set topkbench uses, without spills and
without a single flush-to-zero instruction.

CPU-only (runs in CI): nvcc builds a cubin from the same include-expanded text that CuPy compiles,
and ptxas's -v report is checked for spill stores/loads, which would quietly cost bandwidth.

Flush-to-zero: CuPy appends ``-ftz=true`` to every kernel it compiles, after the options the loader
passes, so any float add, compare, min/max or conversion in a kernel reads subnormal scores as zero
(issue 11: ``value + 0.0f`` once made every subnormal tie with 0.0). The same source is therefore
compiled to PTX with ``-ftz=true`` as CuPy does, and the test fails on any ``.ftz`` instruction: a
future kernel that puts float arithmetic on the key path fails here, on the CPU. The loader's own
options must not ask for fast math either.

Skipped when nvcc is not on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from topkbench.cuda import loader
from topkbench.cuda.one_cta import Filtered
from topkbench.cuda.variants import compile_variants

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

_FUNCTION = re.compile(r"Compiling entry function '([^']+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
#: A PTX instruction with the flush-to-zero modifier (add.ftz.f32, setp.nan.ftz.f32, cvt.rn.ftz...).
_FTZ = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][a-z0-9]*(?:\.[a-z0-9]+)*\.ftz(?:\.[a-z0-9]+)*)\b", re.MULTILINE)
#: Options that turn on flush-to-zero or other non-IEEE float behaviour.
_FAST_MATH = ("-use_fast_math", "--use_fast_math", "-ftz=true", "--ftz=true", "-prec-div=false",
              "--prec-div=false", "-prec-sqrt=false", "--prec-sqrt=false", "-fmad=true")


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
            if (m := _SMEM.search(line)):
                report[current]["smem"] = int(m.group(1))
    return report


def ftz_instructions(ptx: str) -> list[str]:
    """The distinct flush-to-zero instructions in a PTX text."""
    return sorted(set(_FTZ.findall(ptx)))


def test_parse_ptxas_report_reads_spills():
    text = ("ptxas info    : Compiling entry function 'f' for 'sm_90'\n"
            "ptxas info    : Function properties for f\n"
            "    48 bytes stack frame, 44 bytes spill stores, 76 bytes spill loads\n"
            "ptxas info    : Used 64 registers, used 1 barriers, 41120 bytes smem\n")
    assert parse_ptxas_report(text) == {"f": {"stack": 48, "spill_stores": 44, "spill_loads": 76, "registers": 64,
                                              "smem": 41120}}


def test_ftz_instructions_are_found():
    ptx = ("\tadd.ftz.f32 \t%f3, %f1, 0f00000000;\n\tsetp.nan.ftz.f32 \t%p1, %f1, %f1;\n"
           "\t@%p2 min.ftz.f32 %f4, %f1, %f2;\n\tadd.s32 \t%r4, %r2, %r3;\n\tcvt.rn.f16.f32 %rs1, %f1;\n")
    assert ftz_instructions(ptx) == ["add.ftz.f32", "min.ftz.f32", "setp.nan.ftz.f32"]
    assert ftz_instructions("\tadd.s32 %r1, %r2, %r3;\n\t// .ftz in a comment\n") == []


def test_every_source_is_covered():
    covered = {source for source, _ in compile_variants()}
    assert set(loader.source_names()) <= covered
    assert {"per_row.cu", "large_context.cu", "radix.cu"} <= covered


def test_loader_options_ask_for_no_fast_math():
    options = (loader.CXX_STANDARD,)
    for _, defines in compile_variants():
        options += loader.define_options(defines)
    assert not [o for o in options if o in _FAST_MATH or "fast" in o.lower() or "ftz" in o.lower()]


def _compile(pair, tmp_path, *args: str) -> subprocess.CompletedProcess:
    source, defines = pair
    path = tmp_path / source
    path.write_text(loader.expand_includes(source), encoding="utf-8")
    cmd = [NVCC, "-arch=sm_90", *args, loader.CXX_STANDARD, *loader.define_options(defines), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


#: Spill bytes (stores and loads each, per thread, as ptxas counts them) a source may have, and why.
#: filtered.cu runs at 64 registers so that two 512-thread CTAs share an SM (one streams while the
#: other selects); ptxas then keeps a few words in local memory: one stored at the start of the
#: launch and reloaded once per row and per refinement pass, and some in the rescanning fallback.
#: The streaming loop has none (read from the SASS with nvdisasm when the kernel was tuned).
SPILL_BUDGET_BYTES = {"filtered.cu": 64}


@needs_nvcc
@pytest.mark.parametrize("pair", compile_variants(), ids=_variant_id)
def test_kernel_compiles_without_spills(pair, tmp_path):
    proc = _compile(pair, tmp_path, "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "out.cubin"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed for {_variant_id(pair)}:\n{output}"
    report = parse_ptxas_report(output)
    assert report, f"no entry function in the ptxas report:\n{output}"
    budget = SPILL_BUDGET_BYTES.get(pair[0], 0)
    spilling = {name: r for name, r in report.items()
                if r.get("spill_stores", 0) > budget or r.get("spill_loads", 0) > budget}
    assert not spilling, (f"{_variant_id(pair)} spills registers past {budget} bytes "
                          f"(stack frame, stores, loads): {spilling}")


@needs_nvcc
@pytest.mark.parametrize("pair", compile_variants(), ids=_variant_id)
def test_kernel_has_no_flush_to_zero_instruction(pair, tmp_path):
    ptx_path = tmp_path / "out.ptx"
    proc = _compile(pair, tmp_path, "-ptx", "-ftz=true", "-o", str(ptx_path))
    assert proc.returncode == 0, f"nvcc failed for {_variant_id(pair)}:\n{proc.stdout + proc.stderr}"
    found = ftz_instructions(ptx_path.read_text(encoding="utf-8"))
    assert not found, (f"{_variant_id(pair)} has flush-to-zero instructions under CuPy's -ftz=true: {found}; "
                       "build keys from the float's bits with integer operations (topk::float_key)")


@needs_nvcc
@pytest.mark.parametrize("build", sorted(Filtered.builds))
def test_filtered_ctas_fit_an_sm(build, tmp_path):
    # FILTERED_MIN_BLOCKS CTAs per SM (__launch_bounds__ and the grids assume it): static shared
    # memory (ptxas) plus the dynamic buffer and sample staging (one_cta.Filtered), and the 1 KB the
    # driver reserves per CTA, within an H100/H200 SM's 228 KB.
    defines = Filtered().build_defines(build)
    proc = _compile(("filtered.cu", defines), tmp_path, "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "out.cubin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    static = parse_ptxas_report(proc.stdout + proc.stderr)["filtered_topk"]["smem"]
    per_cta = static + Filtered.dynamic_shared_bytes(defines) + 1024
    assert defines["FILTERED_MIN_BLOCKS"] * per_cta <= 228 * 1024, per_cta
