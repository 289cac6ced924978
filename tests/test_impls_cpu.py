"""The CPU baselines (torch-cpu, numpy) against the contract over the adversarial workloads."""

from __future__ import annotations

import pytest
import torch

from topkbench.errors import UnsupportedError, UsageError
from topkbench.exactness import check_topk
from topkbench.impls import Device, registry
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

CPU_IMPLS = ["torch-cpu", "numpy"]


@pytest.fixture(params=CPU_IMPLS)
def impl(request):
    return registry.require(request.param)


def _check(impl, w, k):
    out = impl(w.logits, k, w.lengths_arg)
    assert out.dtype == torch.int32 and tuple(out.shape) == (w.logits.shape[0], k)
    assert out.device.type == "cpu"
    result = check_topk(w.logits, w.lengths, k, out)
    assert result.ok, f"{impl.name} {w.spec}: {result.reason}"
    return out


def test_cpu_impls_registered_and_available():
    for name in CPU_IMPLS:
        assert name in registry.available()
        assert registry.get(name).device is Device.CPU
        assert registry.get(name).name == name


@pytest.mark.parametrize("dist", ADVERSARIAL)
@pytest.mark.parametrize("mode", list(LengthMode))
def test_exact_over_adversarial(impl, dist, mode):
    for rows, width, k in ((5, 4097, 7), (3, 1023, 256), (1, 2048, 2048 - 1)):
        _check(impl, make_workload(WorkloadSpec(rows, width, k, dist, mode, seed=11)), k)


@pytest.mark.parametrize("width", [1, 2, 1023, 4097])
@pytest.mark.parametrize("k", [1, 7])
def test_odd_widths(impl, width, k):
    for mode in LengthMode:
        _check(impl, make_workload(WorkloadSpec(4, width, k, Distribution.TIE_HEAVY, mode, seed=width)), k)


@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.SPECIALS, Distribution.CONSTANT])
def test_k_equal_and_above_length(impl, dist):
    fixed = make_workload(WorkloadSpec(3, 300, 300, dist, seed=1))
    out = _check(impl, fixed, 300)
    assert bool((out >= 0).all())
    above = _check(impl, fixed, 333)
    assert bool((above[:, 300:] == -1).all())
    ragged = make_workload(WorkloadSpec(6, 300, 300, dist, LengthMode.RAGGED, seed=1))
    out = _check(impl, ragged, 300)  # every row shorter than or equal to k: 0..n-1 then -1
    for r in range(6):
        n = int(ragged.lengths[r])
        assert sorted(out[r, :n].tolist()) == list(range(n))
    _check(impl, ragged, int(ragged.lengths.min()))  # k equal to the shortest row's length


@pytest.mark.parametrize("dist", ADVERSARIAL)
def test_row_stride_larger_than_width(impl, dist):
    w = make_workload(WorkloadSpec(6, 1000, 37, dist, LengthMode.RAGGED, seed=2, row_stride=1100))
    assert w.logits.stride(0) == 1100 and not w.logits.is_contiguous()
    _check(impl, w, 37)
    f = make_workload(WorkloadSpec(6, 1000, 37, dist, LengthMode.FIXED, seed=2, row_stride=1024))
    _check(impl, f, 37)


@pytest.mark.parametrize("rows", [1, 2, 300])
def test_one_and_many_rows(impl, rows):
    for mode in LengthMode:
        _check(impl, make_workload(WorkloadSpec(rows, 512, 16, Distribution.RELU_PLATEAU, mode, seed=rows)), 16)


def test_relu_plateau_at_decode_scale(impl):
    w = make_workload(WorkloadSpec(2, 65536, 2048, Distribution.RELU_PLATEAU, LengthMode.RAGGED, seed=0))
    _check(impl, w, 2048)


@pytest.mark.parametrize("seed", range(6))
def test_neg_inf_kth_value_with_ragged_lengths(impl, seed):
    """Valid -inf scores at the k-th place must not lose to the garbage past the length.

    A baseline that masks the garbage with -inf ties it with valid -inf scores; the answer must
    still take only indices below each row's length.
    """
    w = make_workload(WorkloadSpec(8, 200, 150, Distribution.SPECIALS, LengthMode.RAGGED, seed=seed))
    k = int(w.lengths.min()) - 1
    _check(impl, w, k)
    row = torch.tensor([[1.0, -float("inf"), 2.0, -float("inf"), 5.0, 7.0]])
    lengths = torch.tensor([4], dtype=torch.int32)
    _check_raw(impl, row, lengths, 3)


def _check_raw(impl, logits, lengths, k):
    out = impl(logits, k, lengths)
    result = check_topk(logits, lengths, k, out)
    assert result.ok, result.reason


def test_runner_reuse_gives_same_answer(impl):
    w = make_workload(WorkloadSpec(4, 1000, 50, Distribution.NORMAL, LengthMode.RAGGED, seed=3))
    runner = impl.prepare(w.logits, w.lengths_arg, 50)
    runner.run()
    first = runner.result().clone()
    runner.run()
    assert torch.equal(torch.sort(first, dim=1).values, torch.sort(runner.result(), dim=1).values)


def test_input_validation(impl):
    x = torch.randn(3, 10)
    with pytest.raises(UsageError, match="float32"):
        impl(x.double(), 2)
    with pytest.raises(UsageError, match="2-D"):
        impl(torch.randn(10), 2)
    with pytest.raises(UsageError, match="k must be"):
        impl(x, 0)
    with pytest.raises(UsageError, match="contiguous"):
        impl(torch.randn(10, 3).t(), 2)
    with pytest.raises(UsageError, match="lengths"):
        impl(x, 2, torch.tensor([1, 2, 3], dtype=torch.int64))
    with pytest.raises(UsageError, match="lengths"):
        impl(x, 2, torch.tensor([1, 2], dtype=torch.int32))


def test_max_k_is_an_unsupported_error_not_a_wrong_answer():
    from fake_impls import SmallK

    impl = SmallK()
    assert impl.unsupported_reason(1, 100, 5) is not None
    with pytest.raises(UnsupportedError, match="k=5"):
        impl(torch.randn(2, 100), 5)
    x = torch.randn(2, 100)
    assert check_topk(x, None, 4, impl(x, 4)).ok
