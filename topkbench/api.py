"""The public entry points of docs/design.md section 3: ``topk`` and ``implementations``.

Inputs may be torch tensors, CuPy arrays or NumPy arrays; they are wrapped zero-copy as torch
tensors (DLPack for CuPy, ``torch.from_numpy`` for NumPy) and the indices come back in the
input's library on the input's device. CuPy inputs run on CuPy's current stream.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any

import numpy as np
import torch

from topkbench import dispatch
from topkbench.cuda import loader
from topkbench.errors import UsageError
from topkbench.impls import Device, registry
from topkbench.provenance import device_slug


def implementations() -> list[str]:
    """Names of the implementations usable on this machine."""
    return registry.available()


def _library(array: Any, argument: str = "logits") -> str:
    if isinstance(array, torch.Tensor):
        return "torch"
    if isinstance(array, np.ndarray):
        return "numpy"
    if type(array).__module__.split(".")[0] == "cupy":
        return "cupy"
    raise UsageError(f"{argument} must be a torch tensor, CuPy array or NumPy array, got {type(array).__name__}")


def _to_torch(array: Any, library: str, argument: str) -> torch.Tensor:
    if library == "torch":
        return array
    if library == "numpy":
        if not array.dtype.isnative:
            raise UsageError(f"{argument} must be in the machine's byte order, got {array.dtype.str} "
                             f"(use {argument}.astype({array.dtype.newbyteorder('=').name!r}))")
        if any(stride < 0 for stride in array.strides):
            raise UsageError(f"{argument} has negative strides (a reversed view); pass a copy "
                             f"(numpy.ascontiguousarray)")
        return torch.from_numpy(array)
    try:
        return torch.from_dlpack(array)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(f"{argument}: this CuPy array cannot be shared with torch ({exc})") from None


def _as_k(k: Any) -> int:
    """k as a Python int: any integer type (NumPy's included), never a bool, float or None."""
    if isinstance(k, bool):
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    try:
        value = operator.index(k)
    except TypeError:
        raise UsageError(f"k must be an integer >= 1, got {k!r} ({type(k).__name__})") from None
    if value < 1:
        raise UsageError(f"k must be an integer >= 1, got {value}")
    return value


def _check_host_lengths(lengths: torch.Tensor, width: int) -> None:
    """Lengths on the host are checked (device-side ones are clamped by the kernels: checking them
    would need a host sync, which a CUDA graph cannot hold)."""
    if lengths.device.type != "cpu" or lengths.numel() == 0 or lengths.dtype.is_floating_point:
        return
    low, high = int(lengths.min()), int(lengths.max())
    if low < 0 or high > width:
        raise UsageError(f"lengths must lie in [0, {width}] (the width of logits), got values from {low} to {high}")


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


#: The suffix of a kernel's non-deterministic build (atomic output slots), e.g. radix-nondet.
NONDET_SUFFIX = "-nondet"


@functools.lru_cache(maxsize=16)
def _auto_candidates(kind: Device, names: tuple[str, ...]) -> tuple[str, ...]:
    """The built-ins usable here on ``kind``: auto picks among these only (a plugin is chosen by
    name, or by a module fitted to allow it). Probing availability imports CuPy, so it is done once
    per set of registered names, not on every decode step."""
    return tuple(n for n in names if registry.is_builtin(n) and registry.get(n).device is kind
                 and registry.unavailable_reason(n) is None)


def resolve_auto(rows: int, width: int, k: int, device: torch.device, deterministic: bool = True) -> str:
    """The implementation ``impl="auto"`` picks: the fitted module for this GPU when installed,
    else the documented default (see topkbench.dispatch). With ``deterministic`` a pick of a
    kernel's ``-nondet`` build becomes the kernel itself."""
    kind = Device.CUDA if device.type == "cuda" else Device.CPU
    candidates = list(_auto_candidates(kind, tuple(registry.names())))
    if not candidates:
        raise UsageError(f"no implementation usable here runs on {kind.value}")
    index = loader.device_index(device) if kind is Device.CUDA else None
    pick = dispatch.choose(rows, width, k, candidates, device_slug(index))
    if deterministic and pick.endswith(NONDET_SUFFIX) and pick.removesuffix(NONDET_SUFFIX) in candidates:
        return pick.removesuffix(NONDET_SUFFIX)
    return pick


def topk(logits: Any, k: int, *, lengths: Any = None, impl: str = "auto", deterministic: bool = True) -> Any:
    """Indices of the k largest values of each row of ``logits`` (docs/design.md section 3).

    ``logits``: 2-D float32 (torch, CuPy or NumPy), rows contiguous; ``lengths``: int32 per row
    (row r is valid in [0, lengths[r]); None means full width). Lengths on the host must lie in
    [0, width] (UsageError otherwise); lengths on the GPU are not checked, since that would need a
    host sync: values outside [0, width] are clamped to it. ``k``: any integer >= 1.

    Returns int32 [rows, k] in the input's library; rows shorter than k give 0..n-1 then -1. The
    kernels per_row, large_context, radix and filtered are deterministic: among scores equal to the k-th
    largest, the lowest indices win, and the output order is the same on every call (the
    ``-nondet`` variants and torch.topk promise neither). ``impl="auto"`` uses the dispatch module
    fitted for this GPU if one is installed (max_seq_len is the width). ``deterministic`` steers
    auto: True (the default) never runs a ``-nondet`` build; False lets a module fitted with them
    pick one where it was measured faster. An implementation named by ``impl`` runs as it is.

    No host synchronisation on the GPU path: after one warm-up call (which compiles the kernel),
    a call can be captured in a CUDA graph and replayed with new scores and lengths written in
    place. ``radix`` keeps a per-device workspace: its launches on one GPU must be ordered (one
    stream at a time, or streams that wait on each other).
    """
    library = _library(logits)
    x = _to_torch(logits, library, "logits")
    n = None if lengths is None else _to_torch(lengths, _library(lengths, "lengths"), "lengths")
    k = _as_k(k)
    if not isinstance(impl, str):
        raise UsageError(f"impl must be an implementation name or 'auto', got {impl!r}")
    if x.dim() != 2:
        raise UsageError(f"logits must be 2-D [rows, width], got shape {tuple(x.shape)}")
    if n is not None:
        _check_host_lengths(n, x.shape[1])
    if not isinstance(deterministic, bool):
        raise UsageError(f"deterministic must be True or False, got {deterministic!r}")
    name = resolve_auto(x.shape[0], x.shape[1], k, x.device, deterministic) if impl == "auto" else impl
    implementation = registry.require(name)
    with _stream_for(library):
        out = implementation(x, k, n)
    return _from_torch(out, library)
