"""Two runs of the same points side by side: reproducibility, and a regression gate.

Both sides are read through topkbench.results (newest row per point and implementation, usable
timings only) and paired on (point, implementation).

Reproducibility: the spread of the median ratio B/A, the pair furthest from 1 by name, and, per
point, whether the fastest implementation is the same on both sides, counted where A's winner
beats its runner-up by more than a margin (10% by default): a winner that changes there is not
noise.

Regression gate (``threshold_pct``): a pair is
- ``slower`` when even the optimistic reading of its noise, p20 of B / p80 of A, exceeds
  1 + threshold: a slow-down beyond the threshold that the measured noise cannot explain;
- ``ambiguous`` when the pessimistic reading, p80 of B / p20 of A, exceeds it but the optimistic
  one does not: the noise bands straddle the threshold (nvbench's compare says the same);
- ``faster`` when even the pessimistic reading is below 1 / (1 + threshold);
- ``same`` otherwise.
The geometric mean of the ratios gets the same verdict from the geometric means of both readings.
The gate fails when any pair or the geometric mean is ``slower``; ambiguous pairs are listed, not
failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from topkbench import results
from topkbench.errors import UsageError

POINT = ["rows", "seq_len", "k", "length_mode", "distribution", "timing_mode", "l2"]
VERDICTS = ("slower", "ambiguous", "same", "faster")


@dataclass(frozen=True)
class Reproducibility:
    pairs: int
    points: int
    ratio_median: float
    ratio_p5: float
    ratio_p95: float
    ratio_max_dev: float
    #: The pair furthest from 1, as "rows x seq_len k mode dist impl".
    ratio_max_dev_at: str
    decisive_points: int
    decisive_same_winner: float
    all_same_winner: float
    margin: float

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("(point, impl) pairs in both runs", f"{self.pairs}"),
            ("median ratio B/A", f"{self.ratio_median:.3f}"),
            ("5th-95th percentile of B/A", f"{self.ratio_p5:.3f} - {self.ratio_p95:.3f}"),
            ("largest |B/A - 1|", f"{self.ratio_max_dev:.1%} at {self.ratio_max_dev_at}"),
            ("points with every implementation in both", f"{self.points}"),
            (f"same winner where A's margin > {self.margin:.0%}",
             f"{self.decisive_same_winner:.1%} of {self.decisive_points}"),
            ("same winner, all points", f"{self.all_same_winner:.1%}"),
        ]


def verdict(low: float, high: float, threshold_pct: float) -> str:
    """The gate's verdict for a ratio whose noise band is [low, high] (see the module docstring)."""
    limit = 1 + threshold_pct / 100
    if low > limit:
        return "slower"
    if high > limit:
        return "ambiguous"
    if high < 1 / limit:
        return "faster"
    return "same"


def point_name(row: Any) -> str:
    return (f"{row['rows']}x{row['seq_len']} k={row['k']} {row['length_mode']} {row['distribution']} "
            f"{row['timing_mode']}/{row['l2']} {row['impl']}")


@dataclass(frozen=True)
class Comparison:
    """Every (point, implementation) pair in both runs, with ratio, noise band and verdict."""

    pairs: pd.DataFrame
    reproducibility: Reproducibility
    #: Run ids found on both sides (empty when the runs are distinct).
    shared_runs: tuple[str, ...]
    same_run: bool
    notices: tuple[str, ...]
    geomean: tuple[float, float, float]  # ratio, low, high
    threshold_pct: float | None = None
    geomean_verdict: str | None = None
    devices: tuple[str, str] = ("", "")
    runs: tuple[tuple[str, ...], tuple[str, ...]] = field(default=((), ()))

    def worst(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` pairs that slowed down most (largest ratio B/A)."""
        return self.pairs.sort_values("ratio", ascending=False, kind="stable").head(n)

    @property
    def failed(self) -> bool:
        if self.threshold_pct is None:
            return False
        return bool((self.pairs["verdict"] == "slower").any()) or self.geomean_verdict == "slower"

    def counts(self) -> dict[str, int]:
        if self.threshold_pct is None:
            return {}
        return {v: int((self.pairs["verdict"] == v).sum()) for v in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, (float, np.floating)):
                return None if math.isnan(value) else ("inf" if math.isinf(value) else float(value))
            if isinstance(value, np.integer):
                return int(value)
            return value

        columns = [*POINT, "impl", "median_a", "median_b", "ratio", "low", "high", "verdict"]
        pairs = [{c: clean(v) for c, v in row.items() if c in columns} for row in self.pairs.to_dict("records")]
        return {
            "devices": {"a": self.devices[0], "b": self.devices[1]},
            "runs": {"a": list(self.runs[0]), "b": list(self.runs[1])},
            "same_run": self.same_run,
            "shared_runs": list(self.shared_runs),
            "notices": list(self.notices),
            "threshold_pct": self.threshold_pct,
            "failed": self.failed,
            "counts": self.counts(),
            "geomean": {"ratio": clean(self.geomean[0]), "low": clean(self.geomean[1]), "high": clean(self.geomean[2]),
                        "verdict": self.geomean_verdict},
            "reproducibility": {k: clean(v) for k, v in self.reproducibility.__dict__.items()},
            "worst": [point_name(row) for row in self.worst().to_dict("records")],
            "pairs": pairs,
        }


def _side(frame: pd.DataFrame, label: str, notices: list[str]) -> pd.DataFrame:
    kept = results.newest(frame)
    if kept.notice:
        notices.append(f"{label}: {kept.notice}")
    ok = kept.frame[results.usable(kept.frame)]
    return ok[[*POINT, "impl", "median_us", "p20_us", "p80_us", "run_id", "gpu_name"]]


def _same_winner(shared: pd.DataFrame, margin: float) -> tuple[int, int, float, float]:
    """(points, decisive points, share with the same winner among decisive, among all)."""
    if shared.empty:
        return 0, 0, math.nan, math.nan
    wa = results.winners(shared.pivot_table(index=POINT, columns="impl", values="median_a", aggfunc="first"))
    wb = results.winners(shared.pivot_table(index=POINT, columns="impl", values="median_b", aggfunc="first"))
    same = wa["winner"].to_numpy() == wb["winner"].to_numpy()
    decisive = wa["margin"].to_numpy() > margin
    return (len(wa), int(decisive.sum()), float(same[decisive].mean()) if decisive.any() else math.nan,
            float(same.mean()))


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, margin: float = 0.10,
                 threshold_pct: float | None = None) -> Comparison:
    """Compare the usable timings of two runs on the (point, implementation) pairs both measured."""
    notices: list[str] = []
    side_a, side_b = _side(a, "A", notices), _side(b, "B", notices)
    key = [*POINT, "impl"]
    both = side_a.merge(side_b, on=key, suffixes=("_a", "_b"))
    if both.empty:
        raise UsageError("the two runs share no successfully measured (point, implementation) pair",
                         hint="compare runs of the same config, or a repeat of a subset of one")
    both = both.rename(columns={"median_us_a": "median_a", "median_us_b": "median_b"})
    both["ratio"] = both["median_b"] / both["median_a"]
    # the noise band of the ratio; a side without percentiles counts its median as exact
    p20_a, p80_a = both["p20_us_a"].fillna(both["median_a"]), both["p80_us_a"].fillna(both["median_a"])
    p20_b, p80_b = both["p20_us_b"].fillna(both["median_b"]), both["p80_us_b"].fillna(both["median_b"])
    both["low"], both["high"] = p20_b / p80_a, p80_b / p20_a
    if threshold_pct is not None:
        both["verdict"] = [verdict(lo, hi, threshold_pct) for lo, hi in zip(both["low"], both["high"])]
    geomean = tuple(float(np.exp(np.log(both[c]).mean())) for c in ("ratio", "low", "high"))

    # a point's winner is only comparable where both sides measured the same implementations
    counts_a, counts_b = side_a.groupby(POINT)["impl"].count(), side_b.groupby(POINT)["impl"].count()
    paired = both.groupby(POINT)["impl"].count()
    complete = paired[(paired == counts_a.reindex(paired.index)) & (paired == counts_b.reindex(paired.index))].index
    shared = both.set_index(POINT).loc[complete].reset_index()
    points, decisive, decisive_same, all_same = _same_winner(shared, margin)

    deviation = (both["ratio"] - 1).abs()
    furthest = both.loc[deviation.idxmax()]
    runs_a, runs_b = (tuple(sorted(set(s["run_id"].astype(str)))) for s in (a, b))
    shared_runs = tuple(sorted(set(runs_a) & set(runs_b)))
    reproducibility = Reproducibility(
        pairs=len(both), points=points, ratio_median=float(both["ratio"].median()),
        ratio_p5=float(both["ratio"].quantile(0.05)), ratio_p95=float(both["ratio"].quantile(0.95)),
        ratio_max_dev=float(deviation.max()), ratio_max_dev_at=point_name(furthest),
        decisive_points=decisive, decisive_same_winner=decisive_same, all_same_winner=all_same, margin=margin,
    )
    devices = tuple(", ".join(sorted(set(s["gpu_name"].astype(str)))) for s in (a, b))
    return Comparison(
        pairs=both.drop(columns=["p20_us_a", "p80_us_a", "p20_us_b", "p80_us_b"]), reproducibility=reproducibility,
        shared_runs=shared_runs, same_run=bool(shared_runs) and runs_a == runs_b, notices=tuple(notices),
        geomean=geomean, threshold_pct=threshold_pct,
        geomean_verdict=verdict(geomean[1], geomean[2], threshold_pct) if threshold_pct is not None else None,
        devices=devices, runs=(runs_a, runs_b),
    )
