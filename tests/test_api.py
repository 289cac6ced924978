"""The public API: topkbench.topk and topkbench.implementations on this CPU machine."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import topkbench
from topkbench.errors import DeviceError, UsageError
from topkbench.exactness import check_topk
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

CPU_IMPLS = ["torch-cpu", "numpy"]


def test_implementations_lists_cpu_baselines_only_here():
    names = topkbench.implementations()
    assert "torch-cpu" in names and "numpy" in names
    if not torch.cuda.is_available():
        assert "torch" not in names


def test_version_and_exports():
    assert isinstance(topkbench.__version__, str)
    assert {"topk", "implementations"} <= set(topkbench.__all__)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.SPECIALS])
def test_torch_input_gives_torch_int32_exact(impl, dist):
    w = make_workload(WorkloadSpec(4, 3000, 64, dist, seed=1))
    out = topkbench.topk(w.logits, 64, impl=impl)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.int32 and out.shape == (4, 64) and out.device.type == "cpu"
    assert check_topk(w.logits, None, 64, out).ok


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_numpy_input_gives_numpy_int32_exact(impl):
    w = make_workload(WorkloadSpec(4, 3000, 64, Distribution.TIE_HEAVY, seed=2))
    x = w.logits.numpy().copy()
    out = topkbench.topk(x, 64, impl=impl)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.int32 and out.shape == (4, 64)
    assert check_topk(torch.from_numpy(x), None, 64, torch.from_numpy(out)).ok


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_lengths_are_honoured(impl):
    w = make_workload(WorkloadSpec(6, 2000, 100, Distribution.NORMAL, LengthMode.RAGGED, seed=3))
    out = topkbench.topk(w.logits, 100, lengths=w.lengths, impl=impl)
    assert check_topk(w.logits, w.lengths, 100, out).ok
    assert bool((out < w.lengths.unsqueeze(1)).all())  # garbage past the length never chosen
    np_out = topkbench.topk(w.logits.numpy(), 100, lengths=w.lengths.numpy(), impl=impl)
    assert isinstance(np_out, np.ndarray)
    assert check_topk(w.logits, w.lengths, 100, torch.from_numpy(np_out)).ok


def test_short_rows_padding_through_api():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    lengths = np.array([3, 6], dtype=np.int32)
    out = topkbench.topk(x, 5, lengths=lengths, impl="numpy")
    assert sorted(out[0, :3].tolist()) == [0, 1, 2] and out[0, 3:].tolist() == [-1, -1]
    assert sorted(out[1].tolist()) == [1, 2, 3, 4, 5]


def test_row_stride_larger_than_width_through_api():
    base = torch.randn(4, 130)
    view = base[:, :100]
    out = topkbench.topk(view, 9, impl="torch-cpu")
    assert check_topk(view, None, 9, out).ok


def test_same_answer_values_from_both_libraries():
    w = make_workload(WorkloadSpec(3, 1000, 33, seed=4))
    a = topkbench.topk(w.logits, 33, impl="torch-cpu")
    b = topkbench.topk(w.logits.numpy(), 33, impl="numpy")
    va = torch.sort(torch.gather(w.logits, 1, a.long()), dim=1).values
    vb = torch.sort(torch.gather(w.logits, 1, torch.from_numpy(b).long()), dim=1).values
    assert torch.equal(va, vb)


def test_unknown_impl_is_usage_error():
    with pytest.raises(UsageError, match="unknown implementation"):
        topkbench.topk(torch.randn(2, 10), 3, impl="no-such-impl")


def test_gpu_impl_on_cpu_is_device_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError):
        topkbench.topk(torch.randn(2, 10), 3, impl="torch")


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match="logits must be a torch tensor"):
        topkbench.topk([[1.0, 2.0]], 1, impl="numpy")
    with pytest.raises(UsageError, match="2-D"):
        topkbench.topk(np.zeros(5, dtype=np.float32), 1, impl="numpy")
    with pytest.raises(UsageError, match="float32"):
        topkbench.topk(np.zeros((2, 5)), 1, impl="numpy")
    with pytest.raises(UsageError, match="k must be"):
        topkbench.topk(np.zeros((2, 5), dtype=np.float32), 0, impl="numpy")


def test_auto_picks_a_cpu_implementation_and_is_exact():
    w = make_workload(WorkloadSpec(3, 2000, 50, Distribution.NORMAL, LengthMode.RAGGED, seed=5))
    out = topkbench.topk(w.logits, 50, lengths=w.lengths)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int32
    assert check_topk(w.logits, w.lengths, 50, out).ok
    np_out = topkbench.topk(w.logits.numpy(), 50, lengths=w.lengths.numpy())
    assert isinstance(np_out, np.ndarray)
    assert check_topk(w.logits, w.lengths, 50, torch.from_numpy(np_out)).ok
