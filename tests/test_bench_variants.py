"""scripts/bench_variants.py's argument parsing, and LargeContext's compile-time variants (CPU only)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from topkbench.cuda import loader
from topkbench.cuda.one_cta import LargeContext

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_variants.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_parse_variant(bench):
    v = bench.parse_variant("b512=large_context:LC_BLOCK=512,LC_MIN_BLOCKS=2")
    assert (v.name, v.impl_name, v.defines) == ("b512", "large_context", {"LC_BLOCK": 512, "LC_MIN_BLOCKS": 2})
    v = bench.parse_variant("torch")
    assert (v.name, v.impl_name, v.defines) == ("torch", "torch", {})
    v = bench.parse_variant("base=large_context")
    assert (v.name, v.impl_name, v.defines) == ("base", "large_context", {})
    for bad in ("x=large_context:LC_HIST", "x=large_context:LC_HIST=two", "=large_context"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_variant(bad)


def test_parse_shape(bench):
    assert bench.parse_shape("256x131072") == (256, 131072)
    for bad in ("256", "0x5", "ax4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_shape(bad)


def test_build_variant_from_the_class(bench):
    impl = bench.build(bench.parse_variant("h2=large_context:LC_HIST=2"))
    assert impl.source == LargeContext.VARIANT_SOURCE and impl.defines["LC_HIST"] == 2


def test_default_large_context_is_the_untouched_source():
    impl = LargeContext()
    assert impl.source == "large_context.cu"
    assert impl.kernel_hash() == loader.kernel_hash("large_context.cu", LargeContext.defines)
    assert LargeContext(defines={}).kernel_hash() == impl.kernel_hash()


def test_large_context_variants():
    v = LargeContext(defines={"LC_BLOCK": 512, "LC_MIN_BLOCKS": 2, "LC_HIST": 2})
    assert v.source == LargeContext.VARIANT_SOURCE and v.block == 512
    assert v.defines == {**LargeContext.defines, **LargeContext.VARIANT_DEFAULTS,
                         "LC_BLOCK": 512, "LC_MIN_BLOCKS": 2, "LC_HIST": 2}
    assert v.kernel_hash() != LargeContext().kernel_hash()
    with pytest.raises(ValueError, match="LC_HSIT"):
        LargeContext(defines={"LC_HSIT": 1})
    pairs = LargeContext.compile_variants()
    assert pairs[0] == ("large_context.cu", dict(LargeContext.defines))
    assert len(pairs) == 2 + len(LargeContext.VARIANTS)
    assert all(source == LargeContext.VARIANT_SOURCE for source, _ in pairs[1:])
