"""Baselines built on library calls: ``torch`` (torch.topk on CUDA), ``torch-cpu``, ``numpy``.

What is timed is what a user of these libraries would run: torch.topk(sorted=False) over the
rows, preceded by a mask of the entries past each row's length when lengths are given (the
garbage there must not be selected), and numpy.argpartition likewise. Converting the int64
indices to int32 and the -1 padding of rows shorter than k happen in ``result()``, untimed; so
does settling the picks of -inf scores (the -inf mask ties with valid -inf scores when the k-th
largest valid value is -inf). ``run()`` writes into buffers fixed at prepare (``Runner.output``,
which the harness poisons), and ``result()`` has no host sync, so ``topk(impl="torch")`` can be
captured in a CUDA graph.
"""

from __future__ import annotations

import numpy as np
import torch

from topkbench.impls.base import Device, Implementation, Runner


def finish_indices(indices: torch.Tensor, lengths: torch.Tensor | None, width: int, k: int,
                   logits: torch.Tensor | None = None) -> torch.Tensor:
    """int32 [rows, k] from raw top-min(k, width) indices: rows of length <= k become 0..n-1, -1...

    With ``logits`` and ``lengths``, the picks of -inf scores are settled (see
    :func:`_settle_neg_inf_picks`). No host synchronisation: ``topkbench.topk(impl="torch")`` can
    be captured in a CUDA graph.
    """
    rows = indices.shape[0]
    out = torch.full((rows, k), -1, dtype=torch.int32, device=indices.device)
    out[:, : indices.shape[1]] = indices.to(torch.int32)
    slots = torch.arange(k, device=indices.device, dtype=torch.int64).unsqueeze(0)
    if lengths is None:
        if width > k:
            return out
        return torch.where(slots < width, slots, -1).to(torch.int32).expand(rows, k).contiguous()
    n = lengths.to(torch.int64).unsqueeze(1)
    if logits is not None:
        out = _settle_neg_inf_picks(out, logits, n, k)
    padded = torch.where(slots < n, slots, -1).to(torch.int32)
    return torch.where(n <= k, padded, out)


def _settle_neg_inf_picks(out: torch.Tensor, logits: torch.Tensor, n: torch.Tensor, k: int) -> torch.Tensor:
    """Give every slot that holds a -inf pick (a valid -inf score, or a masked entry past the
    row's length) the lowest-index valid -inf scores instead.

    The masks below give the entries past a row's length -inf, which ties them with valid -inf
    scores: when the k-th largest valid value is -inf, the library may pick a masked entry. Every
    valid value above -inf is then already picked, so the -inf slots are filled from the row's
    valid -inf scores in index order. Computed for every row without a branch on the data (a
    branch would need a host sync); rows whose picks are all above -inf are left as they are.
    """
    width = logits.shape[1]
    columns = torch.arange(width, device=logits.device, dtype=torch.int64).unsqueeze(0)
    valid_neg_inf = (logits == float("-inf")) & (columns < n)
    rank = torch.cumsum(valid_neg_inf, dim=1)  # how many valid -inf scores up to each column
    idx = out.to(torch.int64)
    picked = torch.gather(logits, 1, idx.clamp(0, width - 1))
    holds_neg_inf = (idx >= 0) & ((idx >= n) | (picked == float("-inf"))) & (n > k)
    ordinal = torch.cumsum(holds_neg_inf, dim=1)  # 1-based among the row's -inf slots
    settled = torch.searchsorted(rank, ordinal).clamp(max=width - 1)
    return torch.where(holds_neg_inf, settled.to(torch.int32), out)


def mask_past_length(logits: torch.Tensor, lengths: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    # A scalar fill: a full [rows, width] tensor of -inf would add a write pass to every timed run.
    return torch.where(columns < lengths.unsqueeze(1), logits, float("-inf"))


class _TorchTopkRunner(Runner):
    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> None:
        self._logits = logits
        self._lengths = lengths
        self._k = k
        rows, width = logits.shape
        k_eff = min(k, width)
        self._columns = torch.arange(width, device=logits.device, dtype=torch.int32).unsqueeze(0)
        # topk writes into buffers fixed at prepare: the harness poisons ``output`` before a check
        self._values = torch.empty((rows, k_eff), dtype=logits.dtype, device=logits.device)
        self.output = torch.empty((rows, k_eff), dtype=torch.int64, device=logits.device)

    def run(self) -> None:
        x = self._logits if self._lengths is None else mask_past_length(self._logits, self._lengths, self._columns)
        torch.topk(x, self.output.shape[1], dim=1, sorted=False, out=(self._values, self.output))

    def result(self) -> torch.Tensor:
        return finish_indices(self.output, self._lengths, self._logits.shape[1], self._k, self._logits)


class TorchCuda(Implementation):
    name = "torch"
    device = Device.CUDA
    summary = "torch.topk on the GPU (the baseline serving engines use today)"

    def unavailable_reason(self) -> str | None:
        return None if torch.cuda.is_available() else "no CUDA GPU visible to torch"

    def _prepare(self, logits, lengths, k):
        return _TorchTopkRunner(logits, lengths, k)


class TorchCpu(Implementation):
    name = "torch-cpu"
    device = Device.CPU
    summary = "torch.topk on the CPU"

    def _prepare(self, logits, lengths, k):
        return _TorchTopkRunner(logits, lengths, k)


class _ArgpartitionRunner(Runner):
    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> None:
        self._torch_logits = logits
        self._x = logits.numpy()
        self._lengths = lengths
        self._n = None if lengths is None else lengths.numpy()
        self._k = k
        self._columns = np.arange(self._x.shape[1])[None, :]
        # The selection is copied into a buffer fixed at prepare (a rows x k copy inside the timed
        # region) so that the harness can poison what run() must write.
        self.output = torch.empty((logits.shape[0], min(k, logits.shape[1])), dtype=torch.int64)
        self._out = self.output.numpy()

    def run(self) -> None:
        x = self._x
        width = x.shape[1]
        k = self._out.shape[1]
        if self._n is not None:
            x = np.where(self._columns < self._n[:, None], x, np.float32(-np.inf))
        # argpartition ranks NaN last (largest), as the contract wants.
        self._out[...] = np.argpartition(x, width - k, axis=1)[:, width - k:]

    def result(self) -> torch.Tensor:
        return finish_indices(self.output, self._lengths, self._x.shape[1], self._k, self._torch_logits)


class NumpyArgpartition(Implementation):
    name = "numpy"
    device = Device.CPU
    summary = "numpy.argpartition on the CPU"

    def _prepare(self, logits, lengths, k):
        return _ArgpartitionRunner(logits, lengths, k)
