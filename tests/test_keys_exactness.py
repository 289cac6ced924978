"""Ordered keys and the exactness check: correct answers pass, every defect is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fake_impls import IgnoresLengths, OneWrong
from topkbench.exactness import TopkChecker, check_topk
from topkbench.keys import coarse_key_range, coarse_keys, float_keys, float_keys_np, keys_to_float
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec, make_workload

INF = float("inf")
NAN = float("nan")


# ---- keys ----------------------------------------------------------------------------------

def test_float_keys_order_matches_float_order():
    values = torch.tensor([-INF, -3.4e38, -1.5, -1e-45, -0.0, 0.0, 1e-45, 1.0, 2.5, 3.4e38, INF],
                          dtype=torch.float32)
    keys = float_keys(values)
    assert keys.dtype == torch.int64
    assert bool((keys >= 0).all()) and bool((keys < 2**32).all())
    # strictly increasing except -0.0 == +0.0
    assert keys[4] == keys[5]
    diffs = keys[1:] - keys[:-1]
    assert bool((torch.cat([diffs[:4], diffs[5:]]) > 0).all())


def test_float_keys_random_order_agrees_with_sort():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10000, generator=gen) * torch.exp(torch.randn(10000, generator=gen) * 20)
    x = torch.cat([x, torch.tensor([-INF, INF, 0.0, -0.0])])
    k = float_keys(x)
    by_value = torch.sort(x, stable=True).indices
    assert bool((k[by_value][1:] >= k[by_value][:-1]).all())
    i, j = torch.randint(0, x.numel(), (2, 5000), generator=gen)
    assert torch.equal(k[i] < k[j], x[i] < x[j])
    assert torch.equal(k[i] == k[j], x[i] == x[j])


def test_nan_is_the_top_key_any_payload():
    bits = torch.tensor([0x7FC00000, 0x7F800001, -0x00400000, -1], dtype=torch.int32)  # +qNaN, sNaN, -qNaN, -NaN
    nans = bits.view(torch.float32)
    assert bool(torch.isnan(nans).all())
    keys = float_keys(nans)
    assert bool((keys == 0xFFFFFFFF).all())
    assert int(float_keys(torch.tensor([INF]))[0]) < 0xFFFFFFFF


def test_float_keys_rejects_other_dtypes():
    with pytest.raises(TypeError):
        float_keys(torch.zeros(3, dtype=torch.float64))


def test_numpy_twin_known_keys_and_inverse():
    # Keys written out by hand from the bit patterns (not by restating float_keys' expression).
    x = np.array([-INF, -2.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, INF, NAN], dtype=np.float32)
    expected = [0x007FFFFF, 0x3FFFFFFF, 0x7FFFFFFE, 0x80000000, 0x80000000, 0x80000001, 0xBF800000, 0xFF800000,
                0xFFFFFFFF]
    assert float_keys_np(x).tolist() == expected
    assert np.array_equal(float_keys_np(x), float_keys(torch.from_numpy(x)).numpy())
    finite = torch.tensor([-INF, -2.0, -1e-45, 0.0, 1e-45, 1.0, 3e38, INF])
    back = keys_to_float(float_keys(finite))
    assert torch.equal(back.view(torch.int32), finite.view(torch.int32))


def _subnormal_bits(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(1, 1 << 23, (n,), generator=gen, dtype=torch.int32)
    return bits.view(torch.float32)


def test_subnormals_have_their_own_keys_even_when_the_cpu_flushes():
    sub = _subnormal_bits(1000)
    values = torch.cat([sub, -sub, torch.tensor([0.0, -0.0, 1.17549435e-38, -1.17549435e-38])])
    torch.set_flush_denormal(True)  # x + 0.0 would now read subnormals as zero (x86 CPUs)
    try:
        keys = float_keys(values)
    finally:
        torch.set_flush_denormal(False)  # the default; torch has no getter for the previous mode
    zero = int(float_keys(torch.tensor([0.0]))[0])
    assert bool((keys[:1000] > zero).all()) and bool((keys[1000:2000] < zero).all())
    assert int(keys[2000]) == int(keys[2001]) == zero
    # The order of the bit patterns is the order of the subnormals.
    order = torch.argsort(sub.view(torch.int32))
    assert bool((keys[:1000][order].diff() >= 0).all())


# ---- coarse keys (the kernels' first digit) --------------------------------------------------

def _all_codes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    codes = torch.arange(1 << 16, dtype=torch.int64)
    first, last = coarse_key_range(codes, codes)
    return codes, first, last


def test_coarse_codes_cut_the_key_space_into_consecutive_ranges():
    _, first, last = _all_codes()
    assert int(first[0]) == 0 and int(last[-1]) == 0xFFFFFFFF
    assert bool((first <= last).all())
    assert torch.equal(last[:-1] + 1, first[1:])
    lo, hi = coarse_key_range(torch.tensor([5, 0x8000]), torch.tensor([0x7FFF, 0xFFFF]))
    assert lo.tolist() == [int(first[5]), int(first[0x8000])] and hi.tolist() == [int(last[0x7FFF]), 0xFFFFFFFF]


def _producible(keys: torch.Tensor) -> torch.Tensor:
    """Keys float_keys can return: not a NaN pattern below -inf's key, not un-canonical -0.0."""
    return ((keys >= 0x007FFFFF) & (keys != 0x7FFFFFFF) & (keys <= 0xFF800000)) | (keys == 0xFFFFFFFF)


def test_coarse_key_of_every_range_end_is_its_code():
    codes, first, last = _all_codes()
    for ends in (first, last):
        ok = _producible(ends) & (ends != 0xFFFFFFFF)
        values = keys_to_float(ends[ok])
        assert torch.equal(coarse_keys(values), codes[ok])
        assert torch.equal(float_keys(values), ends[ok])


def test_coarse_keys_are_monotone_and_inside_their_range():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(50000, generator=gen) * torch.exp2(torch.randint(-160, 140, (50000,), generator=gen).float())
    specials = torch.tensor([0.0, -0.0, INF, -INF, NAN, 2.0 ** -15, -(2.0 ** -15), 2.0 ** 17, 65504.0, 3.4e38])
    x = torch.cat([x, _subnormal_bits(5000, 1), -_subnormal_bits(5000, 2), specials])
    nans = torch.tensor([0x7FC00000, 0x7F800001, -0x00400000, -1], dtype=torch.int32).view(torch.float32)
    x = torch.cat([x, nans])
    keys, coarse = float_keys(x), coarse_keys(x)
    assert bool((coarse >= 0).all()) and bool((coarse < 1 << 16).all())
    order = torch.argsort(keys)
    assert bool((coarse[order].diff() >= 0).all())
    first, last = coarse_key_range(coarse, coarse)
    assert bool(((first <= keys) & (keys <= last)).all())
    assert bool((coarse[-4:] == 0xFFFF).all())  # every NaN on top, like +inf
    assert int(coarse_keys(torch.tensor([0.0]))[0]) == int(coarse_keys(torch.tensor([-0.0]))[0]) == 0x8000


def test_coarse_key_resolution_is_fp16s():
    one = torch.tensor([1.0, 1.0 + 2.0 ** -10, 1.0 + 2.0 ** -11, -1.0, -1.0 - 2.0 ** -10])
    c = coarse_keys(one).tolist()
    assert c[0] != c[1] and c[0] == c[2]
    assert c[3] < c[0] and c[4] < c[3]
    tiny = coarse_keys(torch.cat([_subnormal_bits(100), torch.tensor([2.0 ** -16, 0.0])]))
    assert bool((tiny == 0x8000).all())  # magnitudes below 2**-15 share the code next to zero


# ---- check_topk ----------------------------------------------------------------------------

def reference(logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> torch.Tensor:
    """A correct answer built on torch.topk, one row at a time."""
    rows, width = logits.shape
    out = torch.full((rows, k), -1, dtype=torch.int32)
    for r in range(rows):
        n = width if lengths is None else int(lengths[r])
        if n <= k:
            out[r, :n] = torch.arange(n, dtype=torch.int32)
        else:
            out[r] = torch.topk(logits[r, :n], k).indices.to(torch.int32)
    return out


@pytest.mark.parametrize("dist", ADVERSARIAL)
@pytest.mark.parametrize("mode", list(LengthMode))
def test_correct_answers_pass(dist, mode):
    w = make_workload(WorkloadSpec(6, 1000, 50, dist, mode, seed=1))
    result = check_topk(w.logits, w.lengths, 50, reference(w.logits, w.lengths, 50))
    assert result.ok, result.reason
    assert bool(result) and result.bad_rows == 0


def test_lengths_none_means_full_width():
    w = make_workload(WorkloadSpec(3, 300, 20, seed=2))
    assert check_topk(w.logits, None, 20, reference(w.logits, None, 20)).ok


def _normal(rows=4, width=500, k=20, mode=LengthMode.RAGGED, seed=0):
    w = make_workload(WorkloadSpec(rows, width, k, Distribution.NORMAL, mode, seed=seed))
    return w, reference(w.logits, w.lengths, k)


def test_dropped_candidate_is_caught():
    w, idx = _normal()
    k = idx.shape[1]
    row = 2
    n = int(w.lengths[row])
    chosen = set(idx[row].tolist())
    values = w.logits[row, :n]
    smallest_chosen = min(chosen, key=lambda i: float(values[i]))
    smaller = [i for i in range(n) if i not in chosen and float(values[i]) < float(values[smallest_chosen])]
    bad = idx.clone()
    slot = idx[row].tolist().index(max(chosen, key=lambda i: float(values[i])))  # drop the largest
    bad[row, slot] = smaller[0]
    result = check_topk(w.logits, w.lengths, k, bad)
    assert not result.ok
    assert result.bad_rows == 1
    assert f"row {row}" in result.reason and "differ" in result.reason


def test_duplicate_is_caught():
    w, idx = _normal()
    bad = idx.clone()
    bad[1, 3] = bad[1, 4]
    result = check_topk(w.logits, w.lengths, idx.shape[1], bad)
    assert not result.ok and "row 1" in result.reason and "duplicate" in result.reason


def test_index_past_length_is_caught():
    w, idx = _normal()
    row = int(torch.argmin(w.lengths))
    assert int(w.lengths[row]) < w.logits.shape[1]
    bad = idx.clone()
    bad[row, 0] = int(w.lengths[row])  # first garbage column
    result = check_topk(w.logits, w.lengths, idx.shape[1], bad)
    assert not result.ok and f"row {row}" in result.reason and "outside" in result.reason


@pytest.mark.parametrize("value", [-1, -7, 10**6])
def test_negative_or_huge_index_is_caught(value):
    w, idx = _normal(mode=LengthMode.FIXED)
    bad = idx.clone()
    bad[0, 5] = value
    result = check_topk(w.logits, w.lengths, idx.shape[1], bad)
    assert not result.ok and "outside" in result.reason


def test_short_rows_padding_rules():
    logits = torch.randn(3, 10)
    lengths = torch.tensor([4, 10, 7], dtype=torch.int32)
    k = 10
    good = torch.full((3, k), -1, dtype=torch.int32)
    good[0, :4] = torch.tensor([3, 1, 0, 2])
    good[1] = torch.randperm(10).to(torch.int32)
    good[2, :7] = torch.randperm(7).to(torch.int32)
    assert check_topk(logits, lengths, k, good).ok
    wrong_pad = good.clone()
    wrong_pad[0, 5] = 0
    r = check_topk(logits, lengths, k, wrong_pad)
    assert not r.ok and "row 0" in r.reason and "-1" in r.reason
    missing = good.clone()
    missing[2, 0:7] = torch.tensor([0, 1, 2, 3, 4, 5, 5])
    r = check_topk(logits, lengths, k, missing)
    assert not r.ok and "row 2" in r.reason and "permutation" in r.reason
    out_of_row = good.clone()
    out_of_row[0, :4] = torch.tensor([0, 1, 2, 9])
    assert not check_topk(logits, lengths, k, out_of_row).ok
    padded_early = good.clone()
    padded_early[2, 0] = -1
    assert not check_topk(logits, lengths, k, padded_early).ok


def test_k_larger_than_width():
    logits = torch.randn(2, 5)
    idx = torch.tensor([[4, 3, 2, 1, 0, -1, -1, -1], [0, 1, 2, 3, 4, -1, -1, -1]], dtype=torch.int32)
    assert check_topk(logits, None, 8, idx).ok
    idx[1, 7] = 4
    assert not check_topk(logits, None, 8, idx).ok


def test_wrong_dtype_and_shape():
    w, idx = _normal()
    k = idx.shape[1]
    r = check_topk(w.logits, w.lengths, k, idx.to(torch.int64))
    assert not r.ok and "dtype" in r.reason and r.bad_rows == 4
    r = check_topk(w.logits, w.lengths, k, idx[:, :-1])
    assert not r.ok and "shape" in r.reason
    r = check_topk(w.logits, w.lengths, k, idx[:-1])
    assert not r.ok and "shape" in r.reason


def test_any_tied_index_is_accepted():
    # A plateau: 10 ones, k=5 -> any 5 of them; values below are never acceptable.
    row = torch.tensor([[0.5, 1.0, 1.0, -2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    ones = [i for i in range(row.shape[1]) if row[0, i] == 1.0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        pick = torch.tensor(ones)[torch.randperm(len(ones), generator=gen)[:5]]
        assert check_topk(row, None, 5, pick.unsqueeze(0).to(torch.int32)).ok
    bad = torch.tensor([[1, 2, 4, 5, 0]], dtype=torch.int32)
    assert not check_topk(row, None, 5, bad).ok


def test_signed_zero_ties_and_nan_top():
    row = torch.tensor([[0.0, -0.0, -1.0, NAN, INF, -0.0]])
    assert check_topk(row, None, 3, torch.tensor([[3, 4, 1]], dtype=torch.int32)).ok
    assert check_topk(row, None, 3, torch.tensor([[3, 4, 0]], dtype=torch.int32)).ok
    assert check_topk(row, None, 3, torch.tensor([[5, 4, 3]], dtype=torch.int32)).ok
    assert not check_topk(row, None, 3, torch.tensor([[0, 1, 4]], dtype=torch.int32)).ok  # NaN dropped
    assert not check_topk(row, None, 3, torch.tensor([[3, 4, 2]], dtype=torch.int32)).ok


def test_valid_neg_inf_versus_garbage():
    row = torch.tensor([[1.0, -INF, -INF, NAN, 5.0]])
    lengths = torch.tensor([3], dtype=torch.int32)
    assert check_topk(row, lengths, 2, torch.tensor([[0, 2]], dtype=torch.int32)).ok
    assert not check_topk(row, lengths, 2, torch.tensor([[0, 3]], dtype=torch.int32)).ok
    assert not check_topk(row, lengths, 2, torch.tensor([[0, 4]], dtype=torch.int32)).ok


def test_accepts_numpy_inputs():
    w, idx = _normal()
    assert check_topk(w.logits.numpy(), w.lengths.numpy(), idx.shape[1], idx.numpy()).ok


def test_bad_rows_counts_every_bad_row():
    w, idx = _normal(rows=8, mode=LengthMode.FIXED)
    bad = idx.clone()
    bad[[1, 4, 6], 0] = -1
    r = check_topk(w.logits, w.lengths, idx.shape[1], bad)
    assert r.bad_rows == 3 and "row 1" in r.reason


# ---- deliberately wrong implementations --------------------------------------------------

@pytest.mark.parametrize("dist", [Distribution.NORMAL, Distribution.RELU_PLATEAU, Distribution.TIE_HEAVY])
def test_check_catches_an_implementation_that_ignores_lengths(dist):
    w = make_workload(WorkloadSpec(8, 2000, 64, dist, LengthMode.RAGGED, seed=4))
    result = check_topk(w.logits, w.lengths, 64, IgnoresLengths()(w.logits, 64, w.lengths_arg))
    assert not result.ok and "outside [0, length)" in result.reason
    assert result.bad_rows >= 6  # rows shorter than the width select garbage


def test_ignoring_lengths_is_harmless_on_fixed_rows():
    w = make_workload(WorkloadSpec(4, 2000, 64, seed=4))
    assert check_topk(w.logits, w.lengths, 64, IgnoresLengths()(w.logits, 64, w.lengths_arg)).ok


@pytest.mark.parametrize("mode", list(LengthMode))
def test_check_catches_k_minus_one_correct_plus_one_wrong(mode):
    w = make_workload(WorkloadSpec(5, 3000, 100, Distribution.NORMAL, mode, seed=7))
    out = OneWrong()(w.logits, 100, w.lengths_arg)
    truth = reference(w.logits, w.lengths, 100)
    # really k-1 of k right in every row
    for r in range(5):
        assert len(set(out[r].tolist()) & set(truth[r].tolist())) == 99
    result = check_topk(w.logits, w.lengths, 100, out)
    assert not result.ok and result.bad_rows == 5 and "differ" in result.reason


def test_one_checker_serves_several_answers():
    """TopkChecker computes the reference once; each answer is judged as check_topk judges it."""
    w, idx = _normal(rows=5, width=400, k=30)
    w.lengths[1] = 12  # one short row as well
    idx = reference(w.logits, w.lengths, 30)
    checker = TopkChecker(w.logits, w.lengths, 30)
    bad = idx.clone()
    bad[3, 0] = bad[3, 1]
    for answer in (idx, bad, idx.to(torch.int64), idx[:, :5], idx):
        assert checker.check(answer) == check_topk(w.logits, w.lengths, 30, answer)
    assert checker.check(idx).ok and not checker.check(bad).ok
