"""Run one implementation a few times at one shape, for a profiler to capture.

    ncu --clock-control none --section SpeedOfLight -k regex:large_context \
        python3 scripts/profile_shape.py large_context 256 131072 2048 [distribution]
"""

from __future__ import annotations

import sys

import torch

from topkbench.impls import registry
from topkbench.workload import Distribution, WorkloadSpec, make_workload


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    name, rows, seq_len, k = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    distribution = Distribution(argv[4]) if len(argv) == 5 else Distribution.NORMAL
    impl = registry.require(name)
    w = make_workload(WorkloadSpec(rows, seq_len, k, distribution), "cuda")
    runner = impl.prepare(w.logits, w.lengths_arg, k)
    for _ in range(3):
        runner.run()
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
