"""Planted CUDA kernels that return early: the harness must report them wrong on the GPU too
(GPU only). Their output buffer already holds the correct answer (as memory recycled from another
implementation can), so only the poison before each check exposes them."""

from __future__ import annotations

import pytest
import torch

from topkbench.cuda import loader
from topkbench.impls.base import Device, Implementation, Runner
from topkbench.schema import Status
from topkbench.trial import Trial
from topkbench.workload import Distribution, LengthMode, WorkloadSpec

pytestmark = pytest.mark.gpu

# Copies the stashed answer for the first rows_written rows and returns early for the others.
SOURCE = r"""
extern "C" __global__ void planted(const int* stash, int* out, int k, int rows_written) {
    const int row = blockIdx.x;
    if (row >= rows_written) return;
    for (int i = threadIdx.x; i < k; i += blockDim.x) out[(long long)row * k + i] = stash[(long long)row * k + i];
}
"""


class _EarlyReturnRunner(Runner):
    def __init__(self, logits, lengths, k, share):
        import cupy
        import numpy as np

        rows = logits.shape[0]
        # the correct answer, computed once by a real kernel: left in the output buffer, and
        # stashed for the rows the planted kernel does write
        answer = torch.topk(torch.where(torch.arange(logits.shape[1], device=logits.device) <
                                        (lengths if lengths is not None else torch.full((rows,), logits.shape[1],
                                         device=logits.device)).unsqueeze(1), logits, float("-inf")),
                            k, dim=1).indices.to(torch.int32).contiguous()
        self.output = answer.clone()
        self._stash = answer
        self._kernel = cupy.RawKernel(SOURCE, "planted")
        self._args = (loader.pointer(self._stash), loader.pointer(self.output), np.int32(k),
                      np.int32(int(rows * share)))
        self._rows = rows

    def run(self):
        loader.launch(self._kernel, (self._rows,), (128,), self._args, device=self.output.device)

    def result(self):
        return self.output


class _EarlyReturn(Implementation):
    device = Device.CUDA
    share = 0.0

    def unavailable_reason(self):
        return loader.cupy_unavailable_reason()

    def _prepare(self, logits, lengths, k):
        return _EarlyReturnRunner(logits, lengths, k, type(self).share)


class WritesNothingKernel(_EarlyReturn):
    name, summary, share = "planted-nothing", "returns at once", 0.0


class WritesHalfKernel(_EarlyReturn):
    name, summary, share = "planted-half", "writes the first half of the rows", 0.5


@pytest.mark.parametrize("impl", [WritesNothingKernel(), WritesHalfKernel()], ids=lambda i: i.name)
@pytest.mark.parametrize(("rows", "width", "k", "mode"), [(4, 70001, 2048, LengthMode.RAGGED),
                                                        (64, 4099, 512, LengthMode.FIXED)])
def test_an_early_returning_kernel_is_wrong_at_every_point(impl, rows, width, k, mode):
    for dist in (Distribution.NORMAL, Distribution.RELU_PLATEAU):
        trial = Trial(WorkloadSpec(rows, width, k, dist, mode), cuda=True)
        outcome = trial.check(impl)
        assert outcome.status is Status.WRONG, (impl.name, dist, outcome.reason)
