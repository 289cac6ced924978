"""``radix``: multi-CTA radix select for long rows at small batch (kernels/radix.cu, issue #4).

One row of 64K-160K scores is too little work for one CTA to use an H100, so a group of CTAs
shares each row and meets at a global barrier once per radix round. The barrier only works when
every CTA of the grid is resident at once, so the grid is sized here from the occupancy
calculator and never exceeds SMs x resident blocks per SM; groups loop over rows when there are
more rows than groups.

The kernel's per-group state lives in one workspace per device, zeroed once at allocation; the
kernel leaves it zero at exit, so ``run()`` launches nothing else and is graph capturable.
Launches that share the workspace must be ordered (one stream at a time), as in the benchmark.

``radix`` is deterministic (the lowest indices win among the entries equal to the k-th value, and
the output is the selected set in ascending index order, whatever the number of CTAs per row); ``radix-nondet`` compiles the same source with
``RADIX_DETERMINISTIC=0`` (slots reserved with atomics in arrival order).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from topkbench.cuda import loader
from topkbench.errors import DeviceError
from topkbench.impls.base import Device, Implementation

SOURCE = "radix.cu"
KERNEL = "radix_topk"

#: The defines of the registered implementation (each has an #ifndef default in radix.cu).
DEFINES: dict[str, int] = {"RADIX_THREADS": 512, "RADIX_MIN_BLOCKS": 1, "RADIX_DIGIT_BITS": 11, "RADIX_WARP_AGG": 0,
                           "RADIX_DETERMINISTIC": 1}

#: Every (source, defines) the Python side compiles: the registered kernel, the 8- and 12-bit-digit
#: and warp-aggregated-histogram alternatives, and the timing knock-outs (RADIX_STOP_AFTER) that measure
#: where the time goes. The nvcc compile check builds each of these.
VARIANTS: list[tuple[str, dict[str, int]]] = [
    (SOURCE, DEFINES),
    (SOURCE, {**DEFINES, "RADIX_DETERMINISTIC": 0}),
    (SOURCE, {**DEFINES, "RADIX_DIGIT_BITS": 8}),
    (SOURCE, {**DEFINES, "RADIX_DIGIT_BITS": 12}),
    (SOURCE, {**DEFINES, "RADIX_WARP_AGG": 1}),
    (SOURCE, {**DEFINES, "RADIX_STOP_AFTER": 1}),
    (SOURCE, {**DEFINES, "RADIX_STOP_AFTER": 2}),
    (SOURCE, {**DEFINES, "RADIX_STOP_AFTER": 3}),
]

#: Fewest keys worth a CTA: below this, another CTA costs more at each barrier than it saves in
#: loading (rows of 128K get 64 CTAs, rows of 2K one).
MIN_KEYS_PER_CTA = 2048
#: Workspace layout per group, in uint32 words (radix.cu: kCtrlWords, RADIX_MAX_CTAS; the
#: exchange holds 4 words per CTA). tests/test_radix_gpu.py reads both from the source.
CTRL_WORDS = 64
MAX_CTAS_PER_ROW = 256


def group_words(digit_bits: int) -> int:
    """uint32 words of one group's workspace (kGroupWords in radix.cu)."""
    return CTRL_WORDS + 3 * (1 << digit_bits) + 4 * MAX_CTAS_PER_ROW

# device index -> zeroed workspace (int32 words); grown, never shrunk, when a variant needs more.
# Variants with other digit widths lay their groups out differently in it; that is safe because
# every launch leaves all of its words zero.
_WORKSPACES: dict[int, torch.Tensor] = {}


def _workspace(device_index: int, words: int) -> torch.Tensor:
    ws = _WORKSPACES.get(device_index)
    if ws is None or ws.numel() < words:
        ws = torch.zeros(words, dtype=torch.int32, device=torch.device("cuda", device_index))
        # The kernel may later run on another stream: the zeros must land before any launch.
        torch.cuda.synchronize(device_index)
        _WORKSPACES[device_index] = ws
    return ws


class RadixPlan:
    """Launch geometry for one (rows, width) on one device."""

    def __init__(self, *, ctas_per_row: int, groups: int, smem_keys: int, blocks_per_sm: int, sm_count: int) -> None:
        self.ctas_per_row = ctas_per_row
        self.groups = groups
        self.smem_keys = smem_keys
        self.blocks_per_sm = blocks_per_sm
        self.sm_count = sm_count

    @property
    def grid(self) -> int:
        return self.groups * self.ctas_per_row

    def __repr__(self) -> str:
        return (f"RadixPlan(grid={self.grid}, ctas_per_row={self.ctas_per_row}, groups={self.groups}, "
                f"smem_keys={self.smem_keys}, blocks_per_sm={self.blocks_per_sm}, sm_count={self.sm_count})")


def plan_launch(rows: int, width: int, *, sm_count: int, max_smem_keys: int,
                occupancy: Any, min_keys_per_cta: int = MIN_KEYS_PER_CTA) -> RadixPlan:
    """CTAs per row from the row length, then a grid no larger than what is co-resident.

    ``occupancy(dynamic_smem_bytes) -> resident blocks per SM``; ``max_smem_keys`` is the most
    keys one CTA can hold in shared memory (the rest of a longer chunk is streamed).
    """
    if rows >= sm_count:
        ctas_per_row = 1
    else:
        ctas_per_row = max(1, min(sm_count // rows, math.ceil(width / min_keys_per_cta)))
    chunk = -(-math.ceil(width / ctas_per_row) // 4) * 4
    smem_keys = max(4, min(chunk, max_smem_keys))
    blocks_per_sm = int(occupancy(smem_keys * 4))
    if blocks_per_sm < 1:
        raise DeviceError(f"radix: a CTA with {smem_keys * 4} bytes of dynamic shared memory cannot run on this GPU")
    capacity = sm_count * blocks_per_sm
    ctas_per_row = min(ctas_per_row, capacity, MAX_CTAS_PER_ROW)
    groups = max(1, min(rows, capacity // ctas_per_row))
    return RadixPlan(ctas_per_row=ctas_per_row, groups=groups, smem_keys=smem_keys,
                     blocks_per_sm=blocks_per_sm, sm_count=sm_count)


class _RadixRunner(loader.KernelRunner):
    """The radix launch, with the plan it was sized by (tests and messages read it)."""

    def __init__(self, kernel: Any, plan: RadixPlan, threads: int, logits: torch.Tensor,
                 lengths: torch.Tensor | None, k: int, workspace: torch.Tensor) -> None:
        self.plan = plan
        rows, width = logits.shape
        output = torch.empty((rows, k), dtype=torch.int32, device=logits.device)
        args = (
            loader.pointer(logits), loader.pointer(lengths), np.int32(rows), np.int32(width),
            np.int64(logits.stride(0)), np.int32(k), loader.pointer(output),
            loader.pointer(workspace), np.int32(plan.ctas_per_row), np.int32(plan.smem_keys),
        )
        super().__init__(kernel, (plan.grid,), (threads,), args, output, (logits, lengths, workspace),
                         shared_mem=plan.smem_keys * 4)


class RadixTopk(Implementation):
    name = "radix"
    device = Device.CUDA
    summary = ("multi-CTA radix select: several CTAs per row meet at a global barrier per 11-bit "
               "round (long rows, few rows); lowest-index ties, output in index order")
    deterministic = True
    #: Defines this class compiles with, before the constructor's overrides.
    base_defines: dict[str, int] = DEFINES

    def __init__(self, *, defines: Mapping[str, int] | None = None, smem_key_limit: int | None = None,
                 min_keys_per_cta: int = MIN_KEYS_PER_CTA) -> None:
        """``defines`` overrides DEFINES (timing variants); ``smem_key_limit`` caps the keys a CTA
        keeps in shared memory (tests use it to force the streamed path on small rows)."""
        self.defines = {**self.base_defines, **(defines or {})}
        self.deterministic = bool(self.defines["RADIX_DETERMINISTIC"])
        self._smem_key_limit = smem_key_limit
        self._min_keys_per_cta = min_keys_per_cta

    @classmethod
    def compile_variants(cls) -> list[tuple[str, dict[str, int]]]:
        """The (source, defines) pairs the nvcc compile check builds (topkbench.cuda.variants)."""
        return [(source, dict(defines)) for source, defines in VARIANTS]

    def unavailable_reason(self) -> str | None:
        return loader.cupy_unavailable_reason()

    def unsupported_reason(self, rows: int, width: int, k: int) -> str | None:
        if rows * k >= 2**31 or width >= 2**31 - 8:
            return f"rows x k = {rows * k} or width = {width} does not fit the kernel's 32-bit indexing"
        return super().unsupported_reason(rows, width, k)

    def kernel_hash(self) -> str | None:
        return loader.kernel_hash(SOURCE, self.defines)

    def _plan(self, kernel: Any, device_index: int, rows: int, width: int) -> RadixPlan:
        cupy = loader.require_cupy()
        threads = self.defines["RADIX_THREADS"]
        props = loader.device_properties(device_index)
        with cupy.cuda.Device(device_index):
            max_dynamic = int(props["sharedMemPerBlockOptin"]) - int(kernel.shared_size_bytes)
            loader.allow_dynamic_shared(kernel, max_dynamic, device_index)
            max_keys = (max_dynamic // 4) & ~3
            if self._smem_key_limit is not None:
                max_keys = max(4, min(max_keys, self._smem_key_limit & ~3))
            func = kernel.kernel.ptr

            def occupancy(dynamic_bytes: int) -> int:
                return cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(func, threads, dynamic_bytes)

            return plan_launch(rows, width, sm_count=int(props["multiProcessorCount"]), max_smem_keys=max_keys,
                               occupancy=occupancy, min_keys_per_cta=self._min_keys_per_cta)

    def _prepare(self, logits, lengths, k):
        device_index = loader.device_index(logits)
        kernel = loader.get_kernel(SOURCE, KERNEL, self.defines, device_index=device_index)
        rows, width = logits.shape
        plan = self._plan(kernel, device_index, rows, width)
        props = loader.device_properties(device_index)
        # Room for every group any plan on this device can have (the grid is at most SMs x blocks/SM).
        threads = self.defines["RADIX_THREADS"]
        max_groups = int(props["multiProcessorCount"]) * max(1, int(props["maxThreadsPerMultiProcessor"]) // threads)
        workspace = _workspace(device_index, max_groups * group_words(self.defines["RADIX_DIGIT_BITS"]))
        return _RadixRunner(kernel, plan, threads, logits, lengths, k, workspace)


class RadixTopkNondet(RadixTopk):
    name = "radix-nondet"
    summary = "radix with output slots reserved by atomics: the tie set and the output order depend on scheduling"
    deterministic = False
    base_defines = {**DEFINES, "RADIX_DETERMINISTIC": 0}
