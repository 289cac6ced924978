"""Deliberately broken CPU implementations for tests (registered by monkeypatching the registry).

Import path: ``fake_impls:<Class>`` (pytest puts tests/ on sys.path; subprocesses get it through
PYTHONPATH).
"""

from __future__ import annotations

import torch

from topkbench.impls.base import Device, Implementation, Runner
from topkbench.impls.library import finish_indices


class _Runner(Runner):
    def __init__(self, fn, logits, lengths, k):
        self._fn, self._logits, self._lengths, self._k = fn, logits, lengths, k
        self.output = torch.empty((logits.shape[0], k), dtype=torch.int32)

    def run(self) -> None:
        self.output.copy_(self._fn(self._logits, self._lengths, self._k))

    def result(self) -> torch.Tensor:
        return self.output


class _LeftoverRunner(_Runner):
    """Finds the correct answer already in its output buffer, as a buffer recycled by the
    allocator from another implementation can hold it; ``rows_written`` says how much of it
    run() then writes: without the harness's poison, such a runner passes the check."""

    rows_written = 0.0

    def __init__(self, fn, logits, lengths, k):
        super().__init__(fn, logits, lengths, k)
        self.output.copy_(_one_wrong_free(logits, lengths, k))

    def run(self) -> None:
        rows = int(self.output.shape[0] * self.rows_written)
        if rows:
            self.output[:rows] = _one_wrong_free(self._logits, self._lengths, self._k)[:rows]


class _NothingRunner(_LeftoverRunner):
    rows_written = 0.0


class _HalfRunner(_LeftoverRunner):
    rows_written = 0.5


class _PrecomputedRunner(_Runner):
    """Selects once at prepare and copies that answer in every run(): every element is written
    (so the poison does not catch it) and it is exact for the inputs it was prepared on, but the
    indices are stale once the scores change in place, as in a CUDA-graph replay."""

    def __init__(self, fn, logits, lengths, k):
        super().__init__(fn, logits, lengths, k)
        self._answer = _one_wrong_free(logits, lengths, k)

    def run(self) -> None:
        self.output.copy_(self._answer)


def _ignore_lengths(logits, lengths, k):
    """torch.topk over the whole width: selects the garbage past each row's length."""
    idx = torch.topk(logits, min(k, logits.shape[1]), dim=1).indices
    return finish_indices(idx, lengths, logits.shape[1], k)


def _one_wrong(logits, lengths, k):
    """The true top-k, except that the smallest selected value is swapped for a smaller one."""
    rows, width = logits.shape
    n = lengths.to(torch.int64) if lengths is not None else torch.full((rows,), width, dtype=torch.int64)
    cols = torch.arange(width).unsqueeze(0)
    x = torch.where(cols < n.unsqueeze(1), logits, torch.full_like(logits, float("-inf")))
    order = torch.sort(x, dim=1, descending=True, stable=True).indices
    idx = order[:, :k].clone()
    for r in range(rows):
        if int(n[r]) > k:
            values = x[r, order[r]]
            smaller = torch.nonzero(values < values[k - 1]).flatten()
            if smaller.numel():
                idx[r, k - 1] = order[r, int(smaller[0])]
    return finish_indices(idx, lengths, width, k)


def _raise(logits, lengths, k):
    raise RuntimeError("kaboom: deliberate failure")


class _Fake(Implementation):
    device = Device.CPU
    fn = None
    runner = _Runner

    def _prepare(self, logits, lengths, k):
        return type(self).runner(type(self).fn, logits, lengths, k)


class WritesNothing(_Fake):
    name = "writes-nothing"
    summary = "test: run() writes nothing (a correct answer is left over in its buffer)"
    runner = _NothingRunner


class WritesHalf(_Fake):
    name = "writes-half"
    summary = "test: run() writes only the first half of the rows"
    runner = _HalfRunner


class StaleIndices(_Fake):
    name = "stale-indices"
    summary = "test: selects at prepare, run() copies that answer (stale once the scores change)"
    runner = _PrecomputedRunner


class CorrectDeterministic(_Fake):
    """Exact, and declares the lowest-index tie rule it keeps (a stable descending sort)."""

    name = "correct-deterministic"
    summary = "test: stable sort, lowest-index ties"
    deterministic = True
    fn = staticmethod(lambda logits, lengths, k: _lowest_index_topk(logits, lengths, k))


class ClaimsDeterministic(_Fake):
    """Exact values, but picks the highest-index ties while declaring determinism."""

    name = "claims-deterministic"
    summary = "test: highest-index ties, declared deterministic"
    deterministic = True
    fn = staticmethod(lambda logits, lengths, k: _highest_index_topk(logits, lengths, k))


class IgnoresLengths(_Fake):
    name = "ignores-lengths"
    summary = "test: ignores lengths, selects garbage"
    fn = staticmethod(_ignore_lengths)


class OneWrong(_Fake):
    name = "one-wrong"
    summary = "test: k-1 correct indices and one wrong"
    fn = staticmethod(_one_wrong)


class Raises(_Fake):
    name = "raises"
    summary = "test: raises in run()"
    fn = staticmethod(_raise)


class SmallK(_Fake):
    """Correct (torch.topk), but says it cannot do k above 4."""

    name = "small-k"
    summary = "test: max_k 4"
    max_k = 4
    fn = staticmethod(lambda logits, lengths, k: _one_wrong_free(logits, lengths, k))


def _one_wrong_free(logits, lengths, k):
    width = logits.shape[1]
    return finish_indices(torch.topk(_masked(logits, lengths), min(k, width), dim=1).indices, lengths, width, k)


def _masked(logits, lengths):
    rows, width = logits.shape
    if lengths is None:
        return logits
    cols = torch.arange(width).unsqueeze(0)
    return torch.where(cols < lengths.to(torch.int64).unsqueeze(1), logits, torch.full_like(logits, float("-inf")))


def _lowest_index_topk(logits, lengths, k):
    x = _masked(logits, lengths)
    x = torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)  # no NaN in these tests' data
    order = torch.sort(x, dim=1, descending=True, stable=True).indices[:, :k]
    return finish_indices(order, lengths, logits.shape[1], k)


def _highest_index_topk(logits, lengths, k):
    x = _masked(logits, lengths).flip(1)
    order = torch.sort(x, dim=1, descending=True, stable=True).indices[:, :k]
    flipped = logits.shape[1] - 1 - order
    return finish_indices(flipped, lengths, logits.shape[1], k)


ENTRIES = {
    "writes-nothing": "fake_impls:WritesNothing",
    "writes-half": "fake_impls:WritesHalf",
    "stale-indices": "fake_impls:StaleIndices",
    "correct-deterministic": "fake_impls:CorrectDeterministic",
    "claims-deterministic": "fake_impls:ClaimsDeterministic",
    "ignores-lengths": "fake_impls:IgnoresLengths",
    "one-wrong": "fake_impls:OneWrong",
    "raises": "fake_impls:Raises",
    "small-k": "fake_impls:SmallK",
}
