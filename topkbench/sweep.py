"""The sweep: every (point, L2 mode, implementation) of a config checked, timed and stored.

Per point the workload is generated once (on the GPU when any implementation runs there); each
implementation is prepared, run once and checked for exactness against the contract (a wrong
answer is a ``wrong`` row, never a timing); the correct ones are timed interleaved; the point's
rows are written to the run's store before the next point starts. An implementation that raises
gives an ``error`` row and the sweep goes on, unless the CUDA context is broken (a sticky error):
then the rows so far are saved and StickyCudaError names the point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from topkbench.config import AVAILABLE, L2Mode, Point, SweepConfig
from topkbench.errors import StickyCudaError, UnsupportedError, UsageError, one_line
from topkbench.exactness import TopkChecker
from topkbench.impls import Device, Implementation, registry
from topkbench.provenance import device_info, measure_copy_bandwidth_gbs, run_provenance, utc_now
from topkbench.schema import SCHEMA_VERSION, Status
from topkbench.store import RunStore
from topkbench.timing import Clock, CudaClock, HostClock, Stats, measure_interleaved
from topkbench.workload import PointInputs, Workload, WorkloadSpec, bytes_moved

ProgressFn = Callable[[int, str], None]


def resolve_implementations(config: SweepConfig, requested: list[str] | None = None) -> list[Implementation]:
    """The implementations to run: --impl names, else the config's list, else all usable here.

    Named implementations must be usable here (DeviceError otherwise); ``available`` quietly
    takes what this machine can run.
    """
    names = requested or config.implementations
    if names == AVAILABLE:
        return [registry.get(n) for n in registry.available()]
    impls = [registry.require(n) for n in names]
    if not impls:
        raise UsageError("no implementations to run")
    return impls


def timing_mode_of(impl: Implementation, config: SweepConfig) -> str:
    return config.timing.mode.value if impl.device is Device.CUDA else "host"


def unsupported_reason(impl: Implementation, point: Point, l2: L2Mode) -> str | None:
    if point.k >= point.seq_len:
        return f"k={point.k} >= seq_len={point.seq_len}: every index is selected, nothing to time"
    if l2 is L2Mode.COLD and impl.device is Device.CPU:
        return "cold-L2 timing is a GPU mode"
    return impl.unsupported_reason(point.rows, point.seq_len, point.k)


@dataclass
class PointTasks:
    point: Point
    l2: L2Mode
    measure: list[Implementation] = field(default_factory=list)
    unsupported: list[tuple[Implementation, str]] = field(default_factory=list)


@dataclass
class Plan:
    tasks: list[PointTasks]
    already_done: int

    @property
    def to_measure(self) -> int:
        return sum(len(t.measure) for t in self.tasks)

    @property
    def unsupported(self) -> int:
        return sum(len(t.unsupported) for t in self.tasks)


def measurement_key(point: Point, impl: Implementation, l2: L2Mode, config: SweepConfig) -> tuple:
    return (point.rows, point.seq_len, point.k, point.length_mode.value, point.distribution.value,
            impl.name, timing_mode_of(impl, config), l2.value)


def plan_sweep(config: SweepConfig, impls: list[Implementation], done: set[tuple],
               only: Mapping[str, Sequence[Any]] | None = None) -> Plan:
    """Sort every measurement into to-measure, unsupported (with its reason) or already done."""
    tasks, already = [], 0
    for point in config.points(only):
        for l2 in config.timing.l2:
            entry = PointTasks(point, l2)
            for impl in impls:
                if measurement_key(point, impl, l2, config) in done:
                    already += 1
                    continue
                reason = unsupported_reason(impl, point, l2)
                if reason is None:
                    entry.measure.append(impl)
                else:
                    entry.unsupported.append((impl, reason))
            if entry.measure or entry.unsupported:
                tasks.append(entry)
    return Plan(tasks, already)


def cuda_context_broken() -> bool:
    """True when the CUDA context can no longer run work (illegal address, launch failure...)."""
    if not torch.cuda.is_available():
        return False
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
    except Exception:  # noqa: BLE001 - any failure here means the context is gone
        return True
    return False


class PointMeasurer:
    """Measures the implementations of one point and turns the outcome into result rows."""

    def __init__(self, config: SweepConfig, base: dict[str, Any], cuda: bool, flush: torch.Tensor | None) -> None:
        self.config = config
        self.base = base
        self.cuda = cuda
        self.flush = flush

    def _row(self, task: PointTasks, impl: Implementation, workload: Workload | None, status: Status,
             reason: str = "", stats: Stats | None = None, clock: Clock | None = None) -> dict[str, Any]:
        p = task.point
        nan = float("nan")
        mean_length = workload.mean_length if workload is not None else float(p.seq_len)
        nbytes = bytes_moved(p.rows, mean_length, p.k)
        floor_us = nbytes / (self.base["bandwidth_gbs"] * 1e3)
        ok = stats is not None and stats.n > 0
        median = stats.median if ok else nan
        return {
            **self.base,
            "rows": p.rows, "seq_len": p.seq_len, "k": p.k, "length_mode": p.length_mode.value,
            "distribution": p.distribution.value, "mean_length": mean_length,
            "impl": impl.name, "impl_device": impl.device.value, "timing_mode": timing_mode_of(impl, self.config),
            "l2": task.l2.value, "launches_per_sample": clock.launches_per_sample if clock else 0,
            "status": status.value, "reason": reason,
            "median_us": median, "p20_us": stats.p20 if ok else nan, "p80_us": stats.p80 if ok else nan,
            "mean_us": stats.mean if ok else nan, "min_us": stats.min if ok else nan,
            "n_samples": stats.n if ok else 0, "samples_us": list(stats.samples_us) if ok else [],
            "rel_spread": stats.rel_spread if ok else nan, "noisy": bool(stats.noisy) if ok else False,
            "bytes": nbytes, "floor_us": floor_us, "pct_of_floor": 100.0 * floor_us / median if ok else nan,
            "kernel_hash": impl.kernel_hash() or "", "timestamp": utc_now(),
        }

    def _clock(self, impl: Implementation, runner: Any, l2: L2Mode) -> Clock:
        if impl.device is Device.CPU:
            return HostClock(runner)
        return CudaClock(runner, self.config.timing.mode, l2, self.config.timing.launches_per_sample, self.flush)

    def measure(self, task: PointTasks) -> list[dict[str, Any]]:
        p = task.point
        rows = [self._row(task, impl, None, Status.UNSUPPORTED, reason) for impl, reason in task.unsupported]
        if not task.measure:
            return rows
        spec = WorkloadSpec(p.rows, p.seq_len, p.k, p.distribution, p.length_mode, self.config.seed)
        inputs = PointInputs(spec, self.cuda)
        workload = inputs.primary
        clocks: dict[str, Clock] = {}
        impl_of = {impl.name: impl for impl in task.measure}
        checkers: dict[str, TopkChecker] = {}  # per device: the reference top-k is computed once
        for impl in task.measure:
            w = inputs.on(impl.device.value)
            try:
                runner = impl.prepare(w.logits, w.lengths_arg, p.k)
                runner.run()
                if impl.device.value not in checkers:
                    checkers[impl.device.value] = TopkChecker(w.logits, w.lengths, p.k)
                check = checkers[impl.device.value].check(runner.result())
            except UnsupportedError as exc:
                rows.append(self._row(task, impl, workload, Status.UNSUPPORTED, exc.message))
                continue
            except Exception as exc:  # noqa: BLE001 - an implementation's failure is data
                rows.append(self._row(task, impl, workload, Status.ERROR, one_line(exc)))
                self._stop_if_sticky(rows, task, impl, exc)
                continue
            if not check.ok:
                rows.append(self._row(task, impl, workload, Status.WRONG, check.reason))
                continue
            clocks[impl.name] = self._clock(impl, runner, task.l2)
        del checkers  # free the reference before timing
        try:
            stats = measure_interleaved(clocks, self.config.timing)
        except Exception as exc:  # noqa: BLE001
            for name in clocks:
                rows.append(self._row(task, impl_of[name], workload, Status.ERROR, "while timing: " + one_line(exc)))
            self._stop_if_sticky(rows, task, None, exc)
            return rows
        finally:
            for clock in clocks.values():
                clock.close()
        for name, clock in clocks.items():
            rows.append(self._row(task, impl_of[name], workload, Status.OK, "", stats[name], clock))
        return rows

    def _stop_if_sticky(self, rows: list[dict[str, Any]], task: PointTasks, impl: Implementation | None,
                        exc: BaseException) -> None:
        if self.cuda and cuda_context_broken():
            p = task.point
            where = (f"rows={p.rows} seq_len={p.seq_len} k={p.k} {p.length_mode.value} {p.distribution.value}"
                     + (f" impl={impl.name}" if impl else ""))
            raise _StickyAtPoint(rows, StickyCudaError(
                f"CUDA context broken at {where}: {one_line(exc)}",
                hint="results so far are saved; the failing point is recorded as an error, so re-running resumes past it"))


class _StickyAtPoint(Exception):
    def __init__(self, rows: list[dict[str, Any]], error: StickyCudaError) -> None:
        super().__init__(error.message)
        self.rows = rows
        self.error = error


@dataclass
class SweepOutcome:
    store: RunStore
    plan: Plan
    path: Path | None
    measured_rows: list[dict[str, Any]]


def run_sweep(
    config: SweepConfig,
    out_dir: Path,
    requested: list[str] | None = None,
    resume: bool = True,
    on_plan: Callable[[Plan, RunStore], None] | None = None,
    on_progress: ProgressFn | None = None,
    *,
    only: Mapping[str, Sequence[Any]] | None = None,
) -> SweepOutcome:
    impls = resolve_implementations(config, requested)
    cuda = any(impl.device is Device.CUDA for impl in impls)
    device = device_info(cuda)
    store = RunStore.open(out_dir, device.gpu_slug, config.name, config.hash(), resume)
    plan = plan_sweep(config, impls, store.done_keys() if store.exists else set(), only)
    if on_plan:
        on_plan(plan, store)
    if not plan.tasks:
        return SweepOutcome(store, plan, store.finalize(), [])

    base = {
        **run_provenance(device),
        "bandwidth_gbs": measure_copy_bandwidth_gbs(cuda),
        "config_name": config.name, "config_hash": config.hash(), "seed": config.seed,
        "run_id": store.run_id, "schema_version": SCHEMA_VERSION,
    }
    flush = None
    if cuda and L2Mode.COLD in config.timing.l2:
        flush = torch.zeros(max(2 * device.l2_bytes, 64 << 20) // 4, dtype=torch.float32, device="cuda")
    measurer = PointMeasurer(config, base, cuda, flush)
    measured: list[dict[str, Any]] = []
    for task in plan.tasks:
        p = task.point
        label = f"rows={p.rows} L={p.seq_len} k={p.k} {p.length_mode.value} {p.distribution.value} {task.l2.value}"
        try:
            rows = measurer.measure(task)
        except _StickyAtPoint as sticky:
            store.append(sticky.rows)
            raise sticky.error from None
        store.append(rows)
        measured += rows
        if on_progress:
            on_progress(len(task.measure), label)
    return SweepOutcome(store, plan, store.finalize(), measured)
