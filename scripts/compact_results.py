"""Merge every run's part files under a results folder into the run's one Parquet file.

    python3 scripts/compact_results.py OUT/results

A finished sweep does this itself; an interrupted one leaves its parts (a resume would merge
them). scripts/gpu_check.sh's `compact` stage runs it so that the runs come back from the GPU
machine, where only files two folder levels below $OUT return (parts sit three down).
"""

from __future__ import annotations

import sys
from pathlib import Path

from topkbench.store import PARTS_SUFFIX, RunStore


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for parts in sorted(Path(argv[0]).glob(f"*/*{PARTS_SUFFIX}")):
        stem = parts.name[: -len(PARTS_SUFFIX)]
        run_id = "-".join(stem.split("-")[-2:])  # <config>-<hash>-<timestamp>-<suffix>
        print(f"compacted {RunStore(parts.parent, stem, run_id).finalize()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
