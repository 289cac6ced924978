"""The ``radix`` implementation: exactness on adversarial data, odd shapes, graph replays, and
the launch plan that keeps the grid co-resident (the latter runs on the CPU)."""

from __future__ import annotations

import pytest
import torch

from topkbench.cuda.radix import MIN_KEYS_PER_CTA, RadixTopk, plan_launch
from topkbench.exactness import check_topk
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

POISON = 0x5EADBEEF
FIXED, RAGGED = LengthMode.FIXED, LengthMode.RAGGED


@pytest.fixture(scope="module")
def radix():
    return RadixTopk()


def _run_checked(impl, w, k, *, runs=1):
    runner = impl.prepare(w.logits, w.lengths_arg, k)
    for _ in range(runs):
        runner.output.fill_(POISON)
        runner.run()
        torch.cuda.synchronize()
        check = check_topk(w.logits, w.lengths, k, runner.result())
        assert check, f"{w.spec}: {check.reason} ({check.bad_rows} bad rows, {runner.plan})"
    return runner


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


# ---- exactness (GPU) -------------------------------------------------------------------------

ADVERSARIAL_SHAPES = [  # rows, seq_len, k, length mode
    (1, 131075, 2048, FIXED),
    (3, 65537, 256, RAGGED),
    (8, 4097, 7, RAGGED),
    (300, 2047, 1, FIXED),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", ADVERSARIAL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-k{s[2]}-{s[3].value}")
def test_adversarial(radix, dist, shape):
    rows, seq_len, k, mode = shape
    w = make_workload(WorkloadSpec(rows, seq_len, k, dist, mode, seed=3), "cuda")
    _run_checked(radix, w, k)


@pytest.mark.gpu
@pytest.mark.parametrize("width", [1, 2, 2047, 4097, 65537, 131075, 262147])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_odd_widths(radix, rows, width):
    for dist in (Distribution.NORMAL, Distribution.RELU_PLATEAU):
        w = make_workload(WorkloadSpec(rows, width, 2048, dist, RAGGED if rows > 1 else FIXED, seed=5), "cuda")
        _run_checked(radix, w, 2048)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 7, 256, 2048, 4097, 4098, 5000])
@pytest.mark.parametrize("mode", [FIXED, RAGGED], ids=lambda m: m.value)
def test_k_values(radix, k, mode):
    # width 4097: k = 4097 is "= length", 4098 and 5000 "> length" (and k above 2048).
    w = make_workload(WorkloadSpec(3, 4097, k, Distribution.TIE_HEAVY, mode, seed=7), "cuda")
    _run_checked(radix, w, k)


@pytest.mark.gpu
def test_k_equal_and_above_ragged_lengths(radix):
    # Ragged rows on both sides of k: some rows short (padded with -1), some selected.
    w = make_workload(WorkloadSpec(8, 2560, 2300, Distribution.NORMAL, RAGGED, seed=8), "cuda")
    assert bool((w.lengths <= 2300).any()) and bool((w.lengths > 2300).any())
    _run_checked(radix, w, 2300)


@pytest.mark.gpu
@pytest.mark.parametrize("dist", [Distribution.RELU_PLATEAU, Distribution.CONSTANT, Distribution.SPECIALS],
                         ids=lambda d: d.value)
def test_more_rows_than_the_grid_streams_long_chunks(radix, dist):
    # 300 rows of 65537: one CTA per row, groups loop over rows, and each chunk is longer than
    # shared memory holds, so its tail is streamed from global memory every round.
    w = make_workload(WorkloadSpec(300, 65537, 2048, dist, RAGGED, seed=9), "cuda")
    runner = _run_checked(radix, w, 2048)
    assert runner.plan.groups < 300 and runner.plan.smem_keys < 65537


@pytest.mark.gpu
@pytest.mark.parametrize("dist", [Distribution.TIE_HEAVY, Distribution.LSB10, Distribution.SPECIALS],
                         ids=lambda d: d.value)
def test_forced_streaming_with_ties_across_ctas(dist):
    impl = RadixTopk(smem_key_limit=1000)
    w = make_workload(WorkloadSpec(3, 65537, 2048, dist, RAGGED, seed=10), "cuda")
    runner = _run_checked(impl, w, 2048)
    assert runner.plan.ctas_per_row > 1 and runner.plan.smem_keys == 1000


@pytest.mark.gpu
@pytest.mark.parametrize("extra", [3, 64])
def test_row_stride_above_width(radix, extra):
    # extra = 3 leaves most rows misaligned for 16-byte loads (the scalar path).
    for rows, width in ((1, 65537), (8, 20000), (300, 3000)):
        w = make_workload(WorkloadSpec(rows, width, 2048, Distribution.SPECIALS, RAGGED, seed=11,
                                       row_stride=width + extra), "cuda")
        assert w.logits.stride(0) == width + extra
        _run_checked(radix, w, 2048)


@pytest.mark.gpu
def test_back_to_back_launches_without_reset(radix):
    # Different plans share the one workspace; nothing resets it between the launches.
    a = make_workload(WorkloadSpec(1, 131072, 2048, Distribution.RELU_PLATEAU, FIXED, seed=12), "cuda")
    b = make_workload(WorkloadSpec(8, 65537, 256, Distribution.TIE_HEAVY, RAGGED, seed=13), "cuda")
    c = make_workload(WorkloadSpec(300, 5000, 2048, Distribution.LSB10, RAGGED, seed=14), "cuda")
    runners = [(w, k, radix.prepare(w.logits, w.lengths_arg, k)) for w, k in ((a, 2048), (b, 256), (c, 2048))]
    for _ in range(2):
        for _, _, r in runners:
            r.output.fill_(POISON)
        for w, k, r in runners * 2:  # each twice in a row, no sync in between
            r.run()
        torch.cuda.synchronize()
        for w, k, r in runners:
            check = check_topk(w.logits, w.lengths, k, r.result())
            assert check, f"{w.spec}: {check.reason}"


@pytest.mark.gpu
def test_cuda_graph_replays_with_lengths_changed_in_place(radix):
    rows, width, k = 4, 131072, 2048
    w = make_workload(WorkloadSpec(rows, width, k, Distribution.RELU_PLATEAU, RAGGED, seed=15), "cuda")
    lengths = w.lengths.clone()
    runner = radix.prepare(w.logits, lengths, k)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        runner.run()  # warm up (compile, module load) outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(3):
            runner.run()
    gen = torch.Generator(device="cuda").manual_seed(16)
    for step in range(6):
        # Lengths from long rows down to rows shorter than k, written into the captured buffer.
        low = [2 * k, k // 2, 100000, 1][step % 4]
        lengths.copy_(torch.randint(low, width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32))
        if step == 5:
            lengths[0] = k  # exactly k: the short-row layout
        runner.output.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        # Garbage past the new lengths is whatever the workload left there (large values, NaN).
        check = check_topk(w.logits, lengths, k, runner.result())
        assert check, f"replay {step}, lengths {lengths.tolist()}: {check.reason}"


@pytest.mark.gpu
def test_digit_and_aggregation_variants_are_exact():
    # Interleaved with the default kernel: they share the workspace with another group layout.
    for defines in ({"RADIX_DIGIT_BITS": 8}, {}, {"RADIX_DIGIT_BITS": 12}, {"RADIX_WARP_AGG": 1}, {}):
        impl = RadixTopk(defines=defines)
        for dist in (Distribution.LSB10, Distribution.TIE_HEAVY, Distribution.SPECIALS):
            w = make_workload(WorkloadSpec(3, 65537, 2048, dist, RAGGED, seed=17), "cuda")
            _run_checked(impl, w, 2048, runs=2)


@pytest.mark.gpu
def test_no_spills_in_the_compiled_kernel(radix):
    w = make_workload(WorkloadSpec(1, 5000, 16, Distribution.NORMAL, FIXED), "cuda")
    runner = radix.prepare(w.logits, None, 16)
    assert runner._kernel.local_size_bytes == 0
    assert runner.plan.grid <= runner.plan.sm_count * runner.plan.blocks_per_sm
