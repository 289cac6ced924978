"""The public entry points of DESIGN.md section 3: ``topk`` and ``implementations``.

Inputs may be torch tensors, CuPy arrays or NumPy arrays; they are wrapped zero-copy as torch
tensors (DLPack for CuPy, ``torch.from_numpy`` for NumPy) and the indices come back in the
input's library on the input's device. CuPy inputs run on CuPy's current stream.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from topkbench import dispatch
from topkbench.errors import UsageError
from topkbench.impls import Device, registry
from topkbench.provenance import device_slug


def implementations() -> list[str]:
    """Names of the implementations usable on this machine."""
    return registry.available()


def _library(array: Any) -> str:
    if isinstance(array, torch.Tensor):
        return "torch"
    if isinstance(array, np.ndarray):
        return "numpy"
    if type(array).__module__.split(".")[0] == "cupy":
        return "cupy"
    raise UsageError(f"expected a torch tensor, CuPy array or NumPy array, got {type(array).__name__}")


def _to_torch(array: Any, library: str) -> torch.Tensor:
    if library == "torch":
        return array
    if library == "numpy":
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


def _from_torch(tensor: torch.Tensor, library: str) -> Any:
    if library == "torch":
        return tensor
    if library == "numpy":
        return tensor.numpy()
    import cupy

    return cupy.from_dlpack(tensor)


def _stream_for(library: str) -> contextlib.AbstractContextManager:
    if library != "cupy":
        return contextlib.nullcontext()
    import cupy

    return torch.cuda.stream(torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr))


def resolve_auto(rows: int, width: int, k: int, device: torch.device) -> str:
    """The implementation ``impl="auto"`` picks: the fitted module for this GPU when installed,
    else the documented default (see topkbench.dispatch)."""
    kind = Device.CUDA if device.type == "cuda" else Device.CPU
    candidates = [n for n in registry.available() if registry.get(n).device is kind]
    if not candidates:
        raise UsageError(f"no implementation usable here runs on {kind.value}")
    index = (device.index if device.index is not None else torch.cuda.current_device()) if kind is Device.CUDA else None
    return dispatch.choose(rows, width, k, candidates, device_slug(index))


def topk(logits: Any, k: int, *, lengths: Any = None, impl: str = "auto") -> Any:
    """Indices of the k largest values of each row of ``logits`` (DESIGN.md section 3).

    ``logits``: 2-D float32 (torch, CuPy or NumPy), rows contiguous; ``lengths``: int32 per row
    (row r is valid in [0, lengths[r]); None means full width). Returns int32 [rows, k],
    unsorted, in the input's library; rows shorter than k give 0..n-1 then -1. ``impl="auto"``
    uses the dispatch module fitted for this GPU if one is installed (max_seq_len is the width).
    """
    library = _library(logits)
    x = _to_torch(logits, library)
    n = None if lengths is None else _to_torch(lengths, _library(lengths))
    if x.dim() != 2:
        raise UsageError(f"logits must be 2-D [rows, width], got shape {tuple(x.shape)}")
    name = resolve_auto(x.shape[0], x.shape[1], k, x.device) if impl == "auto" else impl
    implementation = registry.require(name)
    with _stream_for(library):
        out = implementation(x, k, n)
    return _from_torch(out, library)
