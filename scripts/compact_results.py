"""Merge every run's part files under a results folder into the run's one Parquet file.

    python3 scripts/compact_results.py OUT/results

A finished sweep does this itself; an interrupted one leaves its parts (a resume would merge
them). scripts/gpu_check.sh's `compact` stage runs it so that the runs come back from the GPU
machine, where only files two folder levels below $OUT return (parts sit three down).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from topkbench.store import PARTS_SUFFIX, RunStore

RUN_STEM = re.compile(r"^.+?-[0-9a-f]{8}-(.+)$")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for parts in sorted(Path(argv[0]).glob(f"*/*{PARTS_SUFFIX}")):
        stem = parts.name[: -len(PARTS_SUFFIX)]
        # <config>-<first 8 hex digits of its hash>-<run id>: a run id given by --run-id may hold dashes
        match = RUN_STEM.match(stem)
        if match is None:
            print(f"skipped {parts}: not a sweep run's parts folder", file=sys.stderr)
            continue
        print(f"compacted {RunStore(parts.parent, stem, match.group(1)).finalize()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
