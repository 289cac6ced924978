"""The read-floor kernel reads every valid score once (GPU), and its chunking (CPU)."""

from __future__ import annotations

import pytest
import torch

from topkbench.read_floor import MAX_CHUNK, MIN_CHUNK, chunk_elements, expected_fold, read_floor_runner
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload


def test_chunks_give_every_sm_work_within_bounds():
    assert chunk_elements(1, 131072, 132) == MIN_CHUNK  # one row: as many CTAs as the row allows
    assert chunk_elements(256, 131072, 132) == MAX_CHUNK
    for rows, width in ((3, 4099), (64, 16387), (1024, 32768)):
        chunk = chunk_elements(rows, width, 132)
        assert MIN_CHUNK <= chunk <= MAX_CHUNK and chunk % 2048 == 0


def test_expected_fold_is_the_xor_of_the_valid_bits():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    bits = x.view(torch.int32)
    got = expected_fold(x, torch.tensor([3], dtype=torch.int32), chunk=4)
    assert got.tolist() == [[int(bits[0, 0] ^ bits[0, 1] ^ bits[0, 2]), 0]]


@pytest.mark.gpu
@pytest.mark.parametrize(("rows", "width", "stride", "mode"), [
    (1, 131075, None, LengthMode.FIXED), (3, 4099, 4103, LengthMode.FIXED), (64, 16387, None, LengthMode.RAGGED),
    (300, 3001, 3005, LengthMode.FIXED), (5, 70001, None, LengthMode.RAGGED)])
def test_read_floor_reads_every_valid_score(rows, width, stride, mode):
    w = make_workload(WorkloadSpec(rows, width, 16, Distribution.NORMAL, mode, row_stride=stride), "cuda")
    runner = read_floor_runner(w.logits, w.lengths_arg)
    runner.output.fill_(0x7F7F7F7F)
    runner.run()
    torch.cuda.synchronize()
    chunk = chunk_elements(rows, width, torch.cuda.get_device_properties(0).multi_processor_count)
    assert torch.equal(runner.output, expected_fold(w.logits, w.lengths_arg, chunk))
