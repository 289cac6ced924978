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
    """The indices kernels/filtered.cu samples in a row of length n (its sample_threshold)."""
    block = defines["FILTERED_BLOCK"]
    want = max(-(-defines["FILTERED_SAMPLE_HITS"] * n // k), defines["FILTERED_MIN_SAMPLE"])
    groups = min(-(-want // 32), defines["FILTERED_GROUPS_PER_WARP"] * (block // 32))
    spacing = (n - 32) // max(groups - 1, 1)
    starts = torch.arange(groups, dtype=torch.int64) * spacing
    return (starts.unsqueeze(1) + torch.arange(32)).flatten()


def trapped_rows(rows: int, width: int, k: int, trap: str, seed: int = 0) -> torch.Tensor:
    """Normal scores, except at the sampled positions: there distinct values far above every other
    score ('high': the sample aims too high, fewer than k elements reach its threshold) or far below
    ('low': nearly the whole row passes it and the buffer overflows)."""
    logits = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, seed=seed), "cuda").logits.clone()
    pos = sample_positions(width, k, Filtered.defines).to("cuda")
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
    pos = sample_positions(width, k, Filtered.defines).to("cuda")
    logits[:, pos[17]] = 1e-6
    logits[1, pos[-1]] = -1e-6
    lengths = torch.full((4,), width, dtype=torch.int32, device="cuda")
    out = run_checked(Filtered(), logits, None, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


@pytest.mark.parametrize("k", [4095, 4096, 4097, 8191])
@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY],
                         ids=lambda d: d.value)
def test_k_around_the_sampled_limit(k, dist):
    # 2k <= capacity (8192) takes the sampled path; past it the rescanning selection.
    w = make_workload(WorkloadSpec(rows=2, seq_len=70001, k=k, distribution=dist, length_mode=RAGGED, seed=3), "cuda")
    run_checked(Filtered(), w.logits, w.lengths_arg, k)


def test_one_persistent_launch_over_rows_of_every_kind():
    # More rows than CTAs, each CTA walking rows whose paths differ: normal (buffer), ReLU plateau
    # and constant (plateau ties from the row), lsb10 (buffer overflow), sample traps, rows shorter
    # than the sampled minimum and rows of length <= k.
    k, width = 2048, 40963
    sms = int(loader.device_properties(torch.cuda.current_device())["multiProcessorCount"])
    grid = sms * Filtered.defines["FILTERED_MIN_BLOCKS"]
    kinds = [make_workload(WorkloadSpec(rows=8, seq_len=width, k=k, distribution=d, seed=7), "cuda").logits
             for d in (Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.CONSTANT, Distribution.LSB10,
                       Distribution.SUBNORMAL_MIN, Distribution.SPECIALS)]
    kinds += [trapped_rows(8, width, k, "high"), trapped_rows(8, width, k, "low")]
    block = torch.cat(kinds)  # 64 rows
    repeats = -(-(2 * grid + 5) // block.shape[0])
    logits = block.repeat(repeats, 1)
    rows = logits.shape[0]
    assert rows > 2 * grid
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    lengths = torch.randint(int(0.8 * width), width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32)
    lengths[::7] = torch.randint(0, k + 1, (len(range(0, rows, 7)),), generator=gen, device="cuda", dtype=torch.int32)
    lengths[3::11] = 5000  # long enough for k, too short for the sample
    out = run_checked(Filtered(), logits, lengths, k)
    assert torch.equal(out.cpu(), promised_output(logits, lengths, k))


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
