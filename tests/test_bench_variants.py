"""scripts/bench_variants.py's argument parsing, and LargeContext's compile-time variants (CPU only)."""

from __future__ import annotations

import argparse
import sys

import pytest

from script_module import load_script
from topkbench.cuda import loader
from topkbench.cuda.one_cta import LargeContext


@pytest.fixture(scope="module")
def bench():
    try:
        yield load_script("bench_variants")
    finally:
        sys.modules.pop("bench_variants", None)


def test_parse_variant(bench):
    v = bench.parse_variant("b512=large_context:LC_BLOCK=512,LC_CAPACITY=2048")
    assert (v.name, v.impl_name, v.defines) == ("b512", "large_context", {"LC_BLOCK": 512, "LC_CAPACITY": 2048})
    v = bench.parse_variant("torch")
    assert (v.name, v.impl_name, v.defines) == ("torch", "torch", {})
    v = bench.parse_variant("base=large_context")
    assert (v.name, v.impl_name, v.defines) == ("base", "large_context", {})
    for bad in ("x=large_context:LC_UNROLL", "x=large_context:LC_UNROLL=two", "=large_context"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_variant(bad)


def test_lower_case_keys_are_constructor_options(bench):
    v = bench.parse_variant("w=filtered:build=wide,FILTERED_PREFETCH=0")
    assert (v.defines, v.options) == ({"FILTERED_PREFETCH": 0}, {"build": "wide"})
    impl = bench.build(v)
    assert impl.forced_build == "wide" and impl.defines["FILTERED_PREFETCH"] == 0
    with pytest.raises(SystemExit, match="build"):
        bench.build(bench.parse_variant("x=large_context:build=wide"))


def test_source_option_times_another_kernel_file(bench):
    """source=FILE.cu builds the class's kernel from that file (a saved copy of the kernel before an
    edit): the kernel hash is the file's, the defines and build are the class's as usual."""
    v = bench.parse_variant("base=filtered:source=per_row.cu,build=short")
    impl = bench.build(v)
    assert impl.source == "per_row.cu" and impl.forced_build == "short"
    assert impl.kernel_hash() != bench.build(bench.parse_variant("new=filtered:build=short")).kernel_hash()
    with pytest.raises(SystemExit, match="no kernel source"):
        bench.build(bench.parse_variant("t=torch:source=filtered.cu"))


def test_parse_shape(bench):
    assert bench.parse_shape("256x131072") == (256, 131072)
    for bad in ("256", "0x5", "ax4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_shape(bad)


def test_build_variant_from_the_class(bench):
    impl = bench.build(bench.parse_variant("u2=large_context:LC_UNROLL=2"))
    assert impl.source == "large_context.cu" and impl.defines["LC_UNROLL"] == 2
    assert impl.kernel_hash() != LargeContext().kernel_hash()


def test_default_large_context_is_the_registered_kernel():
    impl = LargeContext()
    assert impl.source == "large_context.cu"
    assert impl.kernel_hash() == loader.kernel_hash("large_context.cu", LargeContext.defines)


def test_unknown_large_context_defines_are_refused():
    with pytest.raises(ValueError, match="LC_HSIT"):
        LargeContext(defines={"LC_HSIT": 1})


def test_filtered_phases_reads_the_trace_lines():
    # scripts/filtered_phases.py: the summary of a FILTERED_TRACE=1 build's per-row lines (the
    # format printed by kernels/filtered.cu).
    phases = load_script("filtered_phases")
    text = ("noise\n"
            "filtered row 0 cta 0 n 65536 c 3012 m 0 fallback 0 cycles sample 1980 stream 19800 select 3960\n"
            "filtered row 264 cta 0 n 65536 c 65536 m 0 fallback 1 cycles sample 1980 stream 19800 select 198000\n"
            "filtered row 1 cta 1 n 65536 c -1 m -1 fallback 1 cycles sample 0 stream 0 select 3960\n")
    rows = phases.parse(text)
    assert [(r.row, r.cta, r.buffered, r.fallback) for r in rows] == [(0, 0, 3012, False), (264, 0, 65536, True),
                                                                     (1, 1, -1, True)]
    lines = phases.summary(rows, ghz=1.98)
    assert lines[0].startswith("rows 3, fallback 2; mean us: sample 0.7 stream 6.7 select 34.7")
    assert "slow row 264 (cta 0)" in lines[1]
    assert lines[-1].startswith("  busiest cta 0: 124.0 us")
    assert phases.summary([], ghz=1.98) == ["no trace lines"]
    # The current format adds the sample's loads, the refinements and each row's global-timer span.
    longer = phases.parse("filtered row 2 cta 2 n 65536 c 3012 m 0 fallback 0 cycles sample 1980 stream 19800 "
                          "select 3960 load 990 refine 1980 ns 5000 17000\n")
    assert (longer[0].load, longer[0].refine, longer[0].start_ns, longer[0].end_ns) == (990, 1980, 5000, 17000)
    assert "sample loads 0.5, select refinements 1.0, output 1.0; first row start to last row end 12.0 us" in \
        phases.summary(longer, ghz=1.98)[1]

