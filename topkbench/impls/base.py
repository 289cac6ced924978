"""The interface every top-k implementation keeps (docs/design.md section 3).

Tensors inside topkbench are torch tensors (CuPy and NumPy inputs are wrapped zero-copy at the
public API). An implementation is used in two steps so that the timed region holds only the
selection itself: ``prepare`` validates the inputs and allocates the output and any workspace,
then the returned :class:`Runner`'s ``run()`` does the selection. For CUDA implementations
``run()`` must be CUDA-graph capturable: it launches on ``torch.cuda.current_stream()``, never
synchronises with the host and never allocates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import ClassVar

import torch

from topkbench.errors import UnsupportedError, UsageError


class Device(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"


#: Version of the implementation interface (Implementation, Runner). A plugin written against
#: version N keeps working with every topkbench whose MIN_INTERFACE_VERSION <= N <=
#: INTERFACE_VERSION (docs/plugins.md).
INTERFACE_VERSION = 1
MIN_INTERFACE_VERSION = 1


class Runner(ABC):
    """A prepared selection over fixed input and output buffers.

    ``output`` is the buffer ``run()`` writes in full on every call (for the kernels the int32
    [rows, k] result itself; for library baselines whatever raw buffer ``result()`` is derived
    from). The harness fills it with a poison pattern that no valid answer has before every
    checked run, so an implementation that skips writing part of it cannot pass the check with a
    stale answer left in memory. The input tensors stay the same between runs but their contents
    change (new scores are written in place, as a CUDA-graph replay sees them): ``run()`` must read
    them every time, never reuse what ``prepare`` computed from them.
    """

    output: torch.Tensor

    @abstractmethod
    def run(self) -> None:
        """Select into the output buffer (graph capturable for CUDA runners)."""

    @abstractmethod
    def result(self) -> torch.Tensor:
        """The int32 [rows, k] indices of the last ``run()`` (may convert; not timed)."""


class Implementation(ABC):
    """One top-k implementation: a name in the registry plus ``prepare``."""

    name: ClassVar[str]
    device: ClassVar[Device]
    summary: ClassVar[str]
    #: Largest k accepted, or None for any k.
    max_k: ClassVar[int | None] = None
    #: ``run()`` can be captured in a CUDA graph (no host sync, no allocation). An implementation
    #: that cannot is timed eagerly and its rows say so.
    graph_capturable: ClassVar[bool] = True
    #: Among entries equal to the k-th largest value the lowest indices win, and the output order
    #: is the same on every call: the exactness check then compares index sets, not only values.
    deterministic: ClassVar[bool] = False
    #: The interface version this implementation was written against.
    interface_version: ClassVar[int] = INTERFACE_VERSION
    #: The implementation's own version, recorded with its results (None: the module's
    #: ``__version__`` or its distribution's).
    version: ClassVar[str | None] = None

    def unavailable_reason(self) -> str | None:
        """Why this implementation cannot run on this machine, or None when it can."""
        return None

    def unsupported_reason(self, rows: int, width: int, k: int) -> str | None:
        """Why this implementation cannot run this shape, or None when it can."""
        if self.max_k is not None and k > self.max_k:
            return f"k={k} is above this implementation's limit of {self.max_k}"
        return None

    def kernel_hash(self) -> str | None:
        """A hash of the kernel source and every header it includes, or None (library code)."""
        return None

    @abstractmethod
    def _prepare(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> Runner:
        """Build a runner over validated inputs on this implementation's device.

        ``lengths`` is None when every row is full width; it is then a null pointer for kernels.
        """

    def prepare(self, logits: torch.Tensor, lengths: torch.Tensor | None, k: int) -> Runner:
        """Validate the inputs against the contract and build a runner over them."""
        logits, lengths = validate_inputs(logits, lengths, k, self.device)
        rows, width = logits.shape
        reason = self.unsupported_reason(rows, width, k)
        if reason is not None:
            raise UnsupportedError(f"{self.name}: {reason}")
        return self._prepare(logits, lengths, k)

    def __call__(self, logits: torch.Tensor, k: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
        runner = self.prepare(logits, lengths, k)
        runner.run()
        return runner.result()


def validate_inputs(
    logits: torch.Tensor, lengths: torch.Tensor | None, k: int, device: Device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the contract's input rules (shapes, dtypes, devices; not the length values, which
    would need a device synchronisation: kernels clamp them to [0, width] instead)."""
    if not isinstance(logits, torch.Tensor):
        raise UsageError(f"logits must be a tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise UsageError(f"logits must be 2-D [rows, width], got shape {tuple(logits.shape)}")
    if logits.dtype != torch.float32:
        raise UsageError(f"logits must be float32, got {logits.dtype}")
    rows, width = logits.shape
    if rows < 1 or width < 1:
        raise UsageError(f"logits must have at least one row and one column, got {tuple(logits.shape)}")
    if logits.stride(1) != 1 or logits.stride(0) < width:
        raise UsageError("logits rows must be contiguous (stride(1) == 1, stride(0) >= width)")
    if (logits.device.type == "cuda") != (device is Device.CUDA):
        raise UsageError(f"this implementation runs on {device.value}, the logits are on {logits.device}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor):
            raise UsageError(f"lengths must be a tensor, got {type(lengths).__name__}")
        if lengths.dtype != torch.int32 or lengths.dim() != 1 or lengths.numel() != rows:
            raise UsageError(f"lengths must be int32 of shape [{rows}], got {lengths.dtype} {tuple(lengths.shape)}")
        if lengths.device != logits.device:
            raise UsageError(f"lengths are on {lengths.device}, logits on {logits.device}")
        if not lengths.is_contiguous():
            lengths = lengths.contiguous()
    return logits, lengths
