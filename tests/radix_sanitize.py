"""Run ``radix`` once on a few small shapes, for compute-sanitizer (not collected by pytest).

    compute-sanitizer --tool memcheck python3 tests/radix_sanitize.py
    compute-sanitizer --tool racecheck python3 tests/radix_sanitize.py

The shapes cover several CTAs per row (the global barrier and cross-CTA ties), groups looping
over more rows than the grid, the streamed part past shared memory, misaligned strides and
short rows. Exits non-zero when a result is not exact.
"""

from __future__ import annotations

import sys

import torch

from topkbench.cuda.radix import RadixTopk
from topkbench.exactness import check_topk
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

SHAPES = [  # rows, width, k, distribution, length mode, row stride, smem key limit
    (1, 9001, 256, Distribution.TIE_HEAVY, LengthMode.FIXED, None, None),
    (2, 20011, 2048, Distribution.CONSTANT, LengthMode.RAGGED, 20014, None),
    (3, 12000, 300, Distribution.LSB10, LengthMode.RAGGED, None, 1000),
    (200, 700, 16, Distribution.SPECIALS, LengthMode.RAGGED, None, None),
    (4, 1500, 2048, Distribution.NORMAL, LengthMode.RAGGED, None, None),
]


def main() -> int:
    failures = 0
    for rows, width, k, dist, mode, stride, limit in SHAPES:
        impl = RadixTopk(smem_key_limit=limit)
        w = make_workload(WorkloadSpec(rows, width, k, dist, mode, seed=1, row_stride=stride), "cuda")
        runner = impl.prepare(w.logits, w.lengths_arg, k)
        runner.run()
        torch.cuda.synchronize()
        check = check_topk(w.logits, w.lengths, k, runner.result())
        print(f"radix rows={rows} width={width} k={k} {dist.value} {mode.value} {runner.plan}: "
              f"{'ok' if check else check.reason}")
        failures += not check.ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
