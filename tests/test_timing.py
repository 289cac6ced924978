"""Timing logic with fake clocks: statistics, round-robin interleaving, the three stop rules."""

from __future__ import annotations

import itertools
import math
import time

import pytest

from topkbench import timing
from topkbench.config import TimingSettings
from topkbench.impls.base import Runner
from topkbench.timing import MIN_HOST_SAMPLE_NS, SAMPLES_PER_ROUND, Clock, HostClock, Stats, measure_interleaved


# ---- Stats ---------------------------------------------------------------------------------

def test_stats_on_known_samples():
    s = Stats(samples_us=[float(v) for v in range(1, 11)], noise_target=0.5)  # 1..10
    assert s.n == 10
    assert s.median == pytest.approx(5.5)
    assert s.p20 == pytest.approx(2.8)  # linear interpolation: 1 + 0.2 * 9
    assert s.p80 == pytest.approx(8.2)
    assert s.mean == pytest.approx(5.5)
    assert s.min == 1.0
    assert s.rel_spread == pytest.approx((8.2 - 2.8) / 5.5)
    assert s.noisy  # 0.98 > 0.5
    quiet = Stats(samples_us=[10.0] * 8 + [10.1, 9.9], noise_target=0.05)
    assert quiet.rel_spread < 0.05 and not quiet.noisy


def test_stats_edge_cases():
    empty = Stats()
    assert empty.n == 0
    assert math.isnan(empty.median) and math.isnan(empty.mean) and math.isnan(empty.min)
    assert math.isnan(empty.rel_spread) and empty.noisy
    zero = Stats(samples_us=[0.0, 0.0, 0.0])
    assert math.isnan(zero.rel_spread) and zero.noisy
    exact = Stats(samples_us=[3.0] * 5, noise_target=0.0)
    assert exact.rel_spread == 0.0 and not exact.noisy


# ---- measure_interleaved with fake clocks -------------------------------------------------

class FakeClock(Clock):
    """Yields a fixed sequence of samples; records every call in a shared log."""

    timing_mode = "fake"
    launches_per_sample = 1

    def __init__(self, name: str, samples, log: list, on_sample=None) -> None:
        self.name = name
        self._samples = iter(samples)
        self.log = log
        self.on_sample = on_sample
        self.warmed = 0

    def warmup(self, times: int) -> None:
        self.warmed += times
        self.log.append(("warmup", self.name))

    def sample(self) -> float:
        self.log.append(("sample", self.name))
        if self.on_sample:
            self.on_sample()
        return next(self._samples)


def settings(**kw) -> TimingSettings:
    base = dict(warmup=2, min_samples=6, max_samples=30, noise_target=0.05, budget_s=100.0)
    return TimingSettings(**{**base, **kw})


def noisy_forever():
    return itertools.cycle([1.0, 2.0, 3.0, 10.0])


def test_round_robin_interleaving_and_warmup_first():
    log: list = []
    clocks = {n: FakeClock(n, noisy_forever(), log) for n in ("a", "b", "c")}
    stats = measure_interleaved(clocks, settings(min_samples=3, max_samples=12))
    # every clock warmed up before the first sample, with the configured count
    first_sample = next(i for i, e in enumerate(log) if e[0] == "sample")
    assert sorted(e[1] for e in log[:first_sample]) == ["a", "b", "c"]
    assert all(c.warmed == 2 for c in clocks.values())
    order = [name for kind, name in log if kind == "sample"]
    # blocks of SAMPLES_PER_ROUND per clock, cycling a, b, c
    blocks = [order[i:i + SAMPLES_PER_ROUND] for i in range(0, len(order), SAMPLES_PER_ROUND)]
    assert all(len(set(b)) == 1 for b in blocks)
    assert [b[0] for b in blocks] == ["a", "b", "c"] * (len(blocks) // 3)
    assert all(s.n == 12 for s in stats.values())


def test_samples_are_kept_in_order():
    log: list = []
    seq = [5.0, 4.0, 6.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    stats = measure_interleaved({"a": FakeClock("a", iter(seq), log)}, settings(min_samples=6, noise_target=0.5))
    assert stats["a"].samples_us == seq[: stats["a"].n]
    assert stats["a"].noise_target == 0.5


def test_stops_when_quiet_after_min_samples():
    log: list = []
    quiet = FakeClock("quiet", itertools.repeat(7.0), log)
    noisy = FakeClock("noisy", noisy_forever(), log)
    stats = measure_interleaved({"quiet": quiet, "noisy": noisy}, settings(min_samples=6, max_samples=30))
    assert stats["quiet"].n == 6  # quiet from the start, stops as soon as min_samples are in
    assert stats["noisy"].n == 30
    # once quiet stopped, only noisy is sampled
    order = [name for kind, name in log if kind == "sample"]
    last_quiet = max(i for i, n in enumerate(order) if n == "quiet")
    assert set(order[last_quiet + 1:]) == {"noisy"}


def test_quiet_is_not_trusted_before_min_samples():
    log: list = []
    stats = measure_interleaved({"a": FakeClock("a", itertools.repeat(1.0), log)}, settings(min_samples=10))
    assert stats["a"].n >= 10


def test_becomes_quiet_later():
    log: list = []
    seq = itertools.chain([1.0, 9.0, 1.0, 9.0, 1.0, 9.0], itertools.repeat(4.0))
    stats = measure_interleaved({"a": FakeClock("a", seq, log)}, settings(min_samples=6, max_samples=300))
    s = stats["a"]
    assert s.rel_spread <= 0.05
    assert 6 < s.n < 300


@pytest.mark.parametrize("max_samples", [7, 9, 10, 30])
def test_stops_at_max_samples(max_samples):
    log: list = []
    stats = measure_interleaved({"a": FakeClock("a", noisy_forever(), log)},
                                settings(min_samples=3, max_samples=max_samples))
    assert stats["a"].n == max_samples
    assert stats["a"].noisy


class FakeNow:
    """A time source that moves forward a fixed step each time a sample is taken."""

    def __init__(self, step: float) -> None:
        self.t = 1000.0
        self.step = step

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.step


def test_stops_at_budget_with_fake_now():
    now = FakeNow(step=0.01)  # 10 ms per sample
    log: list = []
    clocks = {n: FakeClock(n, noisy_forever(), log, on_sample=now.tick) for n in ("a", "b")}
    # budget 0.3 s per implementation, 0.6 s for the point: about 60 samples in all
    stats = measure_interleaved(clocks, settings(min_samples=3, max_samples=10_000, budget_s=0.3), now=now)
    total = sum(s.n for s in stats.values())
    assert 60 <= total <= 60 + 2 * SAMPLES_PER_ROUND
    assert abs(stats["a"].n - stats["b"].n) <= SAMPLES_PER_ROUND
    assert now.t - 1000.0 == pytest.approx(total * 0.01)


def test_budget_does_not_cut_below_min_samples():
    now = FakeNow(step=10.0)  # every sample blows the budget
    log: list = []
    clocks = {n: FakeClock(n, noisy_forever(), log, on_sample=now.tick) for n in ("a", "b")}
    stats = measure_interleaved(clocks, settings(min_samples=8, max_samples=100, budget_s=0.1), now=now)
    for s in stats.values():
        assert 8 <= s.n < 8 + SAMPLES_PER_ROUND


def test_no_clocks():
    assert measure_interleaved({}, settings()) == {}


# ---- HostClock -----------------------------------------------------------------------------

class CountingRunner(Runner):
    def __init__(self, on_run=None) -> None:
        self.calls = 0
        self.on_run = on_run

    def run(self) -> None:
        self.calls += 1
        if self.on_run:
            self.on_run()

    def result(self):
        raise NotImplementedError


class FakeNs:
    """Stands in for the time module inside topkbench.timing: perf_counter_ns moves only on run()."""

    def __init__(self) -> None:
        self.ns = 10**9

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


@pytest.mark.parametrize("per_call_ns", [1, 999, 37_000, 400_000, 5_000_000])
def test_host_clock_calibrates_to_min_sample(monkeypatch, per_call_ns):
    fake = FakeNs()
    monkeypatch.setattr(timing, "time", fake)
    runner = CountingRunner(on_run=lambda: setattr(fake, "ns", fake.ns + per_call_ns))
    clock = HostClock(runner)
    assert clock.timing_mode == "host"
    clock.warmup(3)
    assert runner.calls == 3
    n = clock.launches_per_sample
    assert n == max(1, math.ceil(MIN_HOST_SAMPLE_NS / per_call_ns))
    assert n * per_call_ns >= MIN_HOST_SAMPLE_NS
    before, start_ns = runner.calls, fake.ns
    us = clock.sample()
    assert runner.calls - before == n
    assert fake.ns - start_ns >= MIN_HOST_SAMPLE_NS
    assert us == pytest.approx(per_call_ns / 1e3)


def test_host_clock_real_time():
    def spin():
        end = time.perf_counter_ns() + 50_000
        while time.perf_counter_ns() < end:
            pass

    clock = HostClock(CountingRunner(on_run=spin))
    clock.warmup(3)
    assert clock.launches_per_sample >= 2
    start = time.perf_counter_ns()
    us = clock.sample()
    elapsed = time.perf_counter_ns() - start
    assert elapsed >= 0.5 * MIN_HOST_SAMPLE_NS
    assert us >= 50.0


def test_measure_interleaved_with_host_clocks(monkeypatch):
    fake = FakeNs()
    monkeypatch.setattr(timing, "time", fake)
    a = HostClock(CountingRunner(on_run=lambda: setattr(fake, "ns", fake.ns + 2000)))
    stats = measure_interleaved({"a": a}, settings(min_samples=5), now=fake.perf_counter)
    assert 5 <= stats["a"].n < 5 + SAMPLES_PER_ROUND  # quiet is judged at the end of a round
    assert stats["a"].median == pytest.approx(2.0) and not stats["a"].noisy
