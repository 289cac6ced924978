"""Run every CUDA implementation once on a few small shapes, for compute-sanitizer.

Not a pytest module (no test_ prefix): scripts/gpu_check.sh runs it as
``compute-sanitizer --tool memcheck python3 tests/sanitize_kernels.py`` (and racecheck), so that
out-of-bounds accesses and shared-memory races in the kernels show up as sanitizer errors.
Exits non-zero when a result is not exact.
"""

from __future__ import annotations

import sys

import torch

from topkbench.exactness import check_topk
from topkbench.impls import Device, registry
from topkbench.workload import Distribution, LengthMode, WorkloadSpec, make_workload

SHAPES = [  # rows, width, k, distribution, length mode
    (1, 4097, 7, Distribution.NORMAL, LengthMode.FIXED),
    (3, 2047, 256, Distribution.RELU_PLATEAU, LengthMode.RAGGED),
    (2, 20011, 2048, Distribution.CONSTANT, LengthMode.RAGGED),
    (2, 9001, 300, Distribution.LSB10, LengthMode.FIXED),
    (5, 1000, 2048, Distribution.TIE_HEAVY, LengthMode.RAGGED),
]


def main() -> int:
    failures = 0
    for name in registry.available():
        impl = registry.get(name)
        if impl.device is not Device.CUDA or name == "torch":
            continue
        for rows, width, k, dist, mode in SHAPES:
            w = make_workload(WorkloadSpec(rows, width, k, dist, mode, seed=1), "cuda")
            if impl.unsupported_reason(rows, width, k) is not None:
                continue
            out = impl(w.logits, k, w.lengths_arg)
            torch.cuda.synchronize()
            check = check_topk(w.logits, w.lengths, k, out)
            print(f"{name} rows={rows} width={width} k={k} {dist.value} {mode.value}: {'ok' if check else check.reason}")
            failures += not check.ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
