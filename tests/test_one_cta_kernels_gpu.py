"""Exactness of the one-CTA-per-row kernels (per_row, large_context) on the GPU.

Every adversarial distribution at shapes that reach each kernel path (large_context: candidates in
shared memory, and the rescanning fallback when plateaus overflow the buffer), widths that are
not multiples of 4 or of the block size, row strides that misalign the rows, fixed and ragged
lengths, k from 1 to beyond the length, and CUDA-graph replays with the lengths changed in place.
Outputs are poisoned before each run, so a slot the kernel forgets to write is caught.
"""

from __future__ import annotations

import pytest
import torch

from topkbench.exactness import check_topk
from topkbench.impls import registry
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

pytestmark = pytest.mark.gpu

IMPLS = ("per_row", "large_context")
POISON = -7


def _run_checked(impl_name: str, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> None:
    runner = registry.get(impl_name).prepare(logits, lengths, k)
    runner.result().fill_(POISON)
    runner.run()
    torch.cuda.synchronize()
    result = check_topk(logits, lengths, k, runner.result())
    assert result, f"{impl_name} k={k} shape={tuple(logits.shape)}: {result.reason} ({result.bad_rows} bad rows)"


def _spec(rows, width, k, dist, mode, stride=None, seed=0):
    return WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=mode, seed=seed,
                        row_stride=stride)


# (rows, width, k, length mode, row stride): small and large rows, k small and at the model's 2048.
DIST_SHAPES = [
    (3, 4097, 256, LengthMode.FIXED, 4099),
    (64, 2047, 7, LengthMode.RAGGED, 2051),
    (300, 4097, 2048, LengthMode.RAGGED, None),
    (1, 131075, 2048, LengthMode.RAGGED, None),
    (3, 65537, 2048, LengthMode.FIXED, 65541),
]


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", DIST_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-k{s[2]}-{s[3].value}-stride{s[4]}")
def test_distributions(impl_name, dist, shape):
    rows, width, k, mode, stride = shape
    w = make_workload(_spec(rows, width, k, dist, mode, stride), "cuda")
    _run_checked(impl_name, w.logits, w.lengths_arg, k)


K_CASES = ("1", "7", "256", "2048", "length-1", "length", "length+5")


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("k_case", K_CASES)
@pytest.mark.parametrize("dist", (Distribution.NORMAL, Distribution.RELU_PLATEAU), ids=lambda d: d.value)
@pytest.mark.parametrize("width,mode", [(4097, LengthMode.FIXED), (131075, LengthMode.RAGGED)],
                         ids=["4097-fixed", "131075-ragged"])
def test_k_values(impl_name, k_case, dist, width, mode):
    k = {"length-1": width - 1, "length": width, "length+5": width + 5}.get(k_case) or int(k_case)
    w = make_workload(_spec(3, width, k, dist, mode, seed=1), "cuda")
    _run_checked(impl_name, w.logits, w.lengths_arg, k)


@pytest.mark.parametrize("impl_name", IMPLS)
def test_width_one_and_tiny_lengths(impl_name):
    w = make_workload(_spec(3, 1, 1, Distribution.NORMAL, LengthMode.FIXED), "cuda")
    _run_checked(impl_name, w.logits, None, 1)
    _run_checked(impl_name, w.logits, None, 4)
    # Lengths at and around k, 1 and the full width, in one launch.
    w = make_workload(_spec(8, 65537, 256, Distribution.SPECIALS, LengthMode.FIXED, seed=2), "cuda")
    lengths = torch.tensor([1, 2, 255, 256, 257, 4096, 65536, 65537], dtype=torch.int32, device="cuda")
    _run_checked(impl_name, w.logits, lengths, 256)


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("dist", (Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY),
                         ids=lambda d: d.value)
def test_cuda_graph_replays_follow_lengths(impl_name, dist):
    rows, width, k = 64, 16387, 2048
    w = make_workload(_spec(rows, width, k, dist, LengthMode.RAGGED, stride=16390, seed=3), "cuda")
    lengths = w.lengths.clone()
    runner = registry.get(impl_name).prepare(w.logits, lengths, k)
    out = runner.result()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        runner.run()  # warm-up outside capture (compiles and loads the module)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        runner.run()
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    for replay in range(5):
        if replay:
            # New lengths in place, including rows shorter than k and full-width rows; entries
            # past the old lengths are garbage (NaN, huge), now valid and rightly selectable.
            new = torch.randint(1, width + 1, (rows,), generator=gen, device="cuda", dtype=torch.int32)
            new[0] = width
            new[1] = k
            new[2] = 100
            lengths.copy_(new)
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        result = check_topk(w.logits, lengths, k, out)
        assert result, f"replay {replay}: {result.reason} ({result.bad_rows} bad rows)"
