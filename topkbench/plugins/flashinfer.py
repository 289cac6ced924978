"""FlashInfer's top-k, shipped in tree as an optional plugin (``pip install 'topkbench[flashinfer]'``).

What is measured is ``flashinfer.top_k_ragged_transform(logits, offsets=0, lengths, k)``, the call
SGLang's DeepSeek sparse indexer makes (``--dsa-topk-backend flashinfer``), written against
flashinfer-python 0.7.x. The ragged transform already keeps topkbench's output layout: int32
[rows, k], unsorted, and rows of length n <= k give 0..n-1 then -1.

Two things differ from calling the public function, both so that what is checked is what is timed:

- The backend is chosen once, in ``prepare``, with FlashInfer's own rules (its functions
  ``can_use_cub_topk`` and ``is_cub_ragged_transform_beneficial``), and then pinned. The public
  function re-decides on every call, and its rules differ inside CUDA-graph capture
  (``torch.cuda.is_current_stream_capturing()``): an eager check and a graph-replay timing of the
  public call can run different kernels. The rules applied are those for a captured call, because
  serving engines capture their decode steps and the sweep times by graph replay.
- ``run()`` calls the registered ops behind the public function with buffers allocated in
  ``prepare`` (output, offsets, full-width lengths, the 1 MiB multi-CTA row-state buffer, the CUB
  workspace), so that it writes ``self.output`` in full, allocates nothing and is graph capturable.

``FLASHINFER_TOPK_ALGO`` forces a backend in FlashInfer: "cub" (CUB's DeviceBatchedTopK), and in
the native C++ dispatch "filtered" (FilteredTopK) or "multi_cta" (RadixTopK); any other value
("default") keeps the native dispatch and drops CUB. ``flashinfer`` and
``flashinfer-deterministic`` honour the caller's setting, as FlashInfer does; the pinned variants
set it around their own calls (the C++ side reads it at launch, so a captured graph keeps the
choice). The SM100 "clusters" backend is not offered: it allocates on every call and FlashInfer
never captures it; where FlashInfer's dispatch would pick it, the point is stored unsupported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch

from topkbench.errors import UnsupportedError
from topkbench.impls.base import Device, Implementation, Runner

INSTALL_HINT = "FlashInfer is not installed: pip install 'topkbench[flashinfer]'"
ALGO_ENV = "FLASHINFER_TOPK_ALGO"
# Limits copied from FlashInfer 0.7.2 (a point outside them would silently run another backend):
_FILTERED_MAX_K = 2048  # FILTERED_TOPK_MAX_K, include/flashinfer/topk.cuh
_CUB_MAX_WIDTH = 1 << 21  # CUB_TOPK_MAX_LEN, csrc/cub_topk.cu (DeviceBatchedTopK's segment limit)
_CUB_SINGLE_BLOCK_WIDTH = 8192  # wider rows need CUB's cluster backend: SM90 and newer
_ROW_STATES_BYTES = 1 << 20  # what flashinfer.topk allocates for the multi-CTA row states
_TIE_SMALL = 1  # TopKTieBreak.SMALL: among ties the smaller indices win
# FlashInfer's top-k sources: they decide what runs, so they enter the kernel hash.
_SOURCES = ("topk.py", "jit/topk.py", "data/include/flashinfer/topk.cuh", "data/csrc/topk.cu",
            "data/csrc/cub_topk.cu", "data/csrc/flashinfer_topk_binding.cu",
            "data/csrc/flashinfer_fast_topk_clusters_binding.cu", "data/csrc/topk_transform_checks.h")


def _flashinfer_version() -> str:
    try:
        return metadata.version("flashinfer-python")
    except metadata.PackageNotFoundError:
        return ""


def _flashinfer_dir() -> Path | None:
    spec = importlib.util.find_spec("flashinfer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@contextlib.contextmanager
def _algo(value: str | None) -> Iterator[None]:
    """FLASHINFER_TOPK_ALGO set to ``value`` for the duration (None: the caller's own setting)."""
    if value is None:
        yield
        return
    before = os.environ.get(ALGO_ENV)
    os.environ[ALGO_ENV] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[ALGO_ENV]
        else:
            os.environ[ALGO_ENV] = before


class _FlashInferRunner(Runner):
    def __init__(self, launch: Callable[[], None], output: torch.Tensor, algo: str | None,
                 keep: tuple[torch.Tensor, ...]) -> None:
        self.output = output
        self._launch = launch
        self._algo = algo
        self._keep = keep  # the buffers the launch reads and writes

    def run(self) -> None:
        with _algo(self._algo):
            self._launch()

    def result(self) -> torch.Tensor:
        return self.output


class _FlashInferTopk(Implementation):
    device = Device.CUDA
    interface_version = 1
    graph_capturable = True
    #: The FlashInfer release measured, stored as the rows' impl_version.
    version: ClassVar[str] = _flashinfer_version()
    #: FLASHINFER_TOPK_ALGO during this implementation's calls; None: the caller's setting.
    algo: ClassVar[str | None] = None
    #: FlashInfer's ``deterministic`` argument (repeatable output; not a tie rule by itself).
    flashinfer_deterministic: ClassVar[bool] = False
    #: FlashInfer's ``tie_break`` argument (0: none, 1: smaller indices win).
    tie_break: ClassVar[int] = 0

    def unavailable_reason(self) -> str | None:
        if _flashinfer_dir() is None:
            return INSTALL_HINT
        if not torch.cuda.is_available():
            return "no CUDA GPU visible to torch"
        return None

    def kernel_hash(self) -> str | None:
        root = _flashinfer_dir()
        if root is None:
            return None
        digest = hashlib.sha256()
        for rel in _SOURCES:
            path = root / rel
            digest.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>"))
        return digest.hexdigest()[:16]

    def _backend(self, topk: Any, logits: torch.Tensor, k: int) -> str:
        """'native' or 'cub': FlashInfer's choice for a captured call, or the pinned one."""
        algo = os.environ.get(ALGO_ENV) if self.algo is None else self.algo
        det, tie = self.flashinfer_deterministic, self.tie_break
        rows, width = logits.shape
        cub = topk.can_use_cub_topk(algo, logits, tie, det)
        if algo == "cub":
            if not cub:
                raise UnsupportedError(f"FlashInfer's CUB backend cannot take this call (width {width})")
            return "cub"
        clusters = topk.can_use_clusters_topk(algo, logits.device, det, tie, False)
        # dsa_graph_safe=True selects the rules FlashInfer applies while a graph is captured.
        if cub and topk.is_cub_ragged_transform_beneficial(algo, rows, width, logits.dtype, tie, True, clusters):
            return "cub"
        if clusters:
            raise UnsupportedError("FlashInfer's dispatch picks its SM100 clusters kernel here, which "
                                   "allocates per call and is never graph-captured")
        return "native"

    def _prepare(self, logits, lengths, k):
        import flashinfer.topk as topk  # 4 s on first import; the first call JIT-builds the module

        rows, width = logits.shape
        device = logits.device
        backend = self._backend(topk, logits, k)
        output = torch.empty((rows, k), dtype=torch.int32, device=device)
        offsets = torch.zeros(rows, dtype=torch.int32, device=device)
        if lengths is None:
            lengths = torch.full((rows,), width, dtype=torch.int32, device=device)
        ops = topk.get_topk_module()
        if backend == "cub":
            if width > _CUB_SINGLE_BLOCK_WIDTH and torch.cuda.get_device_capability(device)[0] < 9:
                raise UnsupportedError(f"FlashInfer's CUB backend needs SM90 for rows wider than "
                                       f"{_CUB_SINGLE_BLOCK_WIDTH}")
            size = ops.cub_topk_ragged_transform_workspace_size(logits, lengths, k, self.tie_break, False)
            workspace = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)

            def launch() -> None:
                ops.cub_topk_ragged_transform(logits, output, offsets, lengths, workspace, k, self.tie_break, None)

            return _FlashInferRunner(launch, output, self.algo, (logits, lengths, offsets, workspace))
        if not logits.is_contiguous():
            raise UnsupportedError("FlashInfer's native top-k needs contiguous logits (row stride == width)")
        if (self.algo == "filtered" or self.tie_break) and not ops.can_implement_filtered_topk():
            # FlashInfer would run RadixTopK instead (filtered) or fail (tie_break).
            raise UnsupportedError("FilteredTopK needs 128 KiB of shared memory per SM, which this GPU lacks")
        # Zeroed once: the multi-CTA kernels leave it zeroed again when they finish.
        row_states = torch.zeros(_ROW_STATES_BYTES, dtype=torch.uint8, device=device)

        def launch() -> None:
            ops.radix_topk_ragged_transform(logits, output, offsets, lengths, row_states, k,
                                            self.flashinfer_deterministic, self.tie_break, False)

        return _FlashInferRunner(launch, output, self.algo, (logits, lengths, offsets, row_states))


class FlashInfer(_FlashInferTopk):
    name = "flashinfer"
    summary = ("FlashInfer top_k_ragged_transform, its own dispatch as for a graph-captured call "
               "(native radix/FilteredTopK or CUB)")


class FlashInferDeterministic(_FlashInferTopk):
    name = "flashinfer-deterministic"
    summary = "FlashInfer top_k_ragged_transform, deterministic=True (repeatable; ties not lowest-index)"
    flashinfer_deterministic = True
    # FlashInfer's deterministic mode collects the ties at the k-th value in thread-strided order
    # (DeterministicThreadStridedCollect), not lowest index first: repeatable, but not this
    # contract's tie rule, so its index set is not checked against lowest-index-wins.
    deterministic = False


class FlashInferLowestIndex(_FlashInferTopk):
    name = "flashinfer-lowest-index"
    summary = "FlashInfer top_k_ragged_transform, deterministic=True and tie_break=SMALL (FilteredTopK)"
    flashinfer_deterministic = True
    tie_break = _TIE_SMALL
    # tie_break=SMALL collects the ties contiguously, lowest index first, and deterministic=True
    # fixes the order: the contract's tie rule. Only FilteredTopK serves it (k <= 2048).
    deterministic = True
    max_k = _FILTERED_MAX_K


class FlashInferFiltered(_FlashInferTopk):
    name = "flashinfer-filtered"
    summary = "FlashInfer top_k_ragged_transform forced to FilteredTopK (FLASHINFER_TOPK_ALGO=filtered)"
    algo = "filtered"
    max_k = _FILTERED_MAX_K

    def unsupported_reason(self, rows: int, width: int, k: int) -> str | None:
        if width <= k:
            return "FilteredTopK needs width > k (FlashInfer runs RadixTopK instead)"
        return super().unsupported_reason(rows, width, k)


class FlashInferRadix(_FlashInferTopk):
    name = "flashinfer-radix"
    summary = "FlashInfer top_k_ragged_transform forced to RadixTopK, one or more CTAs per row (multi_cta)"
    algo = "multi_cta"


class FlashInferCub(_FlashInferTopk):
    name = "flashinfer-cub"
    summary = "FlashInfer top_k_ragged_transform forced to CUB's DeviceBatchedTopK (FLASHINFER_TOPK_ALGO=cub)"
    algo = "cub"

    def unsupported_reason(self, rows: int, width: int, k: int) -> str | None:
        if width > _CUB_MAX_WIDTH:
            return f"CUB's DeviceBatchedTopK takes rows of at most {_CUB_MAX_WIDTH} entries"
        return super().unsupported_reason(rows, width, k)


IMPLEMENTATIONS = [FlashInfer, FlashInferDeterministic, FlashInferLowestIndex, FlashInferFiltered,
                   FlashInferRadix, FlashInferCub]
