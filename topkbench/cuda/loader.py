"""Loading the CUDA sources in ``kernels/`` and compiling them with CuPy.

Sources are read through ``importlib.resources`` (package ``topkbench._kernel_sources``, which
setuptools maps onto the top-level ``kernels/`` folder), so a wheel install works. Local
``#include "..."`` lines are inlined before compiling: CuPy's kernel cache keys on the source
string and the options only, so inlining makes an edited header change the key and recompile.
The same expanded text (plus the defines) is hashed into ``kernel_hash``, stored on every result row.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
import warnings
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from topkbench.errors import DeviceError
from topkbench.impls.base import Runner

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)
CXX_STANDARD = "-std=c++17"


def sources_root() -> Traversable:
    """Where the .cu/.cuh files are: the installed package data, else the source checkout."""
    try:
        return importlib.resources.files("topkbench._kernel_sources")
    except ModuleNotFoundError:
        # Running from a checkout on PYTHONPATH without installing: kernels/ sits beside the package.
        return Path(__file__).resolve().parents[2] / "kernels"


def source_names() -> list[str]:
    """Every kernel translation unit (.cu) shipped with the package."""
    return sorted(p.name for p in sources_root().iterdir() if p.name.endswith(".cu"))


def _read(name: str) -> str:
    entry = sources_root() / name
    if not entry.is_file():
        raise FileNotFoundError(f"kernel source {name!r} not found in {sources_root()}")
    return entry.read_text(encoding="utf-8")


def expand_includes(name: str, _seen: set[str] | None = None) -> str:
    """The source of ``name`` with every local ``#include "x"`` replaced by x's text, once each."""
    seen = set() if _seen is None else _seen
    seen.add(name)

    def inline(match: re.Match[str]) -> str:
        header = match.group(1)
        if header in seen:
            return f"// {header} already included"
        return f"// ---- begin {header}\n{expand_includes(header, seen)}\n// ---- end {header}"

    return _INCLUDE.sub(inline, _read(name))


def define_options(defines: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f"-D{key}={value}" for key, value in sorted(defines.items()))


@functools.lru_cache(maxsize=None)
def _hash(name: str, options: tuple[str, ...]) -> str:
    digest = hashlib.sha256(expand_includes(name).encode())
    for option in options:
        digest.update(b"\0" + option.encode())
    return digest.hexdigest()[:16]


def kernel_hash(name: str, defines: Mapping[str, Any] | None = None) -> str:
    """Hash of the expanded source of ``name`` and its compile-time defines."""
    return _hash(name, define_options(defines or {}))


def require_cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise DeviceError(
            "CuPy is not installed, so the CUDA kernels cannot run",
            hint="pip install 'topkbench[cuda12]' or 'topkbench[cuda13]' to match your CUDA",
        ) from exc
    return cupy


def cupy_unavailable_reason() -> str | None:
    """Why the CuPy kernels cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (extras cuda12 / cuda13)"
    return None


@functools.lru_cache(maxsize=None)
def device_properties(device_index: int) -> dict[str, Any]:
    """CuPy's property dict of a CUDA device, read once per process (the runtime call is slow and
    the values never change)."""
    return require_cupy().cuda.runtime.getDeviceProperties(device_index)


@functools.lru_cache(maxsize=None)
def _module(name: str, options: tuple[str, ...], device_index: int) -> Any:
    cupy = require_cupy()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=expand_includes(name), options=(CXX_STANDARD, *options))


def get_kernel(name: str, function: str, defines: Mapping[str, Any] | None = None, device_index: int | None = None) -> Any:
    """The compiled ``extern "C"`` function ``function`` of source ``name`` with ``defines``."""
    index = torch.cuda.current_device() if device_index is None else device_index
    return _module(name, define_options(defines or {}), index).get_function(function)


def device_index(where: torch.Tensor | torch.device) -> int:
    """The CUDA device of a tensor, or a CUDA torch.device's (the current device for a bare ``cuda``)."""
    device = where.device if isinstance(where, torch.Tensor) else where
    return device.index if device.index is not None else torch.cuda.current_device()


def allow_dynamic_shared(kernel: Any, nbytes: int, device_index: int) -> None:
    """Let ``kernel`` (loaded on ``device_index``) launch with at least ``nbytes`` of dynamic shared
    memory: past 48 KB a kernel must opt in (cudaFuncSetAttribute). The limit is only ever raised,
    so callers that need different amounts of one kernel do not undo each other. CuPy 14
    deprecates the attribute on the kernel object but still sets it, so the warning is silenced."""
    with warnings.catch_warnings(), require_cupy().cuda.Device(device_index):
        warnings.simplefilter("ignore", DeprecationWarning)
        if kernel.max_dynamic_shared_size_bytes < nbytes:
            kernel.max_dynamic_shared_size_bytes = int(nbytes)


def pointer(tensor: torch.Tensor | None) -> np.uint64:
    """A kernel pointer argument for a torch tensor (null for None, e.g. 'no lengths')."""
    return np.uint64(0 if tensor is None else tensor.data_ptr())


@functools.lru_cache(maxsize=64)
def _cupy_stream(stream_ptr: int, device_index: int) -> Any:
    """A CuPy view of a torch stream (cached: torch reuses a small pool of stream handles)."""
    cupy = require_cupy()
    from_external = getattr(cupy.cuda.Stream, "from_external", None)  # CuPy >= 14
    if from_external is not None:
        try:
            return from_external(stream_ptr, device_index)
        except TypeError:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(stream_ptr, device_index)


def launch(kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...], shared_mem: int = 0,
           device: torch.device | None = None) -> None:
    """Launch on ``device``'s current torch stream (the current device when None), so that torch's
    CUDA-graph capture records it and tensors on another GPU are not read from this one."""
    if device is not None and device.index is not None and device.index != torch.cuda.current_device():
        with torch.cuda.device(device):
            launch(kernel, grid, block, args, shared_mem)
        return
    stream = torch.cuda.current_stream()
    with _cupy_stream(stream.cuda_stream, stream.device.index or 0):
        kernel(grid, block, args, shared_mem=shared_mem)


class KernelRunner(Runner):
    """One launch of a compiled kernel over buffers fixed at prepare time (graph capturable)."""

    def __init__(self, kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 output: torch.Tensor, keep: tuple[torch.Tensor | None, ...], shared_mem: int = 0) -> None:
        self._kernel = kernel
        self._grid = grid
        self._block = block
        self._args = args
        self._shared_mem = shared_mem
        #: int32 [rows, k], written in full by every run().
        self.output = output
        # The launch arguments are raw pointers: hold the tensors they point into.
        self._keep = keep

    @property
    def kernel(self) -> Any:
        """The compiled CuPy function this runner launches (its attributes: registers, local memory...)."""
        return self._kernel

    def run(self) -> None:
        launch(self._kernel, self._grid, self._block, self._args, self._shared_mem, self.output.device)

    def result(self) -> torch.Tensor:
        return self.output
