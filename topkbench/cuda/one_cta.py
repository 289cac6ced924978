"""The one-CTA-per-row kernels: ``per_row`` (kernels/per_row.cu), ``large_context``
(kernels/large_context.cu) and ``filtered`` (kernels/filtered.cu, one read of each score on a
persistent grid). docs/design.md section 4 describes the families.

All three are deterministic (``deterministic = True``): among the entries equal to the k-th
largest value the lowest indices win, and the output is the selected set in ascending index
order, on every call and every graph replay. ``per_row-nondet`` and ``large_context-nondet``
compile the same sources with ``*_DETERMINISTIC=0`` (slots from shared atomic counters: the tie set
and the order depend on scheduling), so that one sweep measures what determinism costs;
``filtered`` has no such build.

All accept any k and any width up to 2**31 - 1 (indices are int32); rows of length <= k get the
contract's 0..n-1, -1... layout. ``prepare`` compiles the kernel (once per process and define set)
and allocates the output and, for large_context, a byte-per-element workspace (filtered: it picks
one of three builds, opts in to that build's 40-96 KB of dynamic shared memory and sizes its
grid, persistent over the rows or, for few rows, several CTAs a row with a per-row candidate
workspace), so that ``run()`` is a single launch on torch's current stream: CUDA-graph
capturable, no sync, no allocation.

``PerRow(defines={...})``, ``LargeContext(defines={...})`` and ``Filtered(defines={...})`` override
some of the kernel's compile-time knobs (block size, capacities, the unrolls, *_EARLY_TIES...) for
timing experiments (scripts/bench_variants.py) and tests; with no defines they are the registered
kernels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from topkbench.cuda import loader
from topkbench.impls.base import Device, Implementation

_INT32_MAX = 2**31 - 1


class _OneCtaKernel(Implementation):
    device = Device.CUDA
    source: ClassVar[str]
    function: ClassVar[str]
    block: ClassVar[int]
    #: Compile-time parameters the Python side uses (the defaults written in the source, spelled out
    #: so that the hash and the compile test see exactly what runs).
    defines: ClassVar[Mapping[str, int]]

    @classmethod
    def compile_variants(cls) -> list[tuple[str, dict[str, int]]]:
        """Every (source, defines) pair this implementation compiles (see topkbench.cuda.variants):
        its own, and the deterministic build without the plateau early stop (tests compare both)."""
        return [(cls.source, dict(cls.defines)), (cls.source, {**cls.defines, cls.early_ties_define: 0})]

    #: The defines that set the block size, select the deterministic build (1) or the
    #: atomic-counter one (0), and switch the plateau early stop of the deterministic final pass.
    block_define: ClassVar[str]
    deterministic_define: ClassVar[str | None]
    early_ties_define: ClassVar[str]

    #: The defines given to the constructor (timing variants and tests).
    overrides: Mapping[str, int] = {}

    def __init__(self, *, defines: Mapping[str, int] | None = None) -> None:
        """``defines`` overrides some of the class's compile-time knobs (timing variants, tests)."""
        if defines:
            unknown = sorted(set(defines) - set(type(self).defines))
            if unknown:
                raise ValueError(f"{self.name}: unknown defines {unknown}; known: {sorted(type(self).defines)}")
            self.defines = {**type(self).defines, **defines}
            self.overrides = dict(defines)
            self.block = int(self.defines[self.block_define])
            if self.deterministic_define is not None:
                self.deterministic = bool(self.defines[self.deterministic_define])

    def unavailable_reason(self) -> str | None:
        return loader.cupy_unavailable_reason()

    def unsupported_reason(self, rows: int, width: int, k: int) -> str | None:
        if width > _INT32_MAX:
            return f"width {width} does not fit the int32 indices"
        if k > _INT32_MAX:
            return f"k={k} does not fit in int32"
        if rows > _INT32_MAX:
            return f"{rows} rows exceed the grid limit of {_INT32_MAX} CTAs"
        return super().unsupported_reason(rows, width, k)

    def kernel_hash(self) -> str | None:
        return loader.kernel_hash(self.source, self.defines)

    def _kernel(self, logits: torch.Tensor, defines: Mapping[str, int] | None = None) -> Any:
        """The compiled kernel for logits' device: this instance's defines, or a build's."""
        return loader.get_kernel(self.source, self.function, self.defines if defines is None else defines,
                                 device_index=loader.device_index(logits))


class PerRow(_OneCtaKernel):
    name = "per_row"
    summary = ("one CTA per row, 2048-bin radix select (coarse then fp32 digits), rescans the row per pass; "
               "lowest-index ties, output in index order")
    deterministic = True
    source = "per_row.cu"
    function = "per_row_topk"
    block = 512
    block_define = "PER_ROW_BLOCK"
    deterministic_define = "PER_ROW_DETERMINISTIC"
    early_ties_define = "PER_ROW_EARLY_TIES"
    defines = {"PER_ROW_BLOCK": 512, "PER_ROW_MIN_BLOCKS": 2, "PER_ROW_UNROLL": 2, "PER_ROW_FINAL_UNROLL": 4,
               "PER_ROW_DETERMINISTIC": 1, "PER_ROW_EARLY_TIES": 1}

    def _prepare(self, logits, lengths, k):
        rows, width = logits.shape
        out = torch.empty((rows, k), dtype=torch.int32, device=logits.device)
        args = (loader.pointer(logits), np.int64(logits.stride(0)), loader.pointer(lengths),
                np.int32(width), np.int32(k), loader.pointer(out))
        return loader.KernelRunner(self._kernel(logits), (rows,), (self.block,), args, out, (logits, lengths))


class LargeContext(_OneCtaKernel):
    name = "large_context"
    summary = ("one 1024-thread CTA per row: coarse high-byte pass, shared-memory candidate buffer with "
               "8-bit refines, exact rescanning fallback when the buffer overflows; lowest-index ties, "
               "output in index order")
    deterministic = True
    source = "large_context.cu"
    function = "large_context_topk"
    block = 1024
    block_define = "LC_BLOCK"
    deterministic_define = "LC_DETERMINISTIC"
    early_ties_define = "LC_EARLY_TIES"
    defines = {"LC_BLOCK": 1024, "LC_CAPACITY": 4096, "LC_UNROLL": 4, "LC_BYTE_UNROLL": 2, "LC_RESCAN_UNROLL": 2,
               "LC_REFINE_BITS": 8, "LC_FALLBACK_BITS": 11, "LC_DETERMINISTIC": 1, "LC_EARLY_TIES": 1}

    def _prepare(self, logits, lengths, k):
        rows, width = logits.shape
        out = torch.empty((rows, k), dtype=torch.int32, device=logits.device)
        # One bucket byte per element, shifted by up to 3 so that 16-byte float loads store
        # aligned words; rows padded to 16 bytes for the kernel's 16-byte reads.
        work_stride = (width + 3 + 15) // 16 * 16
        work = torch.empty((rows, work_stride), dtype=torch.uint8, device=logits.device)
        args = (loader.pointer(logits), np.int64(logits.stride(0)), loader.pointer(lengths),
                np.int32(width), np.int32(k), loader.pointer(out), loader.pointer(work), np.int64(work_stride))
        return loader.KernelRunner(self._kernel(logits), (rows,), (self.block,), args, out, (logits, lengths, work))


@dataclass(frozen=True)
class FilteredPlan:
    """A filtered launch: the build (a key of Filtered.builds), CTAs per row (1: a persistent grid
    over the rows) and the grid."""

    build: str
    parts: int
    grid: int


class Filtered(_OneCtaKernel):
    name = "filtered"
    summary = ("one read of each score: a sampled threshold, one streaming pass into a shared-memory "
               "buffer, exact selection there (rescanning fallback); persistent grid, or several CTAs a "
               "row for few rows; lowest-index ties, output in index order")
    deterministic = True
    source = "filtered.cu"
    function = "filtered_topk"
    block = 512
    block_define = "FILTERED_BLOCK"
    deterministic_define = None  # deterministic only: no build with atomic-counter slots
    early_ties_define = "FILTERED_EARLY_TIES"
    defines = {"FILTERED_BLOCK": 512, "FILTERED_MIN_BLOCKS": 2, "FILTERED_CAPACITY": 8192, "FILTERED_UNROLL": 5,
               "FILTERED_GROUPS_PER_WARP": 8, "FILTERED_SAMPLE_HITS": 128,
               "FILTERED_SAMPLE_HITS_ROOMY": 96, "FILTERED_MIN_SAMPLE": 1024,
               "FILTERED_MIN_LENGTH": 8192, "FILTERED_REFINE_BITS": 8, "FILTERED_RANK_MAX": 128,
               "FILTERED_DENSE_BATCH_HITS": 8, "FILTERED_DENSE_LANES": 24,
               "FILTERED_PREFETCH": 1, "FILTERED_MAX_PARTS": 8, "FILTERED_MIN_PART_LENGTH": 16384,
               "FILTERED_FINAL_UNROLL": 2, "FILTERED_EARLY_TIES": 1, "FILTERED_TRACE": 0}
    #: The builds a launch picks from (plan), as overrides of ``defines``:
    #: - wide: two 512-thread CTAs an SM, a persistent grid over many rows of any length;
    #: - split: one 1024-thread CTA an SM, for few rows split over several CTAs each (a part's
    #:   sample and merge cost the same at any block size; its stream is faster with more threads);
    #: - short: four 256-thread CTAs an SM and half the buffer, for many rows of at most
    #:   SHORT_ROW_WIDTH (four rows an SM at different phases hide more of each row's sample and
    #:   selection; at that width the sample is uncapped, so 1.2-1.9 k candidates fit 4096 slots).
    #:   Measured on the H200 (bench_variants, k=2048, normal and relu_plateau): against the wide
    #:   build 0.83-0.90x the time at 512 rows of 8192-32768 (where the wide build's CTAs take two
    #:   rows each), but 1.06-1.48x at 256 rows (one row a CTA either way): hence "more rows than
    #:   the wide build's slots".
    #: Five loads in flight a thread (FILTERED_UNROLL), against four (bench_variants, H200, k=2048):
    #: normal scores 0.97x the time at 512 x 65536, 0.96x at 256 x 131072, 0.98x at 1024 x 32768,
    #: plateau rows 0.99-1.01x; six and eight measured the same, but spill in some builds. At 32-64
    #: rows, which the split build serves, five and six were 1.01-1.04x slower: it keeps four.
    builds: ClassVar[Mapping[str, Mapping[str, int]]] = {
        "wide": {},
        "split": {"FILTERED_BLOCK": 1024, "FILTERED_MIN_BLOCKS": 1, "FILTERED_UNROLL": 4},
        "short": {"FILTERED_BLOCK": 256, "FILTERED_MIN_BLOCKS": 4, "FILTERED_CAPACITY": 4096},
    }
    SHORT_ROW_WIDTH = 32768
    #: The builds that may split rows, in the order tried, and the narrowest width each splits.
    #: Measured on the H200 (dsv32-decode runs 86b3, split at 32768 and up, and 3e5a, the same
    #: points unsplit): split build, two parts of a 32768-wide row within 4% of the unsplit time
    #: either way (they cost in the merge what they save in the stream); wide build,
    #: two parts a row at 128 rows were 0.86x the unsplit time at 32768, 0.95x at 49152, 0.98x at
    #: 65536, 1.04x at 98304 (left unsplit: one measurement, within the noise) and 1.09-1.13x
    #: faster than the unsplit kernel before from 131072.
    SPLIT_MIN_WIDTH: ClassVar[Mapping[str, int]] = {"split": 49152, "wide": 131072}

    #: The build every launch of this instance uses (None: plan picks one per shape).
    forced_build: str | None = None

    def __init__(self, *, defines: Mapping[str, int] | None = None, build: str | None = None) -> None:
        """``build`` makes every launch use that build (timing experiments, tests): split over CTAs
        where its split rule allows, else its persistent grid."""
        super().__init__(defines=defines)
        if build is not None:
            if build not in self.builds:
                raise ValueError(f"{self.name}: unknown build {build!r}; known: {sorted(self.builds)}")
            self.forced_build = build

    @classmethod
    def compile_variants(cls) -> list[tuple[str, dict[str, int]]]:
        return [*super().compile_variants(), *((cls.source, {**cls.defines, **b}) for b in cls.builds.values())]

    def build_defines(self, build: str) -> dict[str, int]:
        """A build's defines: the build's overrides, then this instance's (timing variants and tests
        override every build alike)."""
        return {**type(self).defines, **self.builds[build], **self.overrides}

    def kernel_hash(self) -> str | None:
        """One hash over every build a launch may pick."""
        parts = [loader.kernel_hash(self.source, self.build_defines(b)) for b in sorted(self.builds)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def plan(self, rows: int, width: int, k: int, *, sms: int) -> FilteredPlan:
        """The build and grid for a launch. At most half as many rows as a build's CTA slots (SMs x
        its FILTERED_MIN_BLOCKS; the split build's first, then the wide one's), each at least
        SPLIT_MIN_WIDTH[build] wide, split each row over as many CTAs as the slots allow (at most
        FILTERED_MAX_PARTS, each part at least FILTERED_MIN_PART_LENGTH scores), one CTA per part.
        Otherwise a persistent grid over the rows: the short build when there are more rows than
        the wide build's CTA slots (some of its CTAs would take a second row), each at most
        SHORT_ROW_WIDTH long (and k fits its buffer's sampled path); the wide one else."""
        def slots(build: str) -> int:
            return sms * int(self.build_defines(build)["FILTERED_MIN_BLOCKS"])

        def persistent(build: str) -> FilteredPlan:
            return FilteredPlan(build, 1, max(1, min(rows, slots(build))))

        for build, min_width in self.SPLIT_MIN_WIDTH.items():
            if self.forced_build not in (None, build):
                continue
            d = self.build_defines(build)
            parts = min(slots(build) // max(rows, 1), int(d["FILTERED_MAX_PARTS"]),
                        width // int(d["FILTERED_MIN_PART_LENGTH"]))
            if parts >= 2 and width >= min_width:
                return FilteredPlan(build, parts, rows * parts)
        if self.forced_build is not None:
            return persistent(self.forced_build)
        short_fits_k = 2 * k <= int(self.build_defines("short")["FILTERED_CAPACITY"])
        if rows > slots("wide") and width <= self.SHORT_ROW_WIDTH and short_fits_k:
            return persistent("short")
        return persistent("wide")

    def _prepare(self, logits, lengths, k):
        rows, width = logits.shape
        out = torch.empty((rows, k), dtype=torch.int32, device=logits.device)
        device_index = loader.device_index(logits)
        sms = int(loader.device_properties(device_index)["multiProcessorCount"])
        plan = self.plan(rows, width, k, sms=sms)
        defines = self.build_defines(plan.build)
        workspace: tuple[torch.Tensor | None, ...] = (None, None, None)
        if plan.parts > 1:
            # Per row: the counters {candidates, parts arrived, unused, unused} (zero between launches:
            # the row's last part resets them) and the parts' appended candidates: raw float bits, then indices.
            capacity = int(defines["FILTERED_CAPACITY"])
            workspace = (torch.zeros((rows, 4), dtype=torch.int32, device=logits.device),
                         torch.empty((rows, capacity), dtype=torch.int32, device=logits.device),
                         torch.empty((rows, capacity), dtype=torch.int32, device=logits.device))
        args = (loader.pointer(logits), np.int64(logits.stride(0)), loader.pointer(lengths), np.int32(rows),
                np.int32(width), np.int32(k), loader.pointer(out), np.int32(plan.parts),
                *(loader.pointer(t) for t in workspace))
        kernel = self._kernel(logits, defines)
        dynamic_bytes = self.dynamic_shared_bytes(defines)
        loader.allow_dynamic_shared(kernel, dynamic_bytes, device_index)
        runner = loader.KernelRunner(kernel, (plan.grid,), (int(defines["FILTERED_BLOCK"]),), args, out,
                                     (logits, lengths, *workspace), shared_mem=dynamic_bytes)
        runner.plan = plan  # test failures name it
        return runner

    @staticmethod
    def dynamic_shared_bytes(defines: Mapping[str, int]) -> int:
        """A build's dynamic shared memory (kernels/filtered.cu): the candidate buffer, a key and an
        index a slot, then the sample's staging area, 32 scores a group."""
        warps = int(defines["FILTERED_BLOCK"]) // 32
        return 8 * int(defines["FILTERED_CAPACITY"]) + 4 * 32 * int(defines["FILTERED_GROUPS_PER_WARP"]) * warps


class PerRowNondet(PerRow):
    name = "per_row-nondet"
    summary = "per_row with slots from atomic counters: the tie set and the output order depend on scheduling"
    deterministic = False
    defines = {**PerRow.defines, "PER_ROW_DETERMINISTIC": 0}


class LargeContextNondet(LargeContext):
    name = "large_context-nondet"
    summary = "large_context with slots from atomic counters: the tie set and the output order depend on scheduling"
    deterministic = False
    defines = {**LargeContext.defines, "LC_DETERMINISTIC": 0}
