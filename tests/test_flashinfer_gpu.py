"""The FlashInfer plugin on a GPU with FlashInfer installed (scripts/flashinfer_wheels.sh): every
variant exact on poisoned outputs, over the adversarial distributions, eagerly and by CUDA-graph
replay with new scores and lengths written in place. The first call JIT-builds FlashInfer's top-k
module (minutes; FLASHINFER_WORKSPACE_BASE keeps it), hence ``slow``."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from topkbench.errors import UnsupportedError
from topkbench.exactness import check_topk
from topkbench.impls import registry
from topkbench.workload import ADVERSARIAL, LengthMode, WorkloadSpec, make_workload

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("flashinfer") is None,
                       reason="FlashInfer is not installed: pip install 'topkbench[flashinfer]'"),
]

VARIANTS = ("flashinfer", "flashinfer-deterministic", "flashinfer-lowest-index", "flashinfer-filtered",
            "flashinfer-radix", "flashinfer-cub")
# (rows, width, k, length mode): one row and many, k small and at the model's 2048, CUB's and the
# multi-CTA radix's regions of FlashInfer's dispatch.
SHAPES = [(3, 4097, 256, LengthMode.FIXED), (64, 40000, 2048, LengthMode.RAGGED),
          (1, 131072, 2048, LengthMode.RAGGED), (300, 4097, 7, LengthMode.RAGGED)]


def _check(name, runner, w, k):
    impl = registry.get(name)
    result = check_topk(w.logits, w.lengths_arg, k, runner.result(), deterministic=impl.deterministic)
    assert result, f"{name} {tuple(w.logits.shape)} k={k}: {result.reason} ({result.bad_rows} bad rows)"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dist", ADVERSARIAL, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-k{s[2]}-{s[3].value}")
def test_exact_eagerly_and_by_graph_replay(name, dist, shape):
    rows, width, k, mode = shape
    impl = registry.get(name)
    if impl.unsupported_reason(rows, width, k):
        pytest.skip(impl.unsupported_reason(rows, width, k))
    w = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=mode, seed=0), "cuda")
    try:
        runner = impl.prepare(w.logits, w.lengths_arg, k)
    except UnsupportedError as exc:
        pytest.skip(exc.message)
    runner.output.fill_(0x7F7F7F7F)
    runner.run()
    torch.cuda.synchronize()
    _check(name, runner, w, k)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        runner.run()
    fresh = make_workload(WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=mode,
                                       seed=1), "cuda")
    w.logits.copy_(fresh.logits)
    if w.lengths_arg is not None:
        w.lengths_arg.copy_(fresh.lengths_arg)
    runner.output.fill_(0x7F7F7F7F)
    graph.replay()
    torch.cuda.synchronize()
    _check(name, runner, w, k)
