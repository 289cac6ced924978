"""Progress and the ETA of a sweep.

Points differ in cost by orders of magnitude (a 1 x 1K point takes milliseconds, a 1024 x 160K
point seconds), so counting measurements gives an ETA that is off by 10x on real configs. The ETA
here is the sum of each remaining point's expected cost: a linear model in the point's measurement
count and bytes, started from a prior and refitted to the costs observed so far. On a terminal a
progress bar shows it; when the output is a log file a plain line is printed every 30 seconds.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

#: Seconds per measurement (prepare, check, warm-up, graph capture) before any is observed.
PRIOR_FIXED_S = 0.15
#: Seconds per byte of scores and per measurement before any is observed: the samples of one
#: measurement read the scores a few hundred times at a few hundred GB/s.
PRIOR_PER_BYTE_S = 2e-9
#: How many observed points the prior weighs as.
PRIOR_WEIGHT = 2.0
#: Seconds between plain progress lines when the output is not a terminal.
PLAIN_INTERVAL_S = 30.0


def task_features(measurements: int, score_bytes: float) -> np.ndarray:
    """The model's inputs for one point: its measurement count, and that count times its bytes
    (workload generation and the reference scale with bytes too, folded into the second term)."""
    return np.array([measurements, measurements * score_bytes + score_bytes], dtype=float)


class CostModel:
    """Expected seconds of a point, refitted (ridge towards the prior) after every observation."""

    def __init__(self, prior=(PRIOR_FIXED_S, PRIOR_PER_BYTE_S), prior_weight: float = PRIOR_WEIGHT) -> None:
        self._prior = np.array(prior, dtype=float)
        self._weight = prior_weight
        self._features: list[np.ndarray] = []
        self._seconds: list[float] = []
        self.coef = self._prior.copy()

    def expected(self, features: np.ndarray) -> float:
        return max(0.0, float(features @ self.coef))

    def observe(self, features: np.ndarray, seconds: float) -> None:
        self._features.append(features)
        self._seconds.append(seconds)
        # Fit multipliers of the prior (seconds each term contributes under it), pulled towards 1:
        # a term the observed points barely exercise (bytes, while only small points are done)
        # keeps its prior instead of swinging to whatever fits the noise.
        contrib = np.array(self._features) * self._prior
        y = np.array(self._seconds)
        lam = self._weight * max(float(np.mean(np.sum(contrib, axis=1) ** 2)), 1e-12)
        w = np.linalg.solve(contrib.T @ contrib + lam * np.eye(2), contrib.T @ y + lam * np.ones(2))
        self.coef = np.maximum(w, 0.0) * self._prior


class SweepEta:
    """The remaining time of a list of point costs, as points finish in order."""

    def __init__(self, features: Sequence[np.ndarray], model: CostModel | None = None) -> None:
        self._features = list(features)
        self._done = 0
        self.model = model or CostModel()

    def point_done(self, seconds: float) -> None:
        self.model.observe(self._features[self._done], seconds)
        self._done += 1

    @property
    def remaining_s(self) -> float:
        return sum(self.model.expected(f) for f in self._features[self._done:])


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PlainProgress:
    """A line every ``interval`` seconds (and at the end) for logs, where a bar would be noise."""

    def __init__(self, total: int, write: Callable[[str], Any], interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._total = total
        self._write = write
        self._interval = interval
        self._clock = clock
        self._start = self._last = clock()
        self.done = 0

    def advance(self, count: int, label: str, eta_s: float) -> None:
        self.done += count
        now = self._clock()
        if now - self._last >= self._interval or self.done >= self._total:
            self._last = now
            self._write(f"sweep: {self.done}/{self._total} measurements, {format_duration(now - self._start)} "
                        f"elapsed, eta {format_duration(eta_s)} (last: {label})")
