"""Check, then time, named kernel variants against each other (and torch.topk) in one process.

    python3 scripts/bench_variants.py --shape 256x131072 --shape 64x131072 --k 2048 \
        --dist normal --dist relu_plateau \
        --variant base=large_context --variant u2=large_context:LC_UNROLL=2 \
        --variant r8=radix:RADIX_DIGIT_BITS=8 --variant torch=torch --csv out.csv

A variant is NAME=IMPL[:DEFINE=VALUE,...]: a registered implementation, built fresh from its class
(never the registry's cached instance), with compile-time defines for classes whose constructor
takes ``defines=`` (large_context, radix). Checks and timings go through topkbench's measuring
core (topkbench.trial), as in a sweep: poisoned outputs, a second check on new scores written in
place, the lowest-index tie rule for deterministic kernels. Every variant first runs on small odd
shapes of every adversarial distribution (k 7, 2048 and past the length; fixed and ragged lengths;
misaligned rows), one PASS/FAIL line each; a failing variant is not timed. Then, per (shape,
distribution), each variant is checked at that shape (WRONG: not timed) and the rest are timed
under CUDA-graph replay with hot L2, samples interleaved across the variants and a plain streaming
read of the same scores (the read floor, topkbench/read_floor.py). Prints the median us per variant,
its ratio to torch and to the read floor, and writes every number to --csv.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from topkbench.impls import registry
from topkbench.impls.base import Implementation
from topkbench.timing import L2Mode, TimingMode, TimingSettings
from topkbench.trial import Trial, unsupported
from topkbench.workload import ADVERSARIAL, Distribution, LengthMode, WorkloadSpec

#: (rows, width, row stride or None, k values): small odd shapes reaching every kernel path.
CHECK_SHAPES = (
    (3, 4097, 4099, (7, 2048, 4102)),
    (2, 65537, 65539, (7, 2048, 65542)),
)
CHECK_MODES = (LengthMode.FIXED, LengthMode.RAGGED)


@dataclass
class Variant:
    name: str
    impl_name: str
    defines: dict[str, int] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # constructor keywords (filtered's build)
    impl: Implementation | None = None
    failed: str = ""  # why it is not timed

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in {**self.options, **self.defines}.items())
        return self.impl_name + (":" + extra if extra else "")


def parse_shape(text: str) -> tuple[int, int]:
    try:
        rows, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not ROWSxWIDTH") from None
    if rows < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be positive")
    return rows, width


def parse_variant(text: str) -> Variant:
    """NAME=IMPL[:DEFINE=VALUE,...]; a bare IMPL names itself. A lower-case key is a constructor
    option instead of a define (``filtered:build=wide``)."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = text.split(":", 1)[0], text
    impl_name, _, define_text = spec.partition(":")
    defines: dict[str, int] = {}
    options: dict[str, str] = {}
    for item in filter(None, define_text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"define {item!r} in {text!r} is not KEY=VALUE")
        if key.strip().islower():
            options[key.strip()] = value.strip()
            continue
        try:
            defines[key.strip()] = int(value, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"define {item!r} in {text!r} needs an integer value") from None
    if not name or not impl_name:
        raise argparse.ArgumentTypeError(f"variant {text!r} is not NAME=IMPL[:DEFINE=VALUE,...]")
    return Variant(name.strip(), impl_name.strip(), defines, options)


def build(variant: Variant) -> Implementation:
    """A fresh instance of the variant's implementation class, with its defines and constructor options."""
    cls = type(registry.get(variant.impl_name))
    kwargs: dict[str, Any] = dict(variant.options)
    # source=FILE.cu: the kernel text from another file under kernels/ (a saved copy of the kernel
    # before an edit, timed beside the edited one in the same process)
    source = kwargs.pop("source", None)
    if source is not None and not hasattr(cls, "source"):
        raise SystemExit(f"variant {variant.name}: {variant.impl_name} has no kernel source to replace")
    parameters = inspect.signature(cls).parameters
    if variant.defines:
        kwargs["defines"] = variant.defines
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise SystemExit(f"variant {variant.name}: {variant.impl_name} takes no {', '.join(unknown)}")
    impl = cls(**kwargs)
    if source is not None:
        impl.source = source
    return impl


def adversarial_check(variant: Variant) -> str:
    """Every adversarial distribution on the small odd shapes; 'N cases' when all pass, else the
    first failure."""
    cases = 0
    for rows, width, stride, ks in CHECK_SHAPES:
        for mode in CHECK_MODES:
            for dist in ADVERSARIAL:
                for k in ks:
                    spec = WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=mode,
                                        seed=5, row_stride=stride if mode is LengthMode.FIXED else None)
                    trial = Trial(spec, cuda=True)
                    outcome = trial.recheck(trial.check(variant.impl))
                    trial.release()
                    cases += 1
                    if not outcome.ok:
                        return f"{dist.value} {rows}x{width} k={k} {mode.value}: {outcome.status.value}: {outcome.reason}"
    return f"{cases} cases"


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def table(title: str, keys: list[str], names: list[str], cell: dict[tuple[str, str], str]) -> str:
    width0 = max(len(title), *(len(k) for k in keys))
    widths = [max(len(n), *(len(cell.get((k, n), "-")) for k in keys)) for n in names]
    lines = [title.ljust(width0) + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    for key in keys:
        lines.append(key.ljust(width0) + "  " + "  ".join(cell.get((key, n), "-").rjust(w) for n, w in zip(names, widths)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=parse_shape, action="append", required=True, help="ROWSxWIDTH (repeat)")
    ap.add_argument("--k", type=int, action="append", help="k (repeat; default 2048)")
    ap.add_argument("--dist", type=Distribution, action="append", help="distribution (repeat; default normal)")
    ap.add_argument("--lengths", type=LengthMode, default=LengthMode.FIXED, help="length mode of the timed shapes")
    ap.add_argument("--variant", type=parse_variant, action="append", required=True,
                    help="NAME=IMPL[:DEFINE=VALUE,...] (repeat); the first is the reference of the vs-first ratio")
    ap.add_argument("--csv", help="write one row per (shape, dist, k, variant) here")
    ap.add_argument("--no-check", action="store_true", help="skip the adversarial pre-check")
    ap.add_argument("--budget-s", type=float, default=0.5, help="sampling seconds per variant and point")
    ap.add_argument("--launches", type=int, default=20, help="selections per CUDA-graph replay")
    ap.add_argument("--min-samples", type=int, default=10)
    ap.add_argument("--max-samples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    ks = args.k or [2048]
    dists = args.dist or [Distribution.NORMAL]
    variants: list[Variant] = args.variant
    if len({v.name for v in variants}) != len(variants):
        print("variant names must be distinct", file=sys.stderr)
        return 2
    settings = TimingSettings(mode=TimingMode.GRAPH, l2=(L2Mode.HOT,), launches_per_sample=args.launches, warmup=3,
                              min_samples=args.min_samples, max_samples=args.max_samples, budget_s=args.budget_s)
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name()
    print(f"# {gpu}; graph replay x{args.launches}, hot L2; budget {args.budget_s}s per variant and point")

    for v in variants:
        v.impl = build(v)
        reason = v.impl.unavailable_reason()
        if reason:
            v.failed = f"unavailable: {reason}"
        elif not args.no_check:
            t0 = time.perf_counter()
            try:
                outcome = adversarial_check(v)
                ok = outcome.endswith(" cases")
            except Exception as exc:  # a compile error or a launch failure: report, do not time
                outcome, ok = f"{type(exc).__name__}: {exc}", False
            if not ok:
                v.failed = f"adversarial check: {outcome}"
            print(f"{'PASS' if ok else 'FAIL'} {v.name:<12} {v.label}  "
                  f"{outcome if ok else v.failed} ({time.perf_counter() - t0:.1f}s)", flush=True)
        hash_ = v.impl.kernel_hash() if v.impl else None
        if hash_:
            print(f"     {v.name:<12} kernel_hash {hash_}")

    names = [v.name for v in variants]
    ref_torch = next((v.name for v in variants if v.impl_name == "torch"), None)
    records: list[dict[str, Any]] = []
    medians: dict[tuple[str, str], str] = {}
    ratios: dict[tuple[str, str], str] = {}
    over_read: dict[tuple[str, str], str] = {}
    keys: list[str] = []
    for rows, width in args.shape:
        for k in ks:
            for dist in dists:
                key = f"{rows}x{width} k{k} {dist.value}"
                keys.append(key)
                spec = WorkloadSpec(rows=rows, seq_len=width, k=k, distribution=dist, length_mode=args.lengths,
                                    seed=args.seed)
                trial = Trial(spec, cuda=True)
                outcomes = []
                for v in variants:
                    if v.failed:
                        outcomes.append(unsupported(v.impl, "not timed (failed earlier)"))
                        continue
                    reason = v.impl.unsupported_reason(rows, width, k)
                    outcomes.append(unsupported(v.impl, reason) if reason else trial.check(v.impl))
                timed = trial.time(outcomes, settings, L2Mode.HOT, read_floor=True)
                read_us = trial.read_stats.median if trial.read_stats is not None else float("nan")
                medians[(key, "read")] = fmt(read_us)
                stats, status = {}, {}
                for v, outcome, timing in zip(variants, outcomes, timed):
                    outcome = trial.recheck(outcome)
                    if outcome.ok and timing is not None:
                        stats[v.name] = timing[0]
                        continue
                    status[v.name] = f"{outcome.status.value.upper()}: {outcome.reason}"
                    if outcome.status.value in ("wrong", "error"):
                        print(f"{status[v.name].split(':')[0]} {v.name} at {key}: {outcome.reason}", flush=True)
                torch_us = stats[ref_torch].median if ref_torch in stats else float("nan")
                first_us = stats[names[0]].median if names[0] in stats else float("nan")
                for v in variants:
                    s = stats.get(v.name)
                    med = s.median if s else float("nan")
                    medians[(key, v.name)] = fmt(med) if s else status.get(v.name, "-").split(":")[0]
                    ratios[(key, v.name)] = fmt(med / torch_us, 3) if s else medians[(key, v.name)]
                    over_read[(key, v.name)] = fmt(med / read_us, 2) if s else medians[(key, v.name)]
                    records.append({
                        "gpu": gpu, "rows": rows, "width": width, "k": k, "dist": dist.value,
                        "lengths": args.lengths.value, "variant": v.name, "impl": v.impl_name,
                        "defines": ";".join(f"{a}={b}" for a, b in {**v.options, **v.defines}.items()),
                        "kernel_hash": (v.impl.kernel_hash() or "") if v.impl else "",
                        "status": "ok" if s else status.get(v.name, v.failed),
                        "median_us": med, "p20_us": s.p20 if s else float("nan"),
                        "p80_us": s.p80 if s else float("nan"), "samples": s.n if s else 0,
                        "rel_spread": s.rel_spread if s else float("nan"),
                        "vs_torch": med / torch_us if s else float("nan"),
                        "vs_first": med / first_us if s else float("nan"),
                        "read_us": read_us, "vs_read": med / read_us if s else float("nan"),
                    })
                done = ", ".join(f"{n} {medians[(key, n)]}" for n in names)
                print(f"  {key}: {done}  [{time.perf_counter() - start:.0f}s]", flush=True)
                trial.release()
                del trial, outcomes
                torch.cuda.empty_cache()

    print()
    print(table("median us", keys, names + ["read"], medians))
    print()
    print(table("x the read floor", keys, names, over_read))
    if ref_torch:
        print()
        print(table(f"vs {ref_torch} (lower is faster)", keys, names, ratios))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]) if records else ["variant"])
            writer.writeheader()
            writer.writerows(records)
        print(f"\nwrote {len(records)} rows to {args.csv}")
    print(f"total {time.perf_counter() - start:.0f}s")
    return 1 if any(v.failed for v in variants) else 0


if __name__ == "__main__":
    sys.exit(main())
