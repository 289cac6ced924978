"""The contract of every CUDA kernel (docs/design.md section 3), on the GPU: one parametrised suite.

Every kernel of topkbench/cuda (the deterministic ones and their ``-nondet`` twins) runs
- every adversarial distribution (the subnormal ones included) at shapes that reach each path:
  one row and many, odd widths (not multiples of 4 or of the block size), row strides past the
  width that misalign rows, fixed and ragged lengths with garbage (huge values, NaN) past each;
- k from 1 to beyond the length, tiny widths and lengths around k in one launch;
- CUDA-graph replays with the lengths changed in place.
The output buffer is poisoned before every run (``topkbench.trial.poison``), so a slot a kernel
forgets to write is caught, and deterministic kernels are checked with the lowest-index tie rule.

Determinism (kernels with ``deterministic = True``, and their builds without the plateau early
stop): on tie-heavy rows (the k-th value shared by tens of thousands of entries, +0.0 and -0.0
mixed) the output must equal, bit for bit, the host reference of the promised layout: the selected
set, with the lowest-index ties at the k-th value, in ascending index order (-1 padding for rows of
length <= k); 20 calls and 20 graph replays return exactly that.
"""

from __future__ import annotations

import pytest
import torch

from topkbench.exactness import TopkChecker
from topkbench.impls import Device, Implementation, registry
from topkbench.keys import float_keys
from topkbench.trial import poison
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

pytestmark = pytest.mark.gpu

FIXED, RAGGED = LengthMode.FIXED, LengthMode.RAGGED


def cuda_kernels() -> list[str]:
    """Every built-in implementation backed by a kernel in kernels/ (torch.topk is not one)."""
    return [name for name in registry.names()
            if registry.is_builtin(name) and registry.get(name).device is Device.CUDA
            and type(registry.get(name)).__module__.startswith("topkbench.cuda")]


KERNELS = cuda_kernels()


def _deterministic_builds() -> dict[str, Implementation]:
    """The deterministic kernels, plus the one-CTA ones built without the plateau early stop."""
    from topkbench.cuda.one_cta import Filtered, LargeContext, PerRow

    builds = {name: registry.get(name) for name in KERNELS if registry.get(name).deterministic}
    builds["per_row[EARLY_TIES=0]"] = PerRow(defines={"PER_ROW_EARLY_TIES": 0})
    builds["large_context[EARLY_TIES=0]"] = LargeContext(defines={"LC_EARLY_TIES": 0})
    builds["filtered[EARLY_TIES=0]"] = Filtered(defines={"FILTERED_EARLY_TIES": 0})
    return builds


DET_BUILDS = _deterministic_builds()


def run_checked(impl: Implementation, logits: torch.Tensor, lengths: torch.Tensor | None, k: int, *,
                runner=None) -> torch.Tensor:
    """Prepare (unless given a runner), poison the output, run once and check; returns a copy of the
    output. Deterministic kernels are held to the lowest-index tie rule too."""
    runner = runner or impl.prepare(logits, lengths, k)
    poison(runner.output)
    runner.run()
    torch.cuda.synchronize()
    out = runner.result()
    check = TopkChecker(logits, lengths, k).check(out, deterministic=impl.deterministic)
    plan = getattr(runner, "plan", "")
    assert check, (f"{impl.name} k={k} shape={tuple(logits.shape)} stride={logits.stride(0)} {plan}: "
                   f"{check.reason} ({check.bad_rows} bad rows)")
    return out.clone()


def _spec(rows, width, k, dist, mode, stride=None, seed=0):
    return WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=mode, seed=seed,
                        row_stride=stride)


# ---- the contract ----------------------------------------------------------------------------

# (rows, width, k, length mode, row stride): one long row, a few long misaligned rows (large_context's
# candidate buffer and its overflow fallback, radix's CTAs per row), many short rows, many rows.
SHAPES = [
    (1, 131075, 2048, RAGGED, None),
    (3, 65537, 2048, FIXED, 65541),
    (5, 40961, 1536, RAGGED, 40963),
    (64, 2047, 7, RAGGED, 2051),
    (300, 3001, 2048, RAGGED, None),
]


@pytest.mark.parametrize("impl_name", KERNELS)
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-k{s[2]}-{s[3].value}-stride{s[4]}")
def test_distributions(impl_name, dist, shape):
    rows, width, k, mode, stride = shape
    w = make_workload(_spec(rows, width, k, dist, mode, stride), "cuda")
    run_checked(registry.get(impl_name), w.logits, w.lengths_arg, k)


K_CASES = ("1", "7", "length-1", "length", "length+5")


@pytest.mark.parametrize("impl_name", KERNELS)
@pytest.mark.parametrize("k_case", K_CASES)
@pytest.mark.parametrize("dist", (Distribution.RELU_PLATEAU, Distribution.SUBNORMAL_ZEROS), ids=lambda d: d.value)
@pytest.mark.parametrize("width,mode", [(4097, FIXED), (70001, RAGGED)], ids=["4097-fixed", "70001-ragged"])
def test_k_values(impl_name, k_case, dist, width, mode):
    k = {"length-1": width - 1, "length": width, "length+5": width + 5}.get(k_case) or int(k_case)
    w = make_workload(_spec(3, width, k, dist, mode, seed=1), "cuda")
    run_checked(registry.get(impl_name), w.logits, w.lengths_arg, k)


@pytest.mark.parametrize("impl_name", KERNELS)
def test_width_one_and_lengths_around_k(impl_name):
    impl = registry.get(impl_name)
    w = make_workload(_spec(3, 1, 1, Distribution.NORMAL, FIXED), "cuda")
    run_checked(impl, w.logits, None, 1)
    run_checked(impl, w.logits, None, 4)
    # Lengths at and around k, 0, 1 and the full width, in one launch.
    w = make_workload(_spec(9, 65537, 256, Distribution.SUBNORMAL_MIXED, FIXED, seed=2), "cuda")
    lengths = torch.tensor([0, 1, 2, 255, 256, 257, 4096, 65536, 65537], dtype=torch.int32, device="cuda")
    run_checked(impl, w.logits, lengths, 256)


@pytest.mark.parametrize("impl_name", KERNELS)
@pytest.mark.parametrize("width,k", [(4097, 2049), (131075, 65539), (20000, 4000)])
def test_threshold_bucket_taken_whole(impl_name, width, k):
    # Ascending rows where the k-th largest value (2**11, 2**16) opens its coarse bucket: the whole
    # bucket is selected, no refinement (the take-all paths); 20000/4000 is an ordinary control.
    impl = registry.get(impl_name)
    w = make_workload(_spec(2, width, k, Distribution.ASCENDING, FIXED), "cuda")
    out = run_checked(impl, w.logits, None, k)
    if impl.deterministic:  # the selected set in ascending index order
        assert torch.equal(out, torch.arange(width - k, width, dtype=torch.int32, device="cuda").expand(2, k))


@pytest.mark.parametrize("impl_name", KERNELS)
@pytest.mark.parametrize("dist", (Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.SUBNORMAL_MIN),
                         ids=lambda d: d.value)
def test_cuda_graph_replays_follow_lengths(impl_name, dist):
    impl = registry.get(impl_name)
    rows, width, k = 64, 16387, 2048
    w = make_workload(_spec(rows, width, k, dist, RAGGED, stride=16390, seed=3), "cuda")
    lengths = w.lengths.clone()
    runner = impl.prepare(w.logits, lengths, k)
    graph = _capture(runner)
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
        poison(runner.output)
        graph.replay()
        torch.cuda.synchronize()
        check = TopkChecker(w.logits, lengths, k).check(runner.result(), deterministic=impl.deterministic)
        assert check, f"{impl_name} replay {replay}: {check.reason} ({check.bad_rows} bad rows)"


def _capture(runner, launches: int = 1) -> torch.cuda.CUDAGraph:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        runner.run()  # warm-up outside capture (compiles and loads the module)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches):
            runner.run()
    return graph


# ---- determinism ------------------------------------------------------------------------------

def tie_heavy(rows: int, width: int, k: int, mode: LengthMode, *, stride: int | None = None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Rows quantised so that the k-th value is shared by tens of thousands of entries: about k/2
    entries of 1.0 or 0.5, then a plateau of +0.0 and -0.0 (60% of the row) holding the k-th
    value, then -0.5 and -1.0; garbage past each length (the workload's). Returns (logits on the
    GPU, lengths argument, lengths)."""
    w = make_workload(_spec(rows, width, k, Distribution.NORMAL, mode, stride, seed), "cuda")
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1000 + seed)
    u = torch.rand((rows, width), generator=gen, device="cuda")
    top = 0.5 * min(1.0, k / width)
    levels = torch.tensor([1.0, 0.5, 0.0, -0.0, -0.5, -1.0], device="cuda")
    level = torch.bucketize(u, torch.tensor([top / 2, top, top + 0.3, top + 0.6, top + 0.8], device="cuda"))
    values = levels[level]
    valid = torch.arange(width, device="cuda").unsqueeze(0) < w.lengths.to(torch.int64).unsqueeze(1)
    w.logits.copy_(torch.where(valid, values, w.logits))
    return w.logits, w.lengths_arg, w.lengths


def promised_output(logits: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """The deterministic kernels' exact output, computed on the host: per row the entries above the
    k-th largest value and the lowest-index entries equal to it, all in ascending index order;
    rows of length n <= k: 0..n-1 then -1."""
    logits, lengths = logits.cpu(), lengths.cpu()
    out = torch.full((logits.shape[0], k), -1, dtype=torch.int32)
    for r in range(logits.shape[0]):
        n = int(lengths[r])
        if n <= k:
            out[r, :n] = torch.arange(n, dtype=torch.int32)
            continue
        keys = float_keys(logits[r, :n])
        kth = torch.topk(keys, k).values[-1]
        above = torch.nonzero(keys > kth).flatten()
        ties = torch.nonzero(keys == kth).flatten()[: k - above.numel()]
        out[r] = torch.sort(torch.cat([above, ties])).values.to(torch.int32)
    return out


# (rows, width, k, length mode, row stride): the shapes, an odd misaligned width, ragged
# rows some of which are no longer than k, and k past the width.
DET_SHAPES = [
    (4, 65536, 2048, FIXED, None),
    (64, 16384, 2048, FIXED, None),
    (8, 131072, 2048, FIXED, None),
    (3, 70001, 1999, RAGGED, 70003),
    (16, 2600, 2300, RAGGED, None),
    (2, 3000, 3100, FIXED, None),
]


@pytest.mark.parametrize("impl_name", list(DET_BUILDS))
@pytest.mark.parametrize("shape", DET_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-k{s[2]}-{s[3].value}-stride{s[4]}")
def test_repeated_calls_and_graph_replays_return_the_promised_output(impl_name, shape):
    rows, width, k, mode, stride = shape
    impl = DET_BUILDS[impl_name]
    logits, lengths_arg, lengths = tie_heavy(rows, width, k, mode, stride=stride, seed=rows)
    expected = promised_output(logits, lengths, k).cuda()
    runner = impl.prepare(logits, lengths_arg, k)
    for call in range(20):
        poison(runner.output)
        runner.run()
        got = runner.result()
        if not torch.equal(got, expected):
            bad = torch.nonzero((got != expected).any(dim=1)).flatten()
            r = int(bad[0])
            raise AssertionError(f"{impl_name} call {call}: {bad.numel()} rows differ from the promised output; "
                                 f"row {r}: got {got[r, :8].tolist()}..., want {expected[r, :8].tolist()}...")
    graph = _capture(runner)
    for replay in range(20):
        poison(runner.output)
        graph.replay()
        assert torch.equal(runner.result(), expected), f"{impl_name} graph replay {replay} differs"


@pytest.mark.parametrize("impl_name", list(DET_BUILDS))
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", [(3, 65537, 2048, RAGGED, 65539), (64, 4097, 256, RAGGED, None)],
                         ids=["3x65537-k2048", "64x4097-k256"])
def test_promised_output_on_every_distribution(impl_name, dist, shape):
    # The layout holds on every distribution, not only on quantised rows.
    rows, width, k, mode, stride = shape
    w = make_workload(_spec(rows, width, k, dist, mode, stride=stride, seed=4), "cuda")
    out = run_checked(DET_BUILDS[impl_name], w.logits, w.lengths_arg, k)
    expected = promised_output(w.logits, w.lengths, k)
    bad = torch.nonzero((out.cpu() != expected).any(dim=1)).flatten()
    assert bad.numel() == 0, (f"{bad.numel()} rows differ from the promised output; row {int(bad[0])}: got "
                              f"{out[int(bad[0]), :8].tolist()}..., want {expected[int(bad[0]), :8].tolist()}...")
