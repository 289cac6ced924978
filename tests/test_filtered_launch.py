"""How ``filtered`` (topkbench/cuda/one_cta.py) picks its build and sizes its launch: no GPU needed."""

from __future__ import annotations

import pytest

from topkbench.cuda import loader
from topkbench.cuda.one_cta import Filtered


@pytest.mark.parametrize("rows,width,k,expected", [
    (1024, 32768, 2048, ("short", 1, 528)),   # every 256-thread slot (132 SMs x 4) gets a short row
    (1024, 32768, 4096, ("wide", 1, 264)),    # 2k past the short build's 4096 slots
    (1024, 65536, 2048, ("wide", 1, 264)),    # longer than the short build's rows
    (512, 32768, 2048, ("short", 1, 512)),    # more rows than the wide build's 264 slots
    (265, 8192, 2048, ("short", 1, 265)),
    (264, 8192, 2048, ("wide", 1, 264)),      # one row a wide CTA
    (256, 131072, 2048, ("wide", 1, 256)),
    (132, 131072, 2048, ("wide", 2, 264)),    # one 1024-thread CTA a row: two 512-thread parts instead
    (128, 98304, 2048, ("wide", 1, 128)),     # the wide build splits from 131072 only
    (64, 32768, 2048, ("wide", 1, 64)),       # the split build from 49152 only
    (32, 49152, 2048, ("split", 3, 96)),
    (64, 131072, 2048, ("split", 2, 128)),
    (32, 131072, 2048, ("split", 4, 128)),
    (8, 131072, 2048, ("split", 8, 64)),      # FILTERED_MAX_PARTS
    (1, 131072, 2048, ("split", 8, 8)),
    (8, 65000, 2048, ("split", 3, 24)),       # a fourth part would be shorter than 16384
    (16, 16384, 2048, ("wide", 1, 16)),       # too short to split
])
def test_plan_picks_the_build_and_grid(rows, width, k, expected):
    plan = Filtered().plan(rows, width, k, sms=132)
    assert (plan.build, plan.parts, plan.grid) == expected


def test_custom_defines_apply_to_every_build():
    f = Filtered(defines={"FILTERED_PREFETCH": 0})
    for build, overrides in Filtered.builds.items():
        d = f.build_defines(build)
        assert d["FILTERED_PREFETCH"] == 0 and all(d[k] == v for k, v in overrides.items()), build
    assert f.kernel_hash() != Filtered().kernel_hash()


def test_kernel_hash_covers_every_build():
    hashes = {loader.kernel_hash("filtered.cu", Filtered().build_defines(b)) for b in Filtered.builds}
    assert len(hashes) == len(Filtered.builds)
    assert Filtered().kernel_hash() not in hashes


def test_dynamic_shared_memory_of_each_build():
    size = {b: Filtered.dynamic_shared_bytes(Filtered().build_defines(b)) for b in Filtered.builds}
    # the buffer (a key and an index a slot), then the sample's staging (8 groups of 32 a warp)
    assert size == {"wide": 8 * 8192 + 4 * 32 * 8 * 16, "split": 8 * 8192 + 4 * 32 * 8 * 32,
                    "short": 8 * 4096 + 4 * 32 * 8 * 8}


@pytest.mark.parametrize("build,rows,expected", [
    ("wide", 1024, ("wide", 1, 264)),
    ("short", 16, ("short", 1, 16)),
    ("split", 300, ("split", 1, 132)),   # too many rows to split: the build's persistent grid
    ("split", 8, ("split", 4, 32)),     # parts of at least 16384
    ("wide", 8, ("wide", 1, 8)),         # the wide build splits from 131072 only
])
def test_a_forced_build(build, rows, expected):
    plan = Filtered(build=build).plan(rows, 65536, 2048, sms=132)
    assert (plan.build, plan.parts, plan.grid) == expected


def test_an_unknown_build_is_refused():
    with pytest.raises(ValueError, match="narrow"):
        Filtered(build="narrow")
