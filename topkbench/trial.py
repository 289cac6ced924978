"""The measuring core: every check and every timing of an implementation goes through here.

``sweep``, ``verify`` and ``scripts/bench_variants.py`` all use one :class:`Trial` per point:

1. ``check(impl)``: prepare, fill the runner's output buffer with a poison pattern that no valid
   answer has, run once, check the result against the contract (for a deterministic
   implementation also the lowest-index tie rule) and return a typed :class:`Outcome`. A fresh
   buffer from the allocator can still hold another implementation's correct answer, so an
   implementation that skips writing part of its output would otherwise pass.
2. ``time(outcomes, ...)``: only ``ok`` outcomes get a clock; samples are interleaved, with one
   streaming read of the same scores among them at GPU points (the read floor, ``read_us``).
3. ``recheck(outcome)``: after timing, new scores and lengths are written in place into the same
   input buffers (as a CUDA-graph replay sees them), the output is poisoned again, and the runner
   must be exact on the new inputs too; a deterministic implementation must also return the same
   output bit for bit on a second run. A runner that did its work in ``prepare`` and only copies a
   stored answer fails here. A timing stands only if the answer was still exact after it.

``result_row`` turns an outcome into a result row through the schema's field list, the one place
rows are built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from topkbench import __version__
from topkbench.errors import StickyCudaError, UnsupportedError, one_line
from topkbench.exactness import TopkChecker
from topkbench.impls import Implementation
from topkbench.read_floor import read_floor_runner
from topkbench.schema import Status, build_row
from topkbench.timing import (Clock, CudaClock, L2Mode, Stats, TimingSettings, make_clock, measure_interleaved,
                              timing_mode_of)
from topkbench.workload import PointInputs, Workload, WorkloadSpec, bytes_moved, make_workload

#: The poison of signed integer outputs: no valid index (indices are >= 0, padding is -1), and the
#: low word of the int64 value is -2 as well (library baselines keep int64 indices).
POISON_INDEX = -2


def poison(tensor: torch.Tensor) -> None:
    """Fill ``tensor`` with a value no valid answer holds: -2 for signed integers (all ones for
    unsigned), NaN for floats."""
    if tensor.dtype.is_floating_point:
        tensor.fill_(float("nan"))
    elif tensor.dtype == torch.bool:
        tensor.fill_(True)
    elif tensor.dtype.is_signed:
        tensor.fill_(POISON_INDEX)
    else:
        tensor.fill_(torch.iinfo(tensor.dtype).max)


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


@dataclass
class Outcome:
    """What became of one implementation at one point."""

    impl: Implementation
    status: Status
    reason: str = ""
    runner: Any = None
    #: The failure broke the CUDA context: nothing more can run in this process.
    sticky: bool = False

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


def unsupported(impl: Implementation, reason: str) -> Outcome:
    return Outcome(impl, Status.UNSUPPORTED, reason)


class Trial:
    """One point's inputs and reference, checked and timed for each implementation."""

    def __init__(self, spec: WorkloadSpec, cuda: bool) -> None:
        self.spec = spec
        self.inputs = PointInputs(spec, cuda)
        self._cuda = cuda
        self._checkers: dict[str, TopkChecker] = {}  # per device: the reference is computed once
        self._refilled = False
        #: The read floor's samples from the last ``time(..., read_floor=True)``.
        self.read_stats: Stats | None = None

    @property
    def workload(self) -> Workload:
        return self.inputs.primary

    def _checker(self, device: str) -> TopkChecker:
        if device not in self._checkers:
            w = self.inputs.on(device)
            self._checkers[device] = TopkChecker(w.logits, w.lengths, self.spec.k)
        return self._checkers[device]

    def _run_and_check(self, impl: Implementation, runner: Any) -> tuple[bool, str, torch.Tensor]:
        poison(runner.output)
        runner.run()
        result = runner.result()
        check = self._checker(impl.device.value).check(result, deterministic=impl.deterministic)
        return check.ok, check.reason, result

    def _failed(self, impl: Implementation, exc: BaseException, when: str = "") -> Outcome:
        if isinstance(exc, UnsupportedError):
            return unsupported(impl, exc.message)
        sticky = self._cuda and cuda_context_broken()
        return Outcome(impl, Status.ERROR, when + one_line(exc), sticky=sticky)

    def check(self, impl: Implementation) -> Outcome:
        """Prepare, poison, run once and check ``impl`` at this point."""
        w = self.inputs.on(impl.device.value)
        try:
            runner = impl.prepare(w.logits, w.lengths_arg, self.spec.k)
            if not isinstance(getattr(runner, "output", None), torch.Tensor):
                return Outcome(impl, Status.ERROR, f"{impl.name}: its runner exposes no output buffer to poison "
                                                  "(Runner.output)")
            ok, reason, result = self._run_and_check(impl, runner)
        except Exception as exc:  # noqa: BLE001 - an implementation's failure is data
            return self._failed(impl, exc)
        if not ok:
            return Outcome(impl, Status.WRONG, reason)
        return Outcome(impl, Status.OK, runner=runner)

    def refill(self) -> None:
        """Write the scores and lengths of another seed into the point's input buffers in place
        (every device copy), and drop the reference. Done once per trial."""
        if self._refilled:
            return
        fresh = make_workload(replace(self.spec, seed=self.spec.seed + 1), self.workload.logits.device)
        for device in self.inputs.devices():
            w = self.inputs.on(device)
            w.logits.copy_(fresh.logits.to(w.logits.device))
            w.lengths.copy_(fresh.lengths.to(w.lengths.device))
        self._checkers.clear()
        self._refilled = True

    def recheck(self, outcome: Outcome) -> Outcome:
        """Check again on new inputs written in place (see the module doc); deterministic
        implementations must also return the same output on a second run."""
        if not outcome.ok:
            return outcome
        impl = outcome.impl
        when = "on new scores written in place after the first check: "
        try:
            self.refill()
            ok, reason, result = self._run_and_check(impl, outcome.runner)
            if ok and impl.deterministic:
                result = result.detach().clone()
                poison(outcome.runner.output)
                outcome.runner.run()
                if not torch.equal(outcome.runner.result(), result):
                    return Outcome(impl, Status.WRONG, "a deterministic implementation returned a different "
                                                       "output on a second run over the same input")
        except Exception as exc:  # noqa: BLE001
            return self._failed(impl, exc, when)
        if not ok:
            return Outcome(impl, Status.WRONG, when + reason)
        return outcome

    def time(self, outcomes: list[Outcome], settings: TimingSettings, l2: L2Mode,
             flush: torch.Tensor | None = None, read_floor: bool = False) -> list[tuple[Stats, Clock] | None]:
        """Time the ok outcomes interleaved: (stats, clock) per outcome, None for those not ok.
        With ``read_floor`` (GPU points) one streaming read of the scores is timed among them, in
        the same mode, into ``self.read_stats``. The clocks are closed before returning."""
        clocks: dict[str, Clock] = {str(i): make_clock(o.impl, o.runner, settings, l2, flush)
                                    for i, o in enumerate(outcomes) if o.ok}
        self.read_stats = None
        if read_floor and clocks:
            w = self.workload
            runner = read_floor_runner(w.logits, w.lengths_arg)
            clocks["read"] = CudaClock(runner, settings.mode, l2, settings.launches_per_sample, flush)
        try:
            stats = measure_interleaved(clocks, settings)
        finally:
            for clock in clocks.values():
                clock.close()
        self.read_stats = stats.get("read")
        return [(stats[str(i)], clocks[str(i)]) if str(i) in clocks else None for i in range(len(outcomes))]

    def release(self) -> None:
        """Free the reference (it can be as large as the scores) before the next point."""
        self._checkers.clear()


@dataclass(frozen=True)
class RowContext:
    """What every row of a run shares: provenance, the config and the timing settings."""

    base: Mapping[str, Any]
    settings: TimingSettings
    #: name -> (source, version, hash) of each implementation (topkbench.impls.registry.provenance_of)
    impl_provenance: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)


def result_row(ctx: RowContext, spec: WorkloadSpec, l2: L2Mode, outcome: Outcome, mean_length: float,
               stats: Stats | None = None, clock: Clock | None = None, timestamp: str = "",
               read_us: float = math.nan) -> dict[str, Any]:
    """The result row of one outcome (timed when ``stats`` is given), checked against the schema."""
    impl = outcome.impl
    nan = math.nan
    timed = outcome.ok
    if timed and (stats is None or stats.n == 0):
        raise ValueError(f"{impl.name}: an ok outcome needs its timing samples")
    nbytes = bytes_moved(spec.rows, mean_length, spec.k)
    floor_us = nbytes / (ctx.base["bandwidth_gbs"] * 1e3)
    median = stats.median if timed else nan
    source, version, code_hash = ctx.impl_provenance.get(impl.name, ("builtin", __version__, ""))
    return build_row({
        **ctx.base,
        "rows": spec.rows, "seq_len": spec.seq_len, "k": spec.k, "length_mode": spec.length_mode.value,
        "distribution": spec.distribution.value, "mean_length": mean_length,
        "impl": impl.name, "impl_device": impl.device.value,
        "timing_mode": timing_mode_of(impl, ctx.settings).value, "l2": l2.value,
        "launches_per_sample": clock.launches_per_sample if clock is not None and timed else 0,
        "status": outcome.status.value, "reason": outcome.reason,
        "median_us": median, "p20_us": stats.p20 if timed else nan, "p80_us": stats.p80 if timed else nan,
        "mean_us": stats.mean if timed else nan, "min_us": stats.min if timed else nan,
        "n_samples": stats.n if timed else 0, "samples_us": list(stats.samples_us) if timed else [],
        "rel_spread": stats.rel_spread if timed else nan, "noisy": bool(stats.noisy) if timed else False,
        "bytes": nbytes, "floor_us": floor_us, "pct_of_floor": 100.0 * floor_us / median if timed else nan,
        "read_us": read_us,
        "kernel_hash": impl.kernel_hash() or code_hash, "impl_source": source, "impl_version": version,
        "deterministic": bool(impl.deterministic),
        "timestamp": timestamp,
    })


def sticky_error(outcome: Outcome, where: str) -> StickyCudaError:
    return StickyCudaError(f"CUDA context broken at {where} impl={outcome.impl.name}: {outcome.reason}",
                           hint="results so far are saved; the failing point is recorded as an error, so "
                                "re-running resumes past it")


