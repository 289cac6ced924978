"""Run every CUDA kernel once on a few small shapes, for compute-sanitizer.

Not a pytest module (no test_ prefix): scripts/gpu_check.sh runs it as
``compute-sanitizer --tool memcheck python3 tests/sanitize_kernels.py [IMPL ...]`` (and racecheck), so that
out-of-bounds accesses and shared-memory races show up as sanitizer errors. The shapes cover odd
widths, strides past the width, short rows, plateaus that overflow candidate buffers, and for
``radix`` several CTAs per row, more rows than the grid, and keys streamed past shared memory.
Exits non-zero when a result is not exact.
"""

from __future__ import annotations

import sys

import torch

from topkbench.cuda.one_cta import Filtered
from topkbench.cuda.radix import RadixTopk
from topkbench.exactness import TopkChecker
from topkbench.impls import Device, Implementation, registry
from topkbench.read_floor import chunk_elements, expected_fold, read_floor_runner
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

D, M = Distribution, LengthMode
SHAPES = [  # rows, width, k, distribution, length mode, row stride
    (1, 4097, 7, D.NORMAL, M.FIXED, None),
    (3, 2047, 256, D.RELU_PLATEAU, M.RAGGED, 2050),
    (2, 20011, 2048, D.CONSTANT, M.RAGGED, 20014),
    (1, 9001, 256, D.TIE_HEAVY, M.FIXED, None),
    (2, 9001, 300, D.LSB10, M.FIXED, None),
    (200, 700, 16, D.SPECIALS, M.RAGGED, None),
    (5, 1000, 2048, D.TIE_HEAVY, M.RAGGED, None),
    (3, 30001, 1000, D.SUBNORMAL_ZEROS, M.RAGGED, 30003),
    (3, 49157, 2048, D.NORMAL, M.RAGGED, 49160),  # filtered's sampled path, each row split over CTAs
]
#: radix with a small shared-memory key budget, so that most keys stream from global memory, and
#: with many CTAs per row (the deterministic exchange between them).
EXTRA = [(RadixTopk(smem_key_limit=1000), (3, 12000, 300, D.LSB10, M.RAGGED, None)),
         (RadixTopk(smem_key_limit=1000, defines={"RADIX_DETERMINISTIC": 0}), (3, 12000, 300, D.LSB10, M.RAGGED, None)),
         (RadixTopk(min_keys_per_cta=256), (2, 20011, 700, D.SUBNORMAL_MIN, M.RAGGED, None))]
#: filtered on its persistent grids, every build forced: more rows than CTAs, ragged lengths that
#: mix sampled rows with rows too short for the sample, the next sampled row's sample copied
#: (cp.async) into the staging area while the row before streams and selects. Its split rows are
#: the 49157-wide case above.
FILTERED_EXTRA = [(Filtered(), (270, 24593, 2048, D.NORMAL, M.RAGGED, 24595)),
                  (Filtered(build="short"), (540, 12289, 2048, D.NORMAL, M.RAGGED, None)),
                  (Filtered(build="split"), (140, 24601, 2048, D.RELU_PLATEAU, M.RAGGED, 24603))]


def run_case(impl: Implementation, rows: int, width: int, k: int, dist: Distribution, mode: LengthMode,
             stride: int | None) -> bool:
    w = make_workload(WorkloadSpec(rows, width, k, dist, mode, seed=1, row_stride=stride), "cuda")
    out = impl(w.logits, k, w.lengths_arg)
    torch.cuda.synchronize()
    check = TopkChecker(w.logits, w.lengths, k).check(out, deterministic=impl.deterministic)
    print(f"{impl.name}{'' if impl.deterministic else ' (nondet)'} rows={rows} width={width} k={k} {dist.value} {mode.value} stride={stride}: "
          f"{'ok' if check else check.reason}")
    return check.ok


def run_read_floor(rows: int, width: int, stride: int | None, mode: LengthMode) -> bool:
    """The read-floor kernel (every valid score read once) on an odd, misaligned shape."""
    w = make_workload(WorkloadSpec(rows, width, 8, D.NORMAL, mode, seed=1, row_stride=stride), "cuda")
    runner = read_floor_runner(w.logits, w.lengths_arg)
    runner.run()
    torch.cuda.synchronize()
    chunk = chunk_elements(rows, width, torch.cuda.get_device_properties(0).multi_processor_count)
    ok = torch.equal(runner.output, expected_fold(w.logits, w.lengths_arg, chunk))
    print(f"read_floor rows={rows} width={width} {mode.value} stride={stride}: {'ok' if ok else 'WRONG'}")
    return ok


def main(names: list[str]) -> int:
    """Every built-in CUDA kernel (plugins bring their own checks), or only those named on the
    command line (radix's and filtered's extra cases with them, the read floor with read_floor)."""
    kernels = [registry.get(n) for n in registry.available()
               if registry.is_builtin(n) and registry.get(n).device is Device.CUDA and n != "torch"
               and (not names or n in names)]
    extra = (EXTRA if not names or "radix" in names else []) + (FILTERED_EXTRA if not names or "filtered" in names else [])
    cases = [(impl, shape) for impl in kernels for shape in SHAPES] + extra
    failures = sum(not run_case(impl, *shape) for impl, shape in cases)
    if not names or "read_floor" in names:
        failures += sum(not run_read_floor(*shape) for shape in ((3, 4099, 4103, M.FIXED), (7, 70001, None, M.RAGGED)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
