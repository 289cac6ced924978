"""The public API on a GPU: torch and CuPy inputs, impl="auto" (GPU only)."""

from __future__ import annotations

import pytest
import torch

import topkbench
from topkbench.exactness import check_topk
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("rows, width", [(1, 131072), (256, 4096), (64, 65537)])
def test_auto_on_cuda_is_exact(rows, width):
    w = make_workload(WorkloadSpec(rows, width, 2048, Distribution.RELU_PLATEAU, LengthMode.RAGGED), "cuda")
    out = topkbench.topk(w.logits, 2048, lengths=w.lengths)
    assert out.device == w.logits.device and out.dtype == torch.int32
    assert check_topk(w.logits, w.lengths, 2048, out).ok


def test_cupy_in_cupy_out_on_cupys_stream():
    cupy = pytest.importorskip("cupy")
    w = make_workload(WorkloadSpec(3, 70001, 512, Distribution.NORMAL, LengthMode.RAGGED), "cuda")
    x = cupy.from_dlpack(w.logits.contiguous())
    lengths = cupy.from_dlpack(w.lengths)
    torch.cuda.synchronize()  # the inputs were written on torch's stream
    with cupy.cuda.Stream(non_blocking=True) as stream:
        for name in ("per_row", "large_context", "radix", "auto"):
            out = topkbench.topk(x, 512, lengths=lengths, impl=name)
            assert isinstance(out, cupy.ndarray) and out.dtype == cupy.int32
            stream.synchronize()  # the result is ordered on CuPy's stream, the check runs on torch's
            assert check_topk(w.logits, w.lengths, 512, torch.from_dlpack(out)).ok, name


def test_cuda_kernels_are_listed():
    assert {"torch", "per_row", "large_context", "radix"} <= set(topkbench.implementations())
