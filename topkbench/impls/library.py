"""Baselines built on library calls: ``torch`` (torch.topk on CUDA), ``torch-cpu``, ``numpy``.

What is timed is what a user of these libraries would run: torch.topk(sorted=False) over the
rows, preceded by a mask of the entries past each row's length when lengths are given (the
garbage there must not be selected), and numpy.argpartition likewise. Converting the int64
indices to int32 and the -1 padding of rows shorter than k happen in ``result()``, untimed; so
does the rare swap of a masked pick past a row's length for a valid -inf score (the -inf mask ties
with valid -inf scores when the k-th largest valid value is -inf).
"""

from __future__ import annotations

import numpy as np
import torch

from topkbench.impls.base import Device, Implementation, Runner


def finish_indices(indices: torch.Tensor, lengths: torch.Tensor | None, width: int, k: int,
                   logits: torch.Tensor | None = None) -> torch.Tensor:
    """int32 [rows, k] from raw top-min(k, width) indices: rows of length <= k become 0..n-1, -1...

    With ``logits`` and ``lengths``, masked picks past a row's length are replaced (see
    :func:`_replace_masked_picks`).
    """
    rows = indices.shape[0]
    out = torch.full((rows, k), -1, dtype=torch.int32, device=indices.device)
    out[:, : indices.shape[1]] = indices.to(torch.int32)
    n = (lengths.to(torch.int64) if lengths is not None
         else torch.full((rows,), width, dtype=torch.int64, device=indices.device))
    if lengths is not None and logits is not None:
        _replace_masked_picks(out, logits, n, k)
    short = n <= k
    if bool(short.any()):
        slots = torch.arange(k, device=indices.device).unsqueeze(0)
        padded = torch.where(slots < n.unsqueeze(1), slots, torch.full_like(slots, -1)).to(torch.int32)
        out[short] = padded[short]
    return out


def _replace_masked_picks(out: torch.Tensor, logits: torch.Tensor, n: torch.Tensor, k: int) -> None:
    """Swap picks past a row's length for unpicked valid -inf scores, in place.

    The masks below give the entries past a row's length -inf, which ties them with valid -inf
    scores: when the k-th largest valid value is -inf, the library may pick a masked entry. Every
    valid value above -inf is then already picked, so each masked pick has an unpicked valid -inf
    to take its place. Rare (only rows whose top k reach -inf), and outside the timed ``run()``.
    """
    bad = (out.to(torch.int64) >= n.unsqueeze(1)) & (n > k).unsqueeze(1)
    if not bool(bad.any()):
        return
    for r in torch.nonzero(bad.any(dim=1)).flatten().tolist():
        length = int(n[r])
        picked = torch.zeros(length, dtype=torch.bool, device=out.device)
        keep = out[r][~bad[r]].to(torch.int64)
        picked[keep] = True
        spare = torch.nonzero((logits[r, :length] == float("-inf")) & ~picked).flatten()
        slots = torch.nonzero(bad[r]).flatten()
        out[r, slots] = spare[: slots.numel()].to(torch.int32)


def mask_past_length(logits: torch.Tensor, lengths: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    # A scalar fill: a full [rows, width] tensor of -inf would add a write pass to every timed run.
    return torch.where(columns < lengths.unsqueeze(1), logits, float("-inf"))


class _TorchTopkRunner(Runner):
    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> None:
        self._logits = logits
        self._lengths = lengths
        self._k = k
        self._k_eff = min(k, logits.shape[1])
        self._columns = torch.arange(logits.shape[1], device=logits.device, dtype=torch.int32).unsqueeze(0)
        self._indices: torch.Tensor | None = None

    def run(self) -> None:
        x = self._logits if self._lengths is None else mask_past_length(self._logits, self._lengths, self._columns)
        self._indices = torch.topk(x, self._k_eff, dim=1, sorted=False).indices

    def result(self) -> torch.Tensor:
        assert self._indices is not None, "run() first"
        return finish_indices(self._indices, self._lengths, self._logits.shape[1], self._k, self._logits)


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
        self._indices: np.ndarray | None = None

    def run(self) -> None:
        x = self._x
        width = x.shape[1]
        k = min(self._k, width)
        if self._n is not None:
            x = np.where(self._columns < self._n[:, None], x, np.float32(-np.inf))
        # argpartition ranks NaN last (largest), as the contract wants.
        self._indices = np.argpartition(x, width - k, axis=1)[:, width - k:]

    def result(self) -> torch.Tensor:
        assert self._indices is not None, "run() first"
        return finish_indices(torch.from_numpy(self._indices), self._lengths, self._x.shape[1], self._k,
                              self._torch_logits)


class NumpyArgpartition(Implementation):
    name = "numpy"
    device = Device.CPU
    summary = "numpy.argpartition on the CPU"

    def _prepare(self, logits, lengths, k):
        return _ArgpartitionRunner(logits, lengths, k)
