"""``verify``: the exactness of every implementation over a config's shapes and distributions.

Unlike the sweep it also runs points with k >= seq_len (the -1 padding rules) and times nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from topkbench.config import SweepConfig
from topkbench.errors import StickyCudaError, TopkbenchError, UnsupportedError, one_line
from topkbench.exactness import TopkChecker
from topkbench.impls import Device, Implementation
from topkbench.sweep import cuda_context_broken, resolve_implementations
from topkbench.workload import PointInputs, WorkloadSpec


@dataclass(frozen=True)
class CaseResult:
    impl: str
    rows: int
    seq_len: int
    k: int
    length_mode: str
    distribution: str
    outcome: str  # pass, fail, unsupported, error
    detail: str = ""


@dataclass
class Verification:
    results: list[CaseResult]
    #: Set when a broken CUDA context ended the run early: ``results`` holds the cases before it.
    stopped_by: StickyCudaError | None = None


def verify(config: SweepConfig, requested: list[str] | None = None,
           on_case: Callable[[CaseResult], None] | None = None) -> Verification:
    impls: list[Implementation] = resolve_implementations(config, requested)
    cuda = any(i.device is Device.CUDA for i in impls)
    results: list[CaseResult] = []
    for point in config.points():
        spec = WorkloadSpec(point.rows, point.seq_len, point.k, point.distribution, point.length_mode, config.seed)
        inputs = PointInputs(spec, cuda)
        checkers: dict[str, TopkChecker] = {}  # per device: the reference top-k is computed once
        for impl in impls:
            w = inputs.on(impl.device.value)
            head = (impl.name, point.rows, point.seq_len, point.k, point.length_mode.value, point.distribution.value)
            reason = impl.unsupported_reason(point.rows, point.seq_len, point.k)
            if reason is not None:
                result = CaseResult(*head, "unsupported", reason)
            else:
                try:
                    out = impl(w.logits, point.k, w.lengths_arg)
                    if impl.device.value not in checkers:
                        checkers[impl.device.value] = TopkChecker(w.logits, w.lengths, point.k)
                    check = checkers[impl.device.value].check(out)
                    result = CaseResult(*head, "pass" if check.ok else "fail", check.reason)
                except UnsupportedError as exc:
                    result = CaseResult(*head, "unsupported", exc.message)
                except TopkbenchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - an implementation's failure is a result
                    result = CaseResult(*head, "error", one_line(exc))
                    if cuda and cuda_context_broken():
                        results.append(result)
                        return Verification(results, StickyCudaError(
                            f"CUDA context broken while verifying {impl.name} at rows={point.rows} "
                            f"seq_len={point.seq_len} k={point.k} {point.distribution.value}: {result.detail}",
                            hint="the cases checked before it are listed above"))
            results.append(result)
            if on_case:
                on_case(result)
    return Verification(results)
