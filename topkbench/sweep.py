"""The sweep: every (point, L2 mode, implementation) of a config checked, timed and stored.

A sweep is a plan plus :class:`topkbench.trial.Trial` plus the run's store. Per point the workload
is generated once (on the GPU when any implementation runs there); each implementation is checked
with a poisoned output (a wrong answer is a ``wrong`` row, never a timing), the exact ones are
timed interleaved and checked again, and the point's rows are written to the run's store before
the next point starts. An implementation that raises gives an ``error`` row and the sweep goes on,
unless the CUDA context is broken: then the rows so far are saved and StickyCudaError names the
point. Ctrl-C or SIGTERM stops it with every finished point kept (Interrupted).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from topkbench.config import AVAILABLE, Point, SweepConfig
from topkbench.device_lock import hold_device
from topkbench.errors import INTERRUPTS, Interrupted, UsageError, interrupt_exit_code
from topkbench.footprint import check_fits
from topkbench.impls import Device, Implementation, registry
from topkbench.progress import task_features
from topkbench.provenance import DeviceInfo, device_info, measure_copy_bandwidth_gbs, run_provenance, utc_now
from topkbench.schema import SCHEMA_VERSION
from topkbench.store import RunStore
from topkbench.timing import L2Mode, cold_l2_flush_buffer, cold_l2_unsupported_reason, timing_mode_of
from topkbench.trial import RowContext, Trial, result_row, sticky_error, unsupported
from topkbench.workload import WorkloadSpec


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


def unsupported_reason(impl: Implementation, point: Point, l2: L2Mode) -> str | None:
    if point.k >= point.seq_len:
        return f"k={point.k} >= seq_len={point.seq_len}: every index is selected, nothing to time"
    cold_reason = cold_l2_unsupported_reason(impl) if l2 is L2Mode.COLD else None
    return cold_reason or impl.unsupported_reason(point.rows, point.seq_len, point.k)


@dataclass
class PointTasks:
    point: Point
    l2: L2Mode
    measure: list[Implementation] = field(default_factory=list)
    unsupported: list[tuple[Implementation, str]] = field(default_factory=list)

    @property
    def cost_features(self) -> Any:
        """The inputs of the cost model behind the ETA and the split over GPUs (progress.py)."""
        return task_features(len(self.measure), self.point.rows * self.point.seq_len * 4)

    @property
    def label(self) -> str:
        p = self.point
        return f"rows={p.rows} L={p.seq_len} k={p.k} {p.length_mode.value} {p.distribution.value} {self.l2.value}"


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
            impl.name, timing_mode_of(impl, config.timing).value, l2.value)


def plan_sweep(config: SweepConfig, impls: list[Implementation], done: set[tuple],
               only: Mapping[str, Sequence[Any]] | None = None,
               point_filter: Callable[[Point], bool] | None = None) -> Plan:
    """Sort every measurement into to-measure, unsupported (with its reason) or already done.

    ``point_filter`` keeps a subset of the points (a shard, one worker's share of the GPUs)."""
    tasks, already = [], 0
    for point in config.points(only):
        if point_filter is not None and not point_filter(point):
            continue
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


def measure_point(task: PointTasks, config: SweepConfig, ctx: RowContext, cuda: bool,
                  flush: torch.Tensor | None) -> tuple[list[dict[str, Any]], Any]:
    """Check, time and re-check one point's implementations: its rows, and the outcome that broke
    the CUDA context if one did (None otherwise)."""
    p = task.point
    spec = WorkloadSpec(p.rows, p.seq_len, p.k, p.distribution, p.length_mode, config.seed)

    def unsupported_rows(read_us: float = math.nan) -> list[dict[str, Any]]:
        return [result_row(ctx, spec, task.l2, unsupported(impl, reason), float(p.seq_len), timestamp=utc_now(),
                           read_us=read_us) for impl, reason in task.unsupported]

    if not task.measure:
        return unsupported_rows(), None
    trial = Trial(spec, cuda)
    mean_length = trial.workload.mean_length
    outcomes = []
    for impl in task.measure:
        outcome = trial.check(impl)
        outcomes.append(outcome)
        if outcome.sticky:
            return unsupported_rows() + [result_row(ctx, spec, task.l2, o, mean_length, timestamp=utc_now())
                                         for o in outcomes], outcome
    timed = trial.time(outcomes, config.timing, task.l2, flush, read_floor=cuda)
    read_us = trial.read_stats.median if trial.read_stats is not None else math.nan
    rows = unsupported_rows(read_us)
    sticky = None
    for outcome, timing in zip(outcomes, timed):
        outcome = trial.recheck(outcome)  # a failed outcome comes back as it was
        if outcome.ok:
            stats, clock = timing
            rows.append(result_row(ctx, spec, task.l2, outcome, mean_length, stats, clock, utc_now(), read_us))
        else:
            sticky = sticky or (outcome if outcome.sticky else None)
            rows.append(result_row(ctx, spec, task.l2, outcome, mean_length, timestamp=utc_now(), read_us=read_us))
    trial.release()
    return rows, sticky


@dataclass
class SweepOutcome:
    store: RunStore
    plan: Plan
    path: Path | None
    measured_rows: list[dict[str, Any]]


#: on_point(task, rows, seconds): called after each point's rows are stored.
PointFn = Callable[[PointTasks, list[dict[str, Any]], float], None]


def impl_provenance(impls: list[Implementation]) -> dict[str, tuple[str, str, str]]:
    """name -> (source, version, hash) for the impl_source, impl_version and kernel_hash columns."""
    return {impl.name: (p.source, p.version, p.hash) for impl in impls for p in [registry.provenance_of(impl.name)]}


def device_key(device: DeviceInfo) -> tuple[str, str]:
    """(lock key, description) of the device a sweep measures on."""
    if device.is_cuda:
        return device.device_uuid or f"cuda{device.device_index}", f"GPU {device.device_index} ({device.gpu_name})"
    if device.device_index >= 0:  # a stand-in CPU device of a multi-device test (TOPKBENCH_FAKE_DEVICES)
        return f"cpu{device.device_index}", f"CPU stand-in device {device.device_index}"
    return "cpu", f"this machine's CPU ({device.gpu_name})"


def run_sweep(
    config: SweepConfig,
    out_dir: Path,
    requested: list[str] | None = None,
    resume: bool = True,
    on_plan: Callable[[Plan, RunStore], None] | None = None,
    on_point: PointFn | None = None,
    *,
    only: Mapping[str, Sequence[Any]] | None = None,
    point_filter: Callable[[Point], bool] | None = None,
    run_id: str | None = None,
    device_flag: str = "",
    finalize: bool = True,
    calibrate: Callable[[Callable[[PointTasks], tuple[list[dict[str, Any]], Any]]], str] | None = None,
) -> SweepOutcome:
    """Measure the config's points (``only``: a slice of its axes; ``point_filter``: a subset such
    as a shard) into the run ``run_id`` (default: resume the newest run of the config, or start
    one). ``device_flag`` is stamped on every row (a GPU the calibration found suspect);
    ``finalize=False`` leaves the parts for whoever compacts the run (multi-GPU workers).
    ``calibrate`` runs once the device is held, before the first point, with a function that
    measures a task without storing it; a non-empty string it returns replaces ``device_flag``
    (a multi-GPU worker's calibration, topkbench/calibration.py)."""
    impls = resolve_implementations(config, requested)
    cuda = any(impl.device is Device.CUDA for impl in impls)
    device = device_info(cuda)
    store = RunStore.open(out_dir, device.gpu_slug, config.name, config.hash(), resume, run_id=run_id)
    key, description = device_key(device)
    with hold_device(key, description, f"sweep {config.name} into {store.directory}"):
        plan = plan_sweep(config, impls, store.done_keys() if store.exists else set(), only, point_filter)
        check_fits([(t.point.rows, t.point.seq_len) for t in plan.tasks if t.measure], cuda)
        if on_plan:
            on_plan(plan, store)
        if not plan.tasks:
            return SweepOutcome(store, plan, store.finalize() if finalize else None, [])
        base = {
            **run_provenance(device),
            "bandwidth_gbs": measure_copy_bandwidth_gbs(cuda),
            "config_name": config.name, "config_hash": config.hash(), "seed": config.seed,
            "run_id": store.run_id, "schema_version": SCHEMA_VERSION, "device_flag": device_flag,
        }
        ctx = RowContext(base, config.timing, impl_provenance(impls))
        flush = cold_l2_flush_buffer(device.l2_bytes) if cuda and L2Mode.COLD in config.timing.l2 else None
        measured: list[dict[str, Any]] = []
        points_done = 0
        try:
            if calibrate is not None:
                flag = calibrate(lambda task: measure_point(task, config, ctx, cuda, flush))
                ctx = replace(ctx, base={**base, "device_flag": flag or device_flag})
            for task in plan.tasks:
                start = time.perf_counter()
                rows, sticky = measure_point(task, config, ctx, cuda, flush)
                store.append(rows)
                measured += rows
                points_done += 1
                if sticky is not None:
                    raise sticky_error(sticky, task.label)
                if on_point:
                    on_point(task, rows, time.perf_counter() - start)
        except INTERRUPTS as exc:
            raise Interrupted(
                f"interrupted: {points_done} of {len(plan.tasks)} points measured in this session are kept "
                f"in {store.parts_dir}",
                hint="run the same command to resume where it stopped", exit_code=interrupt_exit_code(exc)) from None
        return SweepOutcome(store, plan, store.finalize() if finalize else None, measured)
