"""Workloads: reproducible per seed, each distribution's property, garbage past the end."""

from __future__ import annotations

import pytest
import torch

from topkbench.keys import float_keys
from topkbench.workload import (ADVERSARIAL, SMALLEST_NORMAL, SMALLEST_SUBNORMAL, SUBNORMAL, Distribution, LengthMode,
                                PointInputs, WorkloadSpec, garbage, make_workload)


def _valid_mask(w) -> torch.Tensor:
    cols = torch.arange(w.logits.shape[1]).unsqueeze(0)
    return cols < w.lengths.to(torch.int64).unsqueeze(1)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


@pytest.mark.parametrize("dist", ADVERSARIAL)
@pytest.mark.parametrize("mode", list(LengthMode))
def test_same_spec_same_bits(dist, mode):
    spec = WorkloadSpec(3, 300, 16, dist, mode, seed=5)
    a, b = make_workload(spec), make_workload(spec)
    assert _same_bits(a.logits, b.logits)  # NaN garbage compared bitwise
    assert torch.equal(a.lengths, b.lengths)


@pytest.mark.parametrize("dist", [d for d in ADVERSARIAL if d not in (Distribution.CONSTANT, Distribution.ASCENDING)])
def test_different_seed_different_values(dist):
    a = make_workload(WorkloadSpec(2, 500, 16, dist, seed=1))
    b = make_workload(WorkloadSpec(2, 500, 16, dist, seed=2))
    assert not _same_bits(a.logits, b.logits)


def test_seed_changes_garbage_and_lengths_even_for_constant():
    a = make_workload(WorkloadSpec(8, 1000, 16, Distribution.CONSTANT, LengthMode.RAGGED, seed=1))
    b = make_workload(WorkloadSpec(8, 1000, 16, Distribution.CONSTANT, LengthMode.RAGGED, seed=2))
    assert not torch.equal(a.lengths, b.lengths)
    assert not _same_bits(a.logits, b.logits)


def test_point_seed_depends_on_every_field():
    base = WorkloadSpec(1, 64, 8, Distribution.NORMAL, LengthMode.FIXED, 0)
    variants = [WorkloadSpec(2, 64, 8), WorkloadSpec(1, 65, 8), WorkloadSpec(1, 64, 9),
                WorkloadSpec(1, 64, 8, Distribution.LSB10), WorkloadSpec(1, 64, 8, length_mode=LengthMode.RAGGED),
                WorkloadSpec(1, 64, 8, seed=1)]
    seeds = {base.point_seed()} | {v.point_seed() for v in variants}
    assert len(seeds) == len(variants) + 1
    assert base.point_seed() == WorkloadSpec(1, 64, 8).point_seed()


def test_relu_plateau_kth_value_is_zero_inside_a_large_plateau():
    w = make_workload(WorkloadSpec(2, 65536, 2048, Distribution.RELU_PLATEAU, seed=0))
    for row in w.logits:
        kth = torch.topk(row, 2048).values.min()
        assert kth.item() == 0.0
        assert int((row == 0.0).sum()) >= 2000
        assert bool((row >= 0).all())
        assert int((row > 0).sum()) > 0


def test_lsb10_top_22_bits_constant_low_bits_vary():
    w = make_workload(WorkloadSpec(4, 4096, 64, Distribution.LSB10, seed=0))
    keys = float_keys(w.logits)
    high = keys >> 10
    assert int(high.unique().numel()) == 1
    assert int((keys & 0x3FF).unique().numel()) > 900
    assert bool(torch.isfinite(w.logits).all())


def test_constant_ascending_tie_heavy():
    c = make_workload(WorkloadSpec(3, 777, 8, Distribution.CONSTANT)).logits
    assert int(c.unique().numel()) == 1
    a = make_workload(WorkloadSpec(3, 777, 8, Distribution.ASCENDING)).logits
    assert bool((a[:, 1:] > a[:, :-1]).all())
    t = make_workload(WorkloadSpec(3, 4096, 8, Distribution.TIE_HEAVY)).logits
    assert 2 <= int(t.unique().numel()) <= 8
    assert bool(torch.isfinite(t).all())


def test_specials_contain_nan_infs_and_negative_zero():
    x = make_workload(WorkloadSpec(2, 4096, 8, Distribution.SPECIALS)).logits
    assert bool(torch.isnan(x).any())
    assert bool((x == float("inf")).any())
    assert bool((x == float("-inf")).any())
    negzero = (x == 0) & torch.signbit(x)
    poszero = (x == 0) & ~torch.signbit(x)
    assert bool(negzero.any()) and bool(poszero.any())


def _subnormal(x: torch.Tensor) -> torch.Tensor:
    return (x != 0) & (x.abs() < SMALLEST_NORMAL)


def _signed_zeros(x: torch.Tensor) -> tuple[int, int]:
    zero = x == 0
    return int((zero & ~torch.signbit(x)).sum()), int((zero & torch.signbit(x)).sum())


def test_subnormal_distributions_are_listed_as_adversarial():
    assert set(SUBNORMAL) <= set(ADVERSARIAL)
    assert SMALLEST_SUBNORMAL == torch.tensor([1], dtype=torch.int32).view(torch.float32).item()


def test_subnormal_zeros_kth_is_zero_below_positive_subnormals():
    w = make_workload(WorkloadSpec(3, 65536, 2048, Distribution.SUBNORMAL_ZEROS, seed=0))
    for row in w.logits:
        assert torch.topk(row, 2048).values.min().item() == 0.0
        positive = int((_subnormal(row) & (row > 0)).sum())
        assert 700 < positive < 2048  # all of them selected, the rest of k from the zero plateau
        assert int((_subnormal(row) & (row < 0)).sum()) > 10000
        plus, minus = _signed_zeros(row)
        assert plus > 10000 and minus > 10000
        assert int(_subnormal(row).sum()) + plus + minus == row.numel()


def test_subnormal_mixed_kth_is_a_positive_subnormal():
    w = make_workload(WorkloadSpec(3, 65536, 2048, Distribution.SUBNORMAL_MIXED, seed=0))
    for row in w.logits:
        kth = torch.topk(row, 2048).values.min()
        assert bool(_subnormal(kth)) and kth.item() > 0
        assert int((_subnormal(row) & (row < 0)).sum()) > 1000
        assert int(((row.abs() >= SMALLEST_NORMAL) & (row.abs() < 1e-30)).sum()) > 1000  # tiny normals
        assert int((row.abs() > 0.01).sum()) > 100  # ordinary scores
        assert min(_signed_zeros(row)) > 100


def test_subnormal_min_kth_is_the_smallest_subnormal():
    for rows, width, k in ((3, 65536, 2048), (4, 4097, 256), (2, 4097, 1)):
        w = make_workload(WorkloadSpec(rows, width, k, Distribution.SUBNORMAL_MIN, seed=0))
        for row in w.logits:
            kth = torch.topk(row, k).values.min().item()
            assert kth == SMALLEST_SUBNORMAL, (width, k, kth)
            assert int((row == SMALLEST_SUBNORMAL).sum()) > width // 5
            assert bool((row == -SMALLEST_SUBNORMAL).any())
            assert min(_signed_zeros(row)) > 0


def test_normal_is_finite_and_roughly_standard():
    x = make_workload(WorkloadSpec(4, 8192, 8)).logits
    assert bool(torch.isfinite(x).all())
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def _check_garbage(values: torch.Tensor) -> None:
    assert values.numel() > 0
    nan = torch.isnan(values)
    assert not bool((values == float("-inf")).any())
    assert bool((values[~nan].abs() >= 1e30).all()), float(values[~nan].abs().min())
    assert bool(torch.isfinite(values[~nan]).all())


@pytest.mark.parametrize("dist", ADVERSARIAL)
def test_garbage_past_lengths_and_in_stride_padding(dist):
    spec = WorkloadSpec(16, 2000, 16, dist, LengthMode.RAGGED, seed=3, row_stride=2100)
    w = make_workload(spec)
    assert w.logits.shape == (16, 2000)
    assert w.logits.stride() == (2100, 1)
    past = w.logits[~_valid_mask(w)]
    _check_garbage(past)
    full = torch.as_strided(w.logits, (16, 2100), (2100, 1))
    _check_garbage(full[:, 2000:])


def test_garbage_function_range_both_signs_and_nan():
    gen = torch.Generator()
    gen.manual_seed(0)
    g = garbage((500, 500), gen, torch.device("cpu"))
    _check_garbage(g)
    finite = g[~torch.isnan(g)]
    assert bool((finite > 0).any()) and bool((finite < 0).any())
    assert 0.1 < float(torch.isnan(g).float().mean()) < 0.4


def test_ragged_lengths_in_range_and_fixed_lengths_arg_none():
    for L in (10, 1000, 4097):
        w = make_workload(WorkloadSpec(200, L, 4, length_mode=LengthMode.RAGGED, seed=1))
        assert w.lengths.dtype == torch.int32
        assert int(w.lengths.min()) >= int(0.8 * L) and int(w.lengths.max()) <= L
        assert w.lengths_arg is w.lengths
        assert w.mean_length == pytest.approx(float(w.lengths.double().mean()))
        if L >= 1000:
            assert int(w.lengths.unique().numel()) > 10
    f = make_workload(WorkloadSpec(3, 100, 4))
    assert f.lengths_arg is None
    assert torch.equal(f.lengths, torch.full((3,), 100, dtype=torch.int32))
    assert f.mean_length == 100.0
    assert not bool(torch.isnan(f.logits).any())  # no garbage inside a fixed row


def test_ragged_length_one_rows():
    w = make_workload(WorkloadSpec(5, 1, 1, length_mode=LengthMode.RAGGED))
    assert torch.equal(w.lengths, torch.ones(5, dtype=torch.int32))


def test_bytes_moved_formula():
    f = make_workload(WorkloadSpec(3, 100, 7))
    assert f.bytes_moved == 3 * 100 * 4 + 3 * 7 * 4
    r = make_workload(WorkloadSpec(5, 1000, 16, length_mode=LengthMode.RAGGED, seed=2))
    assert r.bytes_moved == round(5 * float(r.lengths.double().mean()) * 4) + 5 * 16 * 4


def test_stride_smaller_than_width_rejected():
    with pytest.raises(ValueError):
        make_workload(WorkloadSpec(2, 100, 4, row_stride=50))


def test_point_inputs_cpu_returns_primary():
    inputs = PointInputs(WorkloadSpec(2, 64, 4), cuda=False)
    assert inputs.on("cpu") is inputs.primary
    with pytest.raises(ValueError):
        inputs.on("cuda")
