"""Timing microsecond selections (docs/design.md section 6).

A :class:`Clock` takes one sample: the time of one selection in microseconds, averaged over
``launches_per_sample`` selections. GPU clocks time with CUDA events on a dedicated stream:
``graph`` replays a CUDA graph of N launches (serving engines run decode under graphs), ``eager``
launches N times; cold L2 overwrites a buffer of twice the L2 size before each sample, outside the
timed region, and times one launch. The CPU clock uses ``perf_counter_ns`` with N chosen so a
sample lasts at least a millisecond.

:func:`measure_interleaved` warms every clock up, then takes samples round-robin across the
implementations of a point (so that drift hits all alike) until each one's relative spread
(p80 - p20) / median is at or under the target with at least ``min_samples``, or the point's time
budget or ``max_samples`` is reached. Every sample is kept.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import numpy as np
import torch

from topkbench.impls.base import Device, Implementation, Runner


class TimingMode(str, Enum):
    """How a sample is taken: a CUDA graph of N launches replayed, N eager launches, or (CPU
    implementations) the host clock."""

    GRAPH = "graph"
    EAGER = "eager"
    HOST = "host"


class L2Mode(str, Enum):
    HOT = "hot"
    COLD = "cold"


@dataclass(frozen=True)
class TimingSettings:
    mode: TimingMode = TimingMode.GRAPH
    l2: tuple[L2Mode, ...] = (L2Mode.HOT,)
    #: Selections per timed sample (CUDA-graph launches per replay, eager launches per sample).
    launches_per_sample: int = 20
    warmup: int = 3
    min_samples: int = 10
    max_samples: int = 200
    #: Stop sampling an implementation once (p80 - p20) / median is at or under this.
    noise_target: float = 0.05
    #: Seconds of sampling per clock of a point, pooled: a point timed with three clocks (the
    #: read floor counts as one) samples for at most three times this, once every clock has its
    #: ``min_samples`` (those are always taken).
    budget_s: float = 2.0


def timing_mode_of(impl: Implementation, settings: TimingSettings) -> TimingMode:
    """The clock an implementation is timed with: the host clock on the CPU; on the GPU the
    configured mode, except that an implementation that cannot be graph-captured runs eagerly."""
    if impl.device is Device.CPU:
        return TimingMode.HOST
    if settings.mode is TimingMode.GRAPH and not impl.graph_capturable:
        return TimingMode.EAGER
    return settings.mode


def cold_l2_unsupported_reason(impl: Implementation) -> str | None:
    return "cold-L2 timing is a GPU mode" if impl.device is Device.CPU else None


def cold_l2_flush_buffer(l2_bytes: int) -> torch.Tensor:
    """A buffer whose read-modify-write evicts the inputs from an L2 of ``l2_bytes``: twice the
    L2, and at least 64 MiB where the device reports no L2 size."""
    return torch.zeros(max(2 * l2_bytes, 64 << 20) // 4, dtype=torch.float32, device="cuda")


def make_clock(impl: Implementation, runner: Runner, settings: TimingSettings, l2: L2Mode,
               flush: torch.Tensor | None = None) -> "Clock":
    """The clock that times ``runner`` as ``impl`` must be timed (see :func:`timing_mode_of`)."""
    mode = timing_mode_of(impl, settings)
    if mode is TimingMode.HOST:
        return HostClock(runner)
    return CudaClock(runner, mode, l2, settings.launches_per_sample, flush)

#: Samples taken from one clock per round of the interleaving.
SAMPLES_PER_ROUND = 3
#: A host-clock sample should last at least this long, so the clock's resolution does not matter.
MIN_HOST_SAMPLE_NS = 1_000_000


@dataclass
class Stats:
    samples_us: list[float] = field(default_factory=list)
    noise_target: float = 0.05

    @property
    def n(self) -> int:
        return len(self.samples_us)

    def _q(self, q: float) -> float:
        return float(np.quantile(self.samples_us, q)) if self.samples_us else math.nan

    @property
    def median(self) -> float:
        return self._q(0.5)

    @property
    def p20(self) -> float:
        return self._q(0.2)

    @property
    def p80(self) -> float:
        return self._q(0.8)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_us)) if self.samples_us else math.nan

    @property
    def min(self) -> float:
        return float(np.min(self.samples_us)) if self.samples_us else math.nan

    @property
    def rel_spread(self) -> float:
        median = self.median
        return (self.p80 - self.p20) / median if median > 0 else math.nan

    @property
    def noisy(self) -> bool:
        spread = self.rel_spread
        return not (spread <= self.noise_target)


class Clock(ABC):
    """Takes timed samples of one prepared runner."""

    timing_mode: str
    launches_per_sample: int

    @abstractmethod
    def warmup(self, times: int) -> None: ...

    @abstractmethod
    def sample(self) -> float:
        """Microseconds per selection, averaged over ``launches_per_sample`` selections."""

    def close(self) -> None:
        """Release what the clock holds (graphs, buffers)."""


class HostClock(Clock):
    timing_mode = TimingMode.HOST.value

    def __init__(self, runner: Runner, min_sample_ns: int = MIN_HOST_SAMPLE_NS) -> None:
        self._runner = runner
        self._min_sample_ns = min_sample_ns
        self.launches_per_sample = 1

    def warmup(self, times: int) -> None:
        start = time.perf_counter_ns()
        for _ in range(max(1, times)):
            self._runner.run()
        per_call = (time.perf_counter_ns() - start) / max(1, times)
        self.launches_per_sample = max(1, math.ceil(self._min_sample_ns / max(per_call, 1.0)))

    def sample(self) -> float:
        run = self._runner.run
        n = self.launches_per_sample
        start = time.perf_counter_ns()
        for _ in range(n):
            run()
        return (time.perf_counter_ns() - start) / n / 1e3


class CudaClock(Clock):
    """CUDA-event timing on a dedicated stream, eager or graph replay, hot or cold L2."""

    def __init__(self, runner: Runner, mode: TimingMode, l2: L2Mode, launches: int,
                 flush: torch.Tensor | None = None) -> None:
        self._runner = runner
        self._mode = mode
        self.timing_mode = mode.value
        self._cold = l2 is L2Mode.COLD
        if self._cold and flush is None:
            raise ValueError("cold-L2 timing needs a flush buffer")
        self._flush = flush
        # Cold L2 times single launches: a second launch in the same sample would find a warm L2.
        self.launches_per_sample = 1 if self._cold else launches
        self._stream = torch.cuda.Stream()
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._graph: torch.cuda.CUDAGraph | None = None

    def _launch_all(self) -> None:
        for _ in range(self.launches_per_sample):
            self._runner.run()

    def warmup(self, times: int) -> None:
        with torch.cuda.stream(self._stream):
            for _ in range(max(1, times)):
                self._runner.run()
        self._stream.synchronize()
        if self._mode is TimingMode.GRAPH and self._graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._launch_all()
            self._graph = graph
            with torch.cuda.stream(self._stream):
                graph.replay()
            self._stream.synchronize()

    def sample(self) -> float:
        with torch.cuda.stream(self._stream):
            if self._cold:
                self._flush.add_(1)  # a read-modify-write of 2x L2 evicts the inputs
            self._start.record(self._stream)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._launch_all()
            self._end.record(self._stream)
        self._end.synchronize()
        return self._start.elapsed_time(self._end) * 1e3 / self.launches_per_sample

    def close(self) -> None:
        self._graph = None


def measure_interleaved(
    clocks: dict[str, Clock],
    settings: TimingSettings,
    now: Callable[[], float] = time.perf_counter,
) -> dict[str, Stats]:
    """Warm up, then sample the clocks round-robin until each is quiet or the budget ends."""
    stats = {name: Stats(noise_target=settings.noise_target) for name in clocks}
    for clock in clocks.values():
        clock.warmup(settings.warmup)
    # budget_s is per clock, pooled: a point's sampling ends after budget_s x clocks
    deadline = now() + settings.budget_s * max(1, len(clocks))
    active = list(clocks)
    while active:
        for name in list(active):
            s = stats[name]
            # never more than max_samples, even when it is not a multiple of the round size
            for _ in range(min(SAMPLES_PER_ROUND, settings.max_samples - s.n)):
                s.samples_us.append(clocks[name].sample())
            quiet = s.n >= settings.min_samples and s.rel_spread <= settings.noise_target
            full = s.n >= settings.max_samples
            out_of_time = now() >= deadline and s.n >= settings.min_samples
            if quiet or full or out_of_time:
                active.remove(name)
    return stats
