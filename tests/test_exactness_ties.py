"""The deterministic half of the exactness check: ties at the k-th value must be the lowest indices."""

import torch

from topkbench.exactness import TopkChecker, check_topk

ROW = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])


def _idx(*values: int) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.int32)


def test_lowest_index_ties_pass_in_any_order():
    assert check_topk(ROW, None, 3, _idx(3, 1, 2), deterministic=True).ok


def test_a_higher_tie_passes_the_value_check_but_not_the_deterministic_one():
    assert check_topk(ROW, None, 3, _idx(1, 2, 5)).ok
    result = check_topk(ROW, None, 3, _idx(1, 2, 5), deterministic=True)
    assert not result.ok and "lowest indices" in result.reason


def test_ties_count_from_the_row_start_with_lengths_and_many_rows():
    rows = torch.tensor([[5.0, 1.0, 1.0, 1.0, 1.0, 9.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    lengths = torch.tensor([5, 6], dtype=torch.int32)
    checker = TopkChecker(rows, lengths, 2)
    assert checker.check(torch.tensor([[0, 1], [0, 1]], dtype=torch.int32), deterministic=True).ok
    bad = checker.check(torch.tensor([[0, 1], [0, 2]], dtype=torch.int32), deterministic=True)
    assert not bad.ok and bad.reason.startswith("row 1") and bad.bad_rows == 1


def test_ties_that_are_all_selected_are_not_a_choice():
    # every 2.0 is in the top 5: the set is forced, so any order is deterministic
    assert check_topk(ROW, None, 5, _idx(5, 3, 2, 1, 0), deterministic=True).ok
