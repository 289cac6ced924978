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
        self._out: torch.Tensor | None = None

    def run(self) -> None:
        self._out = self._fn(self._logits, self._lengths, self._k)

    def result(self) -> torch.Tensor:
        assert self._out is not None
        return self._out


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

    def _prepare(self, logits, lengths, k):
        return _Runner(type(self).fn, logits, lengths, k)


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
    rows, width = logits.shape
    if lengths is None:
        x = logits
    else:
        cols = torch.arange(width).unsqueeze(0)
        x = torch.where(cols < lengths.to(torch.int64).unsqueeze(1), logits, torch.full_like(logits, float("-inf")))
    return finish_indices(torch.topk(x, min(k, width), dim=1).indices, lengths, width, k)


ENTRIES = {
    "ignores-lengths": "fake_impls:IgnoresLengths",
    "one-wrong": "fake_impls:OneWrong",
    "raises": "fake_impls:Raises",
    "small-k": "fake_impls:SmallK",
}
