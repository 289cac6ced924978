"""The exactness check of docs/design.md section 3, shared by the tests, ``verify`` and the sweep.

For a row with n = lengths[r] > k: the k indices are distinct, lie in [0, n), and the sorted keys
of their values equal the sorted keys of the k largest values of row[:n] (compared exactly: a
tolerance would hide dropped candidates). For n <= k: the first n slots hold a permutation of
0..n-1 and the rest are -1.

For an implementation that promises determinism the selected SET is checked too: among the
entries equal to the k-th largest value, the lowest indices must win (docs/design.md section 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topkbench.keys import float_keys


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""
    bad_rows: int = 0

    def __bool__(self) -> bool:
        return self.ok


def _first_bad(mask: torch.Tensor) -> int:
    return int(torch.nonzero(mask)[0, 0]) if bool(mask.any()) else -1


class TopkChecker:
    """The check of one (logits, lengths, k), with the reference top-k computed once, so that
    every implementation of a point is checked against it without recomputing it."""

    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> None:
        logits = torch.as_tensor(logits).detach()
        self.device = device = logits.device
        self.k = k
        self.rows, self.width = rows, width = logits.shape
        if lengths is None:
            lengths = torch.full((rows,), width, dtype=torch.int64, device=device)
        self.lengths = lengths = torch.as_tensor(lengths).detach().to(device=device, dtype=torch.int64)
        self.slots = torch.arange(k, dtype=torch.int64, device=device)
        self.short = short = lengths <= k  # rows that return every valid index plus -1 padding
        self.rows_short = torch.nonzero(short).flatten()
        self.long = long_ = ~short
        self.rows_long = torch.nonzero(long_).flatten()
        self.masked = self.ref_sorted = None
        self._tie_rank: torch.Tensor | None = None
        if bool(long_.any()):
            cols = torch.arange(width, dtype=torch.int64, device=device)
            keys = float_keys(logits[long_])
            valid = cols.unsqueeze(0) < lengths[long_].unsqueeze(1)
            #: keys of the long rows, -1 past each row's length
            self.masked = torch.where(valid, keys, torch.full_like(keys, -1))
            self.ref_sorted, _ = torch.sort(torch.topk(self.masked, k, dim=1).values, dim=1)

    def _lowest_index_tie_rank(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per long row: the k-th largest key, how many entries equal to it belong in the
        lowest-index set, and each entry's 1-based rank among the row's ties (computed once)."""
        threshold = self.ref_sorted[:, :1]
        if self._tie_rank is None:
            ties = self.masked == threshold
            self._tie_rank = torch.cumsum(ties.to(torch.int32), dim=1)
            self._ties_needed = (self.ref_sorted == threshold).sum(dim=1, keepdim=True)
        return threshold, self._ties_needed, self._tie_rank

    def check(self, indices: torch.Tensor, *, deterministic: bool = False) -> CheckResult:
        """Check ``indices`` against the contract; with ``deterministic`` also require that the
        ties at the k-th value are the lowest-index ones (the set is a function of the input)."""
        rows, k = self.rows, self.k
        indices = torch.as_tensor(indices).detach().to(self.device)
        if indices.dtype != torch.int32:
            return CheckResult(False, f"indices dtype is {indices.dtype}, expected int32", rows)
        if tuple(indices.shape) != (rows, k):
            return CheckResult(False, f"indices shape {tuple(indices.shape)}, expected {(rows, k)}", rows)

        idx = indices.to(torch.int64)
        slots = self.slots
        n = self.lengths.unsqueeze(1)
        problems: list[tuple[int, str]] = []
        bad_rows = 0

        # Short rows: first n slots a permutation of 0..n-1, then -1.
        if self.rows_short.numel():
            s_idx = idx[self.short]
            s_n = n[self.short]
            in_head = slots.unsqueeze(0) < s_n
            pad_bad = (~in_head & (s_idx != -1)).any(dim=1)
            sorted_head, _ = torch.sort(torch.where(in_head, s_idx, torch.full_like(s_idx, 1 << 40)), dim=1)
            expect = torch.where(in_head, slots.unsqueeze(0).expand_as(s_idx), torch.full_like(s_idx, 1 << 40))
            perm_bad = (sorted_head != expect).any(dim=1)
            bad_rows += int((pad_bad | perm_bad).sum())
            for mask, what in ((pad_bad, "slots past the row length are not -1"),
                               (perm_bad, "the first n slots are not a permutation of 0..n-1")):
                bad = _first_bad(mask)
                if bad >= 0:
                    problems.append((int(self.rows_short[bad]), what))

        if self.masked is not None:
            l_idx = idx[self.long]
            l_n = n[self.long]
            range_bad = ((l_idx < 0) | (l_idx >= l_n)).any(dim=1)
            sorted_idx, _ = torch.sort(l_idx, dim=1)
            dup_bad = (sorted_idx[:, 1:] == sorted_idx[:, :-1]).any(dim=1) if k > 1 else torch.zeros_like(range_bad)
            got = torch.gather(self.masked, 1, l_idx.clamp(0, self.width - 1))
            got_sorted, _ = torch.sort(got, dim=1)
            value_bad = (got_sorted != self.ref_sorted).any(dim=1) & ~range_bad
            tie_bad = torch.zeros_like(value_bad)
            if deterministic:
                threshold, needed, tie_rank = self._lowest_index_tie_rank()
                rank = torch.gather(tie_rank, 1, l_idx.clamp(0, self.width - 1))
                tie_bad = ((got == threshold) & (rank > needed)).any(dim=1) & ~(range_bad | dup_bad | value_bad)
            for mask, what in ((range_bad, "an index outside [0, length)"),
                               (dup_bad, "duplicate indices"),
                               (value_bad, "selected values differ from the true top-k"),
                               (tie_bad, "ties at the k-th value are not the lowest indices")):
                bad = _first_bad(mask)
                if bad >= 0:
                    problems.append((int(self.rows_long[bad]), what))
            bad_rows += int((range_bad | dup_bad | value_bad | tie_bad).sum())

        if not problems:
            return CheckResult(True)
        row, what = min(problems)
        return CheckResult(False, f"row {row} (length {int(self.lengths[row])}, k {k}): {what}", bad_rows)


def check_topk(
    logits: torch.Tensor,
    lengths: torch.Tensor | None,
    k: int,
    indices: torch.Tensor,
    *,
    deterministic: bool = False,
) -> CheckResult:
    """Check ``indices`` against the contract, on the device of ``logits`` (a GPU run is checked
    on the GPU: copying 100+ MB to the host per point would dominate a sweep)."""
    return TopkChecker(logits, lengths, k).check(indices, deterministic=deterministic)
