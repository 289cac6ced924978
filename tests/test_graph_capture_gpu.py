"""Every GPU implementation and impl="auto", called through topkbench.topk, captured in a CUDA
graph and replayed with new scores and new lengths written in place (GPU only).

The pattern serving engines use: one warm-up call (it compiles the kernel and sizes workspaces),
then capture, then replays over buffers rewritten between replays. A host sync anywhere on the
call path makes the capture fail.
"""

from __future__ import annotations

import pytest
import torch

import topkbench
from topkbench.exactness import check_topk
from topkbench.impls import Device, registry
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

pytestmark = pytest.mark.gpu


def _gpu_names() -> list[str]:
    if not torch.cuda.is_available():
        return ["torch"]
    return [n for n in registry.available() if registry.get(n).device is Device.CUDA] + ["auto"]


def _deterministic(name: str) -> bool:
    return name != "auto" and registry.get(name).deterministic


@pytest.mark.parametrize("name", _gpu_names())
@pytest.mark.parametrize(("rows", "width", "k", "ragged"), [(8, 70001, 2048, True), (3, 4099, 2048, True),
                                                          (64, 16387, 512, False), (1, 131075, 2048, True)])
def test_captured_topk_replays_exactly_on_new_inputs(name, rows, width, k, ragged):
    mode = LengthMode.RAGGED if ragged else LengthMode.FIXED
    first = make_workload(WorkloadSpec(rows, width, k, Distribution.NORMAL, mode, seed=1), "cuda")
    logits = first.logits.clone()
    lengths = first.lengths.clone() if ragged else None
    topkbench.topk(logits, k, lengths=lengths, impl=name)  # warm-up: compile, workspaces
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = topkbench.topk(logits, k, lengths=lengths, impl=name)
    for seed, dist in ((2, Distribution.NORMAL), (3, Distribution.RELU_PLATEAU), (4, Distribution.TIE_HEAVY)):
        fresh = make_workload(WorkloadSpec(rows, width, k, dist, mode, seed=seed), "cuda")
        logits.copy_(fresh.logits)
        if lengths is not None:
            lengths.copy_(fresh.lengths)
        graph.replay()
        torch.cuda.synchronize()
        check = check_topk(logits, lengths, k, out, deterministic=_deterministic(name))
        assert check.ok, f"{name} replay seed={seed} {dist.value}: {check.reason}"
