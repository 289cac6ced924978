"""``filtered`` (kernels/filtered.cu) on the paths its sample chooses, on the GPU.

The contract suite (test_kernels_gpu.py) runs filtered over every adversarial distribution; this
file reaches the paths those inputs may not: rows whose sample lies (the threshold far too low, so
the buffer overflows; far too high, so fewer than k remain above it), k at the edge of the sampled
path, and one persistent launch whose CTAs walk rows of every kind in turn (a state left over from
one row would spoil the next). Every output is checked exact, with the lowest-index tie rule and
the ascending index order (``promised_output``).
"""

from __future__ import annotations

import pytest
import torch

from test_kernels_gpu import _capture, promised_output, run_checked
from topkbench.cuda import loader
from topkbench.cuda.one_cta import Filtered
from topkbench.trial import poison
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

pytestmark = pytest.mark.gpu

FIXED, RAGGED = LengthMode.FIXED, LengthMode.RAGGED


def sample_positions(n: int, k: int, defines: dict[str, int]) -> torch.Tensor:
    """The indices kernels/filtered.cu samples in a row of length n (its SamplePlan) in a build."""
    block = defines["FILTERED_BLOCK"]
    roomy = defines["FILTERED_CAPACITY"] >= 4 * k
    hits = defines["FILTERED_SAMPLE_HITS_ROOMY" if roomy else "FILTERED_SAMPLE_HITS"]
    want = max(-(-hits * n // k), defines["FILTERED_MIN_SAMPLE"])
    groups = min(-(-want // 32), defines["FILTERED_GROUPS_PER_WARP"] * (block // 32))
    spacing = (n - 32) // max(groups - 1, 1)
    starts = torch.arange(groups, dtype=torch.int64) * spacing
    return (starts.unsqueeze(1) + torch.arange(32)).flatten()


def launch_build(rows: int, width: int, k: int) -> dict[str, int]:
    """The defines of the build a default Filtered launch picks for this shape on this GPU."""
    impl = Filtered()
    sms = int(loader.device_properties(torch.cuda.current_device())["multiProcessorCount"])
    return impl.build_defines(impl.plan(rows, width, k, sms=sms).build)


def trapped_rows(rows: int, width: int, k: int, trap: str, seed: int = 0, build: str | None = None) -> torch.Tensor:
    """Normal scores, except at the sampled positions (of `build`, else of the build a launch of
    these rows picks): there distinct values far above every other score ('high': the sample aims
    too high, fewer than k elements reach its threshold) or far below ('low': nearly the whole row
    passes it and the buffer overflows)."""
    logits = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, seed=seed), "cuda").logits.clone()
    defines = Filtered().build_defines(build) if build else launch_build(rows, width, k)
    pos = sample_positions(width, k, defines).to("cuda")
    spread = torch.rand((rows, pos.numel()), device="cuda")
    logits[:, pos] = (100.0 + spread) if trap == "high" else (-100.0 - spread)
    return logits


@pytest.mark.parametrize("trap", ["high", "low"])
@pytest.mark.parametrize("width,k", [(131075, 2048), (65537, 4096), (20011, 1)])
def test_a_lying_sample_falls_back_exactly(trap, width, k):
    logits = trapped_rows(3, width, k, trap)
    lengths = torch.full((3,), width, dtype=torch.int32, device="cuda")
    out = run_checked(Filtered(), logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


def test_a_plateau_with_a_sampled_stray_value():
    # ReLU rows (the k-th value is 0.0) where a tiny positive (1e-6, in the zero's coarse bucket)
    # sits at a sampled position: the plateau is still the bucket's heavy value.
    k, width = 2048, 163840
    w = make_workload(WorkloadSpec(rows=4, seq_len=width, k=k, distribution=Distribution.RELU_PLATEAU, seed=9), "cuda")
    logits = w.logits.clone()
    pos = sample_positions(width, k, launch_build(4, width, k)).to("cuda")
    logits[:, pos[17]] = 1e-6
    logits[1, pos[-1]] = -1e-6
    lengths = torch.full((4,), width, dtype=torch.int32, device="cuda")
    out = run_checked(Filtered(), logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


#: Rows whose k-th value sits at an end of the key range or beside zero, so that the stream's one
#: float compare (kernels/filtered.cu, Threshold) runs with its special thresholds: below = -inf
#: (an -inf plateau), +inf (a +inf plateau: only NaN passes), NaN (a bucket of NaNs), -denorm_min
#: (a plateau of -denorm_min: both zeros pass), +0.0 and FLT_MAX. Each row: `fill` everywhere, then
#: `spots` values from `among` at random positions (a fixed seed).
_INF, _MAX, _DMIN = float("inf"), torch.finfo(torch.float32).max, 2.0 ** -149
END_ROWS = {
    "minus_inf_plateau": (-_INF, (0.5, -1.0, float("nan")), 1000),
    "plus_inf_plateau": (_INF, (float("nan"), 1.0), 1000),
    "mostly_nan": (float("nan"), (-_INF, 2.0, _INF, -0.0), 5000),
    "minus_denorm_min_plateau": (-_DMIN, (0.0, -0.0, _DMIN, -2 * _DMIN), 3000),
    "signed_zero_plateau": (-0.0, (0.0, _DMIN, -_DMIN, 1.0), 3000),
    "flt_max_plateau": (_MAX, (_INF, -_MAX, float("nan")), 1500),
    "lowest_finite_plateau": (-_MAX, (-_INF, 0.0, -0.0), 1500),
}


@pytest.mark.parametrize("name", sorted(END_ROWS))
@pytest.mark.parametrize("width,k", [(20011, 2048), (131075, 1024)])
def test_thresholds_at_the_ends_of_the_key_range(name, width, k):
    fill, among, spots = END_ROWS[name]
    rows = 3
    g = torch.Generator().manual_seed(11)
    logits = torch.full((rows, width), fill, dtype=torch.float32)
    for r in range(rows):
        pos = torch.randperm(width, generator=g)[:spots]
        logits[r, pos] = torch.tensor(among)[torch.randint(len(among), (spots,), generator=g)]
    logits = logits.cuda()
    lengths = torch.full((rows,), width, dtype=torch.int32, device="cuda")
    out = run_checked(Filtered(), logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("k", [4095, 4096, 4097, 8191])
@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY],
                         ids=lambda d: d.value)
def test_k_around_the_sampled_limit(k, dist):
    # 2k <= capacity (8192) takes the sampled path; past it the rescanning selection.
    w = make_workload(WorkloadSpec(rows=2, seq_len=70001, k=k, distribution=dist, length_mode=RAGGED, seed=3), "cuda")
    run_checked(Filtered(), w.logits, w.lengths_arg, k)


@pytest.mark.parametrize("prefetch", [1, 0])
@pytest.mark.parametrize("width,build", [(40963, "wide"), (32749, "short")])
def test_one_persistent_launch_over_rows_of_every_kind(prefetch, width, build):
    # More rows than CTAs, each CTA walking rows whose paths differ: normal (buffer), ReLU plateau
    # and constant (plateau ties from the row), lsb10 (buffer overflow), sample traps, rows shorter
    # than the sampled minimum and rows of length <= k. With the prefetch, a CTA's next sampled row's
    # sample is staged while it works on the current one (short rows in between are skipped).
    k = 2048
    impl = Filtered(defines={"FILTERED_PREFETCH": prefetch})
    sms = int(loader.device_properties(torch.cuda.current_device())["multiProcessorCount"])
    kinds = [make_workload(WorkloadSpec(rows=8, seq_len=width, k=k, distribution=d, seed=7), "cuda").logits
             for d in (Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.CONSTANT, Distribution.LSB10,
                       Distribution.SUBNORMAL_MIN, Distribution.SPECIALS)]
    kinds += [trapped_rows(8, width, k, "high", build=build), trapped_rows(8, width, k, "low", build=build)]
    block = torch.cat(kinds)  # 64 rows
    grid = 4 * sms  # the largest persistent grid (the short build's)
    logits = block.repeat(-(-(2 * grid + 5) // block.shape[0]), 1)
    rows = logits.shape[0]
    plan = impl.plan(rows, width, k, sms=sms)
    assert plan.build == build and rows > 2 * plan.grid, plan
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    lengths = torch.randint(int(0.8 * width), width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32)
    lengths[::7] = torch.randint(0, k + 1, (len(range(0, rows, 7)),), generator=gen, device="cuda", dtype=torch.int32)
    lengths[3::11] = 5000  # long enough for k, too short for the sample
    out = run_checked(impl, logits, lengths, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("rank_max", [None, 0], ids=["rank", "refine"])
@pytest.mark.parametrize("step", [1 / 2000, 1 / 200, 1 / 20, 0.0])
@pytest.mark.parametrize("rows,width", [(3, 131075), (300, 40961)])
def test_ties_in_the_k_th_bucket(step, rows, width, rank_max):
    # Normal scores on a grid of `step` (0: unrounded): near the k-th value a few (1/2000), some
    # tens (1/200) or a few hundred (1/20) elements share each value. The bucket of the k-th in the
    # buffer's first digit (of the keys' offsets) then holds several values with ties (finished by
    # ranking its elements), one value with ties, or more elements than the ranking takes (a prefix
    # digit again, then the radix and index refinements). FILTERED_RANK_MAX=0 takes that last path
    # at every step.
    k = 2048
    logits = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, seed=8), "cuda").logits.clone()
    if step:
        logits = torch.round(logits / step) * step
    lengths = torch.full((rows,), width, dtype=torch.int32, device="cuda")
    impl = Filtered() if rank_max is None else Filtered(defines={"FILTERED_RANK_MAX": rank_max})
    out = run_checked(impl, logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("dense_batch_hits", [0, 1 << 20], ids=["predicated", "loop"])
@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY,
                                  Distribution.LSB10, Distribution.SPECIALS, Distribution.SUBNORMAL_MIN],
                         ids=lambda d: d.value)
@pytest.mark.parametrize("rows,width", [(3, 131075), (300, 40961)])
def test_both_ways_of_storing_a_stream_batch(dist, rows, width, dense_batch_hits):
    # A warp stores its batch's hits with a predicated store a bit where it has more than
    # FILTERED_DENSE_BATCH_HITS of them, else with a loop over the hits: each way alone, at every
    # kind of row (lsb10 overflows the buffer), split rows (3) and the persistent grid (300).
    k = 2048
    impl = Filtered(defines={"FILTERED_DENSE_BATCH_HITS": dense_batch_hits})
    w = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=RAGGED, seed=9), "cuda")
    out = run_checked(impl, w.logits, w.lengths_arg, k)
    assert torch.equal(out.cpu(), promised_output(w.logits, w.lengths, k))


@pytest.mark.parametrize("room", [50, 200], ids=["ranked-apart", "ranked-past-the-buffer"])
def test_a_nearly_full_buffer_ranks_the_k_th_bucket_exactly(room):
    # On rows of at most 64K the k-th's bucket is listed in the buffer's free slots past its end and
    # marked in the same pass where 128 (kRankMax) slots are free; else it is ranked apart
    # (rank_bucket) and marked by a later pass. The sample here: distinct values in [1, 1.003),
    # one coarse bucket, so the threshold is their least, 1.0; exactly capacity - room scores
    # (the sample and scores in [2, 3)) reach it, the rest lie in (-2, -1].
    k, width, rows = 2048, 40961, 2
    impl = Filtered(build="wide")
    defines = impl.build_defines("wide")
    capacity = defines["FILTERED_CAPACITY"]
    pos = sample_positions(width, k, defines).to("cuda")
    gen = torch.Generator(device="cuda")
    gen.manual_seed(12)
    logits = -1.0 - torch.rand((rows, width), generator=gen, device="cuda")
    logits[:, pos] = 1.0 + torch.arange(pos.numel(), device="cuda", dtype=torch.float32) * 1e-6
    free = torch.ones(width, dtype=torch.bool, device="cuda")
    free[pos] = False
    free_idx = free.nonzero().flatten()
    above = capacity - room - pos.numel()
    for r in range(rows):
        pick = free_idx[torch.randperm(free_idx.numel(), generator=gen, device="cuda")[:above]]
        logits[r, pick] = 2.0 + torch.rand(above, generator=gen, device="cuda")
    assert (logits >= 1.0).sum(dim=1).tolist() == [capacity - room] * rows
    lengths = torch.full((rows,), width, dtype=torch.int32, device="cuda")
    out = run_checked(impl, logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("rows,width,k,build", [(2, 40961, 2048, "wide"), (2, 40961, 2048, "short"),
                                                (2, 131075, 4096, "wide"), (2, 131075, 2048, None)])
def test_a_sampled_plateau_with_too_few_ties_falls_back_exactly(rows, width, k, build):
    # Zeros at the first 4 scores of every sampled group (an eighth of the sample, its heavy value:
    # a plateau, t just above zero), below them scores in (-2, -1], and 100 scores above: the row
    # has fewer zeros than the k - 100 the selection needs from the plateau. The stream does not
    # count a plateau's ties: the selection's count of the row's ties from its start runs out, and
    # the rescanning selection takes the row. build None: a few long rows, split over CTAs.
    impl = Filtered(build=build) if build else Filtered()
    defines = impl.build_defines(build) if build else launch_build(rows, width, k)
    zeros = sample_positions(width, k, defines).view(-1, 32)[:, :4].flatten()
    gen = torch.Generator().manual_seed(21)
    logits = -1.0 - torch.rand((rows, width), generator=gen)
    logits[:, zeros] = 0.0
    for r in range(rows):
        logits[r, torch.randperm(width, generator=gen)[:100]] = 1.0 + torch.rand(100, generator=gen)
    above, ties = (logits > 0).sum(dim=1), (logits == 0).sum(dim=1)
    assert (ties < k - above).all()
    logits = logits.cuda()
    lengths = torch.full((rows,), width, dtype=torch.int32, device="cuda")
    out = run_checked(impl, logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("capacity,width", [(8192, 300007), (4096, 140001)])
@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY],
                         ids=lambda d: d.value)
def test_rows_longer_than_one_output_window(capacity, width, dist):
    # The output's bitmap covers 32 x capacity indices a window: longer rows take several windows
    # (and a plateau's ties from the row are placed across them).
    k = 2048
    impl = Filtered(defines={"FILTERED_CAPACITY": capacity})
    w = make_workload(WorkloadSpec(rows=3, seq_len=width, k=k, distribution=dist, length_mode=RAGGED, seed=5), "cuda")
    out = run_checked(impl, w.logits, w.lengths_arg, k)
    assert torch.equal(out.cpu(), promised_output(w.logits, w.lengths, k))


def test_graph_replays_with_new_lengths_and_scores():
    k, width, rows = 2048, 65539, 600
    w = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=Distribution.NORMAL,
                                   length_mode=RAGGED, seed=4), "cuda")
    logits, lengths = w.logits, w.lengths.clone()
    runner = Filtered().prepare(logits, lengths, k)
    graph = _capture(runner)
    gen = torch.Generator(device="cuda")
    for step, dist in enumerate((Distribution.RELU_PLATEAU, Distribution.NORMAL, Distribution.TIE_HEAVY)):
        gen.manual_seed(step)
        fresh = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=RAGGED,
                                           seed=20 + step), "cuda")
        logits.copy_(fresh.logits)
        lengths.copy_(torch.randint(0, width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32))
        poison(runner.output)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(runner.result().cpu(), promised_output(logits, lengths, k)), dist


@pytest.mark.parametrize("rows,width", [(1, 131075), (5, 98311), (40, 65539)])
def test_rows_split_over_ctas_replay_with_new_lengths_and_scores(rows, width):
    # Fewer rows than CTA slots: each row is split over several CTAs, whose candidates meet in a
    # per-row workspace; the last part selects and resets the row's counters. Replays with new
    # scores of every path (buffer, plateau ties, overflow, a lying sample) and new lengths
    # (rows <= k and rows too short for the sample, which one part handles alone).
    k = 2048
    w = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, seed=6), "cuda")
    logits, lengths = w.logits.clone(), torch.full((rows,), width, dtype=torch.int32, device="cuda")
    runner = Filtered().prepare(logits, lengths, k)
    assert runner.plan.parts > 1, runner.plan
    graph = _capture(runner)
    gen = torch.Generator(device="cuda")
    for step, dist in enumerate((Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.LSB10,
                                 Distribution.TIE_HEAVY, Distribution.SPECIALS, "high", "low")):
        gen.manual_seed(step)
        if isinstance(dist, str):
            logits.copy_(trapped_rows(rows, width, k, dist, seed=step))
            lengths.fill_(width)
        else:
            logits.copy_(make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist,
                                                    seed=30 + step), "cuda").logits)
            lengths.copy_(torch.randint(0, width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32))
            lengths[0] = width
            if rows > 2:
                lengths[1] = 5000
        poison(runner.output)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(runner.result().cpu(), promised_output(logits, lengths, k)), dist
