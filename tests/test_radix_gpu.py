"""The ``radix`` implementation: its launch plan and workspace layout (CPU), and what only radix has
on the GPU: CTAs per row (forced counts must not change a deterministic answer), keys streamed
past shared memory, groups looping over rows, one workspace shared by back-to-back launches of
different plans and variants. The contract every kernel keeps is tests/test_kernels_gpu.py."""

from __future__ import annotations

import re

import pytest
import torch

from test_kernels_gpu import _capture, promised_output, run_checked, tie_heavy
from topkbench.cuda import loader
from topkbench.cuda.radix import CTRL_WORDS, MAX_CTAS_PER_ROW, MIN_KEYS_PER_CTA, RadixTopk, group_words, plan_launch
from topkbench.trial import poison
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

FIXED, RAGGED = LengthMode.FIXED, LengthMode.RAGGED
BOTH = ({}, {"RADIX_DETERMINISTIC": 0})  # radix and radix-nondet


@pytest.fixture(scope="module")
def radix():
    return RadixTopk()


# ---- launch plan (CPU) -----------------------------------------------------------------------

def test_plan_never_exceeds_co_resident_grid():
    for rows in (1, 3, 8, 100, 131, 132, 300, 5000):
        for width in (1, 2047, 65536, 131072, 262147):
            for blocks in (1, 2, 4):
                plan = plan_launch(rows, width, sm_count=132, max_smem_keys=56000, occupancy=lambda _b, n=blocks: n)
                assert plan.grid <= 132 * blocks
                assert 1 <= plan.groups <= rows
                assert plan.smem_keys % 4 == 0 and plan.smem_keys <= 56000


def test_plan_spreads_long_rows_over_ctas():
    plan = plan_launch(1, 131072, sm_count=132, max_smem_keys=56000, occupancy=lambda _b: 1)
    assert plan.ctas_per_row == 131072 // MIN_KEYS_PER_CTA and plan.smem_keys == MIN_KEYS_PER_CTA
    plan = plan_launch(8, 131072, sm_count=132, max_smem_keys=56000, occupancy=lambda _b: 1)
    assert plan.ctas_per_row == 16 and plan.grid == 128 and plan.smem_keys == 8192
    plan = plan_launch(300, 65537, sm_count=132, max_smem_keys=56000, occupancy=lambda _b: 1)
    assert plan.ctas_per_row == 1 and plan.groups == 132 and plan.smem_keys == 56000  # streams the rest


def test_plan_refuses_a_cta_that_cannot_run():
    from topkbench.errors import DeviceError
    with pytest.raises(DeviceError):
        plan_launch(1, 131072, sm_count=132, max_smem_keys=56000, occupancy=lambda _b: 0)


def test_radix_is_registered_and_hashes_its_source():
    from topkbench.impls import registry
    impl = registry.get("radix")
    assert isinstance(impl, RadixTopk) and impl.max_k is None
    assert impl.kernel_hash() != RadixTopk(defines={"RADIX_DIGIT_BITS": 8}).kernel_hash()


def test_workspace_layout_matches_the_kernel_source():
    source = loader.expand_includes("radix.cu")
    assert int(re.search(r"constexpr int kCtrlWords = (\d+);", source).group(1)) == CTRL_WORDS
    assert int(re.search(r"#define RADIX_MAX_CTAS (\d+)", source).group(1)) == MAX_CTAS_PER_ROW
    assert "constexpr int kExchangeWords = 4 * kMaxCtas;" in source
    assert "constexpr int kGroupWords = kCtrlWords + 3 * kBins + kExchangeWords;" in source
    assert group_words(11) == CTRL_WORDS + 3 * 2048 + 4 * MAX_CTAS_PER_ROW


def test_plan_caps_ctas_per_row_at_the_exchange_size():
    plan = plan_launch(1, 10**7, sm_count=1000, max_smem_keys=56000, occupancy=lambda _b: 1)
    assert plan.ctas_per_row == MAX_CTAS_PER_ROW


def test_nondet_variant_is_registered_apart():
    from topkbench.impls import registry
    det, nondet = registry.get("radix"), registry.get("radix-nondet")
    assert det.deterministic and not nondet.deterministic
    assert det.kernel_hash() != nondet.kernel_hash()
    assert not RadixTopk(defines={"RADIX_DETERMINISTIC": 0}).deterministic


# ---- GPU -------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("min_keys", [512, 2048, 16384, 10**9], ids=lambda m: f"min_keys{m}")
@pytest.mark.parametrize("smem_limit", [None, 1000], ids=["smem", "streamed"])
def test_forced_cta_counts_give_the_same_deterministic_output(min_keys, smem_limit):
    # 4 x 65536 and 3 x 70001: from 1 CTA per row to 33 (the grid's share per row), ties spanning
    # CTAs, with and without keys streamed past shared memory; every plan returns the promised output.
    impl = RadixTopk(min_keys_per_cta=min_keys, smem_key_limit=smem_limit)
    for rows, width, k, mode, stride in ((4, 65536, 2048, FIXED, None), (3, 70001, 1999, RAGGED, 70003)):
        logits, lengths_arg, lengths = tie_heavy(rows, width, k, mode, stride=stride, seed=7)
        expected = promised_output(logits, lengths, k).cuda()
        runner = impl.prepare(logits, lengths_arg, k)
        graph = _capture(runner)
        for replay in range(3):
            poison(runner.output)
            graph.replay()
            assert torch.equal(runner.result(), expected), f"{runner.plan}, replay {replay}"
        if min_keys == 10**9:
            assert runner.plan.ctas_per_row == 1
        if min_keys == 512:
            assert runner.plan.ctas_per_row > 16


@pytest.mark.gpu
@pytest.mark.parametrize("defines", BOTH, ids=["det", "nondet"])
@pytest.mark.parametrize("dist", [Distribution.RELU_PLATEAU, Distribution.CONSTANT, Distribution.SUBNORMAL_ZEROS],
                         ids=lambda d: d.value)
def test_more_rows_than_the_grid_streams_long_chunks(defines, dist):
    # 300 rows of 65537: one CTA per row, groups loop over rows, and each chunk is longer than
    # shared memory holds, so its tail is streamed from global memory every round.
    impl = RadixTopk(defines=defines)
    w = make_workload(WorkloadSpec(300, 65537, 2048, dist, RAGGED, seed=9), "cuda")
    runner = impl.prepare(w.logits, w.lengths_arg, 2048)
    run_checked(impl, w.logits, w.lengths_arg, 2048, runner=runner)
    assert runner.plan.groups < 300 and runner.plan.smem_keys < 65537


@pytest.mark.gpu
@pytest.mark.parametrize("defines", BOTH, ids=["det", "nondet"])
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
def test_forced_streaming_with_ties_across_ctas(defines, dist):
    impl = RadixTopk(smem_key_limit=1000, defines=defines)
    w = make_workload(WorkloadSpec(3, 65537, 2048, dist, RAGGED, seed=10, row_stride=65540), "cuda")
    runner = impl.prepare(w.logits, w.lengths_arg, 2048)
    run_checked(impl, w.logits, w.lengths_arg, 2048, runner=runner)
    assert runner.plan.ctas_per_row > 1 and runner.plan.smem_keys == 1000


@pytest.mark.gpu
def test_back_to_back_launches_without_reset():
    # Different plans and both variants share the one workspace; nothing resets it in between.
    a = make_workload(WorkloadSpec(1, 131072, 2048, Distribution.RELU_PLATEAU, FIXED, seed=12), "cuda")
    b = make_workload(WorkloadSpec(8, 65537, 256, Distribution.TIE_HEAVY, RAGGED, seed=13), "cuda")
    c = make_workload(WorkloadSpec(300, 5000, 2048, Distribution.SUBNORMAL_MIN, RAGGED, seed=14), "cuda")
    runners = []
    for defines in BOTH:
        impl = RadixTopk(defines=defines)
        runners += [(impl, w, k, impl.prepare(w.logits, w.lengths_arg, k)) for w, k in ((a, 2048), (b, 256), (c, 2048))]
    for _ in range(2):
        for _, _, _, r in runners:
            poison(r.output)
        for _, _, _, r in runners * 2:  # each twice in a row, no sync in between
            r.run()
        torch.cuda.synchronize()
        for impl, w, k, r in runners:
            run_checked(impl, w.logits, w.lengths_arg, k, runner=r)


@pytest.mark.gpu
@pytest.mark.parametrize("defines", BOTH, ids=["det", "nondet"])
def test_cuda_graph_of_three_launches_with_lengths_changed_in_place(defines):
    impl = RadixTopk(defines=defines)
    rows, width, k = 4, 131072, 2048
    w = make_workload(WorkloadSpec(rows, width, k, Distribution.RELU_PLATEAU, RAGGED, seed=15), "cuda")
    lengths = w.lengths.clone()
    runner = impl.prepare(w.logits, lengths, k)
    graph = _capture(runner, launches=3)
    gen = torch.Generator(device="cuda").manual_seed(16)
    for step in range(6):
        # Lengths from long rows down to rows shorter than k, written into the captured buffer.
        low = [2 * k, k // 2, 100000, 1][step % 4]
        lengths.copy_(torch.randint(low, width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32))
        if step == 5:
            lengths[0] = k  # exactly k: the short-row layout
        poison(runner.output)
        graph.replay()
        torch.cuda.synchronize()
        # Garbage past the new lengths is whatever the workload left there (large values, NaN).
        from topkbench.exactness import TopkChecker
        check = TopkChecker(w.logits, lengths, k).check(runner.result(), deterministic=impl.deterministic)
        assert check, f"replay {step}, lengths {lengths.tolist()}: {check.reason}"


@pytest.mark.gpu
def test_digit_and_aggregation_variants_are_exact():
    # Interleaved with the default kernel: they share the workspace with another group layout.
    for defines in ({"RADIX_DIGIT_BITS": 8}, {}, {"RADIX_DIGIT_BITS": 12}, {"RADIX_WARP_AGG": 1}, {},
                    {"RADIX_DIGIT_BITS": 8, "RADIX_DETERMINISTIC": 0}):
        impl = RadixTopk(defines=defines)
        for dist in (Distribution.LSB10, Distribution.TIE_HEAVY, Distribution.SUBNORMAL_MIXED):
            w = make_workload(WorkloadSpec(3, 65537, 2048, dist, RAGGED, seed=17), "cuda")
            runner = impl.prepare(w.logits, w.lengths_arg, 2048)
            first = run_checked(impl, w.logits, w.lengths_arg, 2048, runner=runner)
            second = run_checked(impl, w.logits, w.lengths_arg, 2048, runner=runner)
            if impl.deterministic:
                assert torch.equal(first, second)
                assert torch.equal(first.cpu(), promised_output(w.logits, w.lengths, 2048))


@pytest.mark.gpu
def test_no_spills_in_the_compiled_kernels():
    w = make_workload(WorkloadSpec(1, 5000, 16, Distribution.NORMAL, FIXED), "cuda")
    for defines in BOTH:
        runner = RadixTopk(defines=defines).prepare(w.logits, None, 16)
        assert runner.kernel.local_size_bytes == 0
        assert runner.plan.grid <= runner.plan.sm_count * runner.plan.blocks_per_sm
