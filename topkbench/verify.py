"""``verify``: the exactness of every implementation over a config's shapes and distributions.

Unlike the sweep it also runs points with k >= seq_len (the -1 padding rules) and times nothing;
each case is checked twice through :class:`topkbench.trial.Trial` (poisoned output both times; a
deterministic implementation must return the same output bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from topkbench.config import SweepConfig
from topkbench.errors import INTERRUPTS, Interrupted, StickyCudaError, interrupt_exit_code
from topkbench.footprint import check_fits
from topkbench.impls import Device, Implementation
from topkbench.schema import Status
from topkbench.sweep import resolve_implementations
from topkbench.trial import Trial, unsupported
from topkbench.workload import WorkloadSpec


@dataclass(frozen=True)
class CaseResult:
    impl: str
    rows: int
    seq_len: int
    k: int
    length_mode: str
    distribution: str
    status: Status
    detail: str = ""


@dataclass
class Verification:
    results: list[CaseResult]
    #: Set when a broken CUDA context or an interrupt ended the run early: ``results`` holds the
    #: cases before it.
    stopped_by: StickyCudaError | Interrupted | None = None


def verify(config: SweepConfig, requested: list[str] | None = None,
           on_case: Callable[[CaseResult], None] | None = None,
           impls: list[Implementation] | None = None) -> Verification:
    impls = impls if impls is not None else resolve_implementations(config, requested)
    cuda = any(i.device is Device.CUDA for i in impls)
    check_fits([(p.rows, p.seq_len) for p in config.points()], cuda)
    results: list[CaseResult] = []
    try:
        for point in config.points():
            spec = WorkloadSpec(point.rows, point.seq_len, point.k, point.distribution, point.length_mode, config.seed)
            trial = Trial(spec, cuda)
            head = (point.rows, point.seq_len, point.k, point.length_mode.value, point.distribution.value)
            # all implementations are checked on the point's inputs first, then all again on the new
            # scores the trial writes in place once per point: checking and rechecking each in turn
            # would check the later ones on the new scores only, never across the change
            outcomes = []
            for impl in impls:
                reason = impl.unsupported_reason(point.rows, point.seq_len, point.k)
                outcome = unsupported(impl, reason) if reason is not None else trial.check(impl)
                outcomes.append(outcome)
                if outcome.sticky:
                    break
            for outcome in outcomes:
                outcome = trial.recheck(outcome) if not outcome.sticky else outcome
                impl = outcome.impl
                result = CaseResult(impl.name, *head, outcome.status, outcome.reason)
                results.append(result)
                if outcome.sticky:
                    return Verification(results, StickyCudaError(
                        f"CUDA context broken while verifying {impl.name} at rows={point.rows} "
                        f"seq_len={point.seq_len} k={point.k} {point.distribution.value}: {outcome.reason}",
                        hint="the cases checked before it are listed above"))
                if on_case:
                    on_case(result)
            trial.release()
    except INTERRUPTS as exc:
        failed = sum(r.status in (Status.WRONG, Status.ERROR) for r in results)
        return Verification(results, Interrupted(
            f"interrupted after {len(results)} cases ({failed} failed so far); nothing is certified",
            hint="run verify again to check every case", exit_code=interrupt_exit_code(exc)))
    return Verification(results)
