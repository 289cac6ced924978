"""Where `filtered`'s time goes, row by row: a FILTERED_TRACE=1 build prints each row's path and the
cycles of its phases (sample, stream, select), and this script sums them up.

    python3 scripts/filtered_phases.py 256x131072 1024x32768 [--dist relu_plateau] \
        [--define FILTERED_UNROLL=8 ...]

For each shape: rows traced, rows that took the rescanning fallback, the mean microseconds of each
phase (cycles at --clock-ghz), the slowest rows and the busiest CTA (a persistent CTA's rows add up:
the busiest one sets the kernel's time). Timing experiments only: the trace build printfs from
every CTA, which slows it. The second of two launches is traced (the first compiles and warms up).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

LINE = re.compile(r"filtered row (\d+) cta (\d+) n (\d+) c (-?\d+) m (-?\d+) fallback (\d) "
                  r"cycles sample (-?\d+) stream (-?\d+) select (-?\d+)"
                  r"(?: load (-?\d+) refine (-?\d+) ns (\d+) (\d+))?(?: marks (-?\d+) (-?\d+) (-?\d+))?")


@dataclass(frozen=True)
class RowTrace:
    row: int
    cta: int
    n: int
    buffered: int  # elements at or above the threshold (-1: the row skipped the sample)
    ties: int  # ties taken from a plateau's row (k - buffered; 0: none)
    fallback: bool
    sample: int  # cycles
    stream: int
    select: int
    load: int = 0  # cycles of the sample's loads and histogram (part of sample)
    refine: int = 0  # cycles of the buffer's refinements (part of select; 0: none ran)
    start_ns: int = 0  # the row's span on the global timer (0: an older trace format)
    end_ns: int = 0
    keys: int = 0  # cycles into select when the buffer holds keys (0: not reached or an older format)
    digit: int = 0  # ... when the first digit's bucket is chosen
    marked: int = 0  # ... when the output's bitmap is complete

    @property
    def total(self) -> int:
        return self.sample + self.stream + self.select


def parse(text: str) -> list[RowTrace]:
    """The trace lines of a FILTERED_TRACE=1 launch."""
    rows = []
    for m in LINE.finditer(text):
        row, cta, n, c, ties, fb, sample, stream, select, *extra = (int(g) if g else 0 for g in m.groups())
        rows.append(RowTrace(row, cta, n, c, ties, bool(fb), sample, stream, select, *extra))
    return rows


def summary(rows: list[RowTrace], ghz: float, slowest: int = 3) -> list[str]:
    if not rows:
        return ["no trace lines"]
    us = 1e-3 / ghz

    def mean(f, over: list[RowTrace] = rows) -> float:
        """Mean microseconds of f(row) over the rows (cycles at the clock)."""
        return sum(f(r) for r in over) / len(over) * us

    lines = [f"rows {len(rows)}, fallback {sum(r.fallback for r in rows)}; mean us: sample {mean(lambda r: r.sample):.1f}"
             f" stream {mean(lambda r: r.stream):.1f} select {mean(lambda r: r.select):.1f}"]
    if any(r.end_ns for r in rows):
        span = (max(r.end_ns for r in rows) - min(r.start_ns for r in rows)) * 1e-3
        lines.append(f"  of which: sample loads {mean(lambda r: r.load):.1f}, select refinements "
                     f"{mean(lambda r: r.refine):.1f}, output {mean(lambda r: r.select - r.refine):.1f};"
                     f" first row start to last row end {span:.1f} us")
    marked = [r for r in rows if r.marked]
    if marked:
        lines.append(f"  select, cumulative us ({len(marked)} rows): keys {mean(lambda r: r.keys, marked):.2f}, "
                     f"digit {mean(lambda r: r.digit, marked):.2f}, refined {mean(lambda r: r.refine, marked):.2f}, "
                     f"bitmap {mean(lambda r: r.marked, marked):.2f}, end {mean(lambda r: r.select, marked):.2f}")
    for r in sorted(rows, key=lambda r: -r.total)[:slowest]:
        lines.append(f"  slow row {r.row} (cta {r.cta}): buffered {r.buffered} ties {r.ties} fallback {int(r.fallback)}"
                     f" us {r.sample * us:.1f} / {r.stream * us:.1f} / {r.select * us:.1f}")
    per_cta: dict[int, int] = {}
    for r in rows:
        per_cta[r.cta] = per_cta.get(r.cta, 0) + r.total
    busiest = max(per_cta, key=per_cta.__getitem__)
    lines.append(f"  busiest cta {busiest}: {per_cta[busiest] * us:.1f} us; mean cta "
                 f"{sum(per_cta.values()) / len(per_cta) * us:.1f} us")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shapes", nargs="+", help="ROWSxWIDTH")
    ap.add_argument("--k", type=int, default=2048)
    ap.add_argument("--dist", default="normal")
    ap.add_argument("--define", action="append", default=[], help="KEY=VALUE for the build (repeat)")
    ap.add_argument("--clock-ghz", type=float, default=1.98, help="SM clock for cycles -> us (H100/H200: 1.98)")
    args = ap.parse_args(argv)

    import ctypes
    import os
    import tempfile

    import torch

    from topkbench.cuda.one_cta import Filtered
    from topkbench.workload import Distribution, WorkloadSpec, make_workload

    defines = {"FILTERED_TRACE": 1, **{k: int(v) for k, v in (d.split("=", 1) for d in args.define)}}
    impl = Filtered(defines=defines)
    libc = ctypes.CDLL(None)

    def captured(run) -> str:
        """What the device printfs during run() (the driver writes them to C's stdout at the sync)."""
        with tempfile.TemporaryFile(mode="w+") as capture:
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(capture.fileno(), 1)
            try:
                run()
                torch.cuda.synchronize()
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
                os.close(saved)
            capture.seek(0)
            return capture.read()

    for shape in args.shapes:
        rows, width = (int(x) for x in shape.lower().split("x"))
        w = make_workload(WorkloadSpec(rows, width, args.k, Distribution(args.dist)), "cuda")
        runner = impl.prepare(w.logits, w.lengths_arg, args.k)
        captured(runner.run)  # compile and warm up
        text = captured(runner.run)
        print(f"{shape} k={args.k} {args.dist}:")
        for line in summary(parse(text), args.clock_ghz):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
