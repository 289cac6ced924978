"""Run-to-run reproducibility: the same points measured in two runs, side by side.

Figures: the spread of the per-(point, implementation) median ratio B/A, and, per point, whether
the fastest implementation is the same in both runs, counted where run A's winner beats its
runner-up by more than a margin (10% by default): a winner that changes there is not noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from topkbench.errors import UsageError

POINT = ["rows", "seq_len", "k", "length_mode", "distribution", "timing_mode", "l2"]


@dataclass(frozen=True)
class Reproducibility:
    pairs: int
    points: int
    ratio_median: float
    ratio_p5: float
    ratio_p95: float
    ratio_max_dev: float
    decisive_points: int
    decisive_same_winner: float
    all_same_winner: float
    margin: float

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("(point, impl) pairs in both runs", f"{self.pairs}"),
            ("median ratio B/A", f"{self.ratio_median:.3f}"),
            ("5th-95th percentile of B/A", f"{self.ratio_p5:.3f} - {self.ratio_p95:.3f}"),
            ("largest |B/A - 1|", f"{self.ratio_max_dev:.1%}"),
            ("points with every implementation in both", f"{self.points}"),
            (f"same winner where A's margin > {self.margin:.0%}",
             f"{self.decisive_same_winner:.1%} of {self.decisive_points}"),
            ("same winner, all points", f"{self.all_same_winner:.1%}"),
        ]


def _winners(frame: pd.DataFrame) -> pd.DataFrame:
    """Per point: the fastest implementation and its margin over the runner-up."""
    def one(group: pd.DataFrame) -> pd.Series:
        ordered = group.sort_values("median_us")
        best = ordered.iloc[0]
        margin = ordered.iloc[1]["median_us"] / best["median_us"] - 1 if len(ordered) > 1 else np.inf
        return pd.Series({"winner": best["impl"], "margin": margin})

    if frame.empty:
        return pd.DataFrame({"winner": pd.Series(dtype=object), "margin": pd.Series(dtype=float)})
    return frame.groupby(POINT).apply(one, include_groups=False)


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, margin: float = 0.10) -> Reproducibility:
    """Compare the ok rows of two runs on the (point, implementation) pairs both measured."""
    key = POINT + ["impl"]
    a_ok = a[a["status"] == "ok"][key + ["median_us"]]
    b_ok = b[b["status"] == "ok"][key + ["median_us"]]
    both = a_ok.merge(b_ok, on=key, suffixes=("_a", "_b"))
    if both.empty:
        raise UsageError("the two runs share no successfully measured (point, implementation) pair",
                         hint="compare runs of the same config, or a repeat of a subset of one")
    ratio = both["median_us_b"] / both["median_us_a"]
    # A point's winner is only comparable when both runs measured the same implementations there.
    impls_a = both.groupby(POINT)["impl"].count()
    counts_a = a_ok.groupby(POINT)["impl"].count()
    counts_b = b_ok.groupby(POINT)["impl"].count()
    complete = impls_a[(impls_a == counts_a.reindex(impls_a.index)) & (impls_a == counts_b.reindex(impls_a.index))].index
    shared = both.set_index(POINT).loc[complete].reset_index()
    wa = _winners(shared.rename(columns={"median_us_a": "median_us"}))
    wb = _winners(shared.rename(columns={"median_us_b": "median_us"}))
    same = wa["winner"] == wb["winner"]
    decisive = wa["margin"] > margin
    return Reproducibility(
        pairs=len(both), points=len(wa),
        ratio_median=float(ratio.median()), ratio_p5=float(ratio.quantile(0.05)),
        ratio_p95=float(ratio.quantile(0.95)), ratio_max_dev=float((ratio - 1).abs().max()),
        decisive_points=int(decisive.sum()),
        decisive_same_winner=float(same[decisive].mean()) if decisive.any() else float("nan"),
        all_same_winner=float(same.mean()) if len(same) else float("nan"), margin=margin,
    )
