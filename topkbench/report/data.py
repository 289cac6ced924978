"""Tidy aggregations behind the report: datasets, winners, speedups, rule regret.

A *dataset* is every point measured under one set of conditions (device, timing mode, L2 state,
length mode, distribution): timings are only comparable inside one. Within a dataset a *point* is
(rows, seq_len, k). Only rows with status ``ok`` and a finite positive median count as timings;
everything else goes to the failure table and is never plotted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import pandas as pd

from topkbench.errors import ReportError
from topkbench.results import WITHIN, Figures

#: Conditions under which timings are comparable; one report section each.
DATASET_COLUMNS = ("gpu_name", "timing_mode", "l2", "length_mode", "distribution")
POINT_COLUMNS = ("rows", "seq_len", "k")
#: Baselines in order of preference: torch.topk on the GPU, then on the CPU (DESIGN.md section 4).
BASELINES = ("torch", "torch-cpu")
#: "Within 5% of the oracle" (DESIGN.md section 8), as the fit's evaluation counts it.
NEAR_ORACLE = WITHIN


class Selector(Protocol):
    name: str
    description: str

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str: ...


@dataclass
class Dataset:
    """One set of comparable timings."""

    key: dict[str, str]
    #: ok rows, one per (point, impl), where the newest measurement of it is an ok timing.
    ok: pd.DataFrame
    #: point x impl -> median_us (NaN where the impl has no ok timing at that point).
    medians: pd.DataFrame
    impls: list[str]
    baseline: str | None
    points: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.points = winners(self.medians)

    @property
    def title(self) -> str:
        k = self.key
        return f"{k['gpu_name']} - {k['timing_mode']}/{k['l2']} L2 - {k['length_mode']} lengths - {k['distribution']}"

    @property
    def slug(self) -> str:
        text = "-".join(str(v) for v in self.key.values()).lower()
        return "".join(c if c.isalnum() else "-" for c in text).strip("-")

    @property
    def ks(self) -> list[int]:
        return sorted(self.points["k"].unique().tolist())


def timed_mask(frame: pd.DataFrame) -> pd.Series:
    median = pd.to_numeric(frame["median_us"], errors="coerce")
    return (frame["status"] == "ok") & np.isfinite(median) & (median > 0)


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not usable timings, with why; an ok row without a timing is listed too."""
    bad = frame[~timed_mask(frame)].copy()
    no_timing = bad["status"] == "ok"
    bad.loc[no_timing, "reason"] = "status ok but no finite timing stored"
    bad.loc[no_timing, "status"] = "error"
    columns = [*DATASET_COLUMNS, *POINT_COLUMNS, "impl", "status", "reason", "run_id"]
    return bad[columns].sort_values([*DATASET_COLUMNS, *POINT_COLUMNS, "impl"], kind="stable").reset_index(drop=True)


def winners(medians: pd.DataFrame) -> pd.DataFrame:
    """Per point: the fastest impl, its time, the runner-up and the margin (runner-up / best - 1)."""
    values = medians.to_numpy(dtype=float)
    impls = np.array(medians.columns)
    filled = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(filled, axis=1, kind="stable")
    best_i = order[:, 0]
    best = filled[np.arange(len(values)), best_i]
    has_second = np.isfinite(values).sum(axis=1) >= 2
    second_i = order[:, 1] if values.shape[1] > 1 else best_i
    second = np.where(has_second, filled[np.arange(len(values)), second_i], np.nan)
    out = medians.index.to_frame(index=False)
    out["winner"] = impls[best_i]
    out["best_us"] = best
    out["runner_up"] = np.where(has_second, impls[second_i], "")
    out["runner_up_us"] = second
    out["margin"] = second / best - 1.0
    return out


def split_datasets(frame: pd.DataFrame) -> list[Dataset]:
    """The ok timings of ``frame`` grouped into datasets; ReportError when there are none.

    A (point, impl) measured by several runs keeps its newest row, as the fit does
    (topkbench.points.select_points): a newer wrong or failed result replaces an older timing.
    """
    newest = frame.sort_values(["timestamp", "run_id"], kind="stable")
    newest = newest.drop_duplicates(subset=[*DATASET_COLUMNS, *POINT_COLUMNS, "impl"], keep="last")
    ok = newest[timed_mask(newest)].copy()
    if ok.empty:
        counts = newest["status"].value_counts().to_dict()
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no rows"
        raise ReportError(f"no ok timings to report ({summary})",
                          hint="every stored point failed or was unsupported; see 'topkbench sweep' output")
    datasets = []
    for key, group in ok.groupby(list(DATASET_COLUMNS), sort=True):
        medians = group.pivot(index=list(POINT_COLUMNS), columns="impl", values="median_us").sort_index()
        impls = sorted(medians.columns)
        medians = medians[impls]
        medians.columns.name = None
        baseline = next((b for b in BASELINES if b in impls), None)
        datasets.append(Dataset(dict(zip(DATASET_COLUMNS, key)), group.reset_index(drop=True), medians, impls, baseline))
    # The main condition (graph replay, hot L2) reads first; other orders stay alphabetical.
    return sorted(datasets, key=lambda d: (d.key["gpu_name"], d.key["timing_mode"] != "graph", d.key["l2"] != "hot",
                                           d.key["length_mode"], d.key["distribution"]))


def speedup(ds: Dataset) -> pd.DataFrame:
    """Per point: the fastest non-baseline impl and baseline time / its time (>1: faster)."""
    if ds.baseline is None:
        return pd.DataFrame()
    others = [i for i in ds.impls if i != ds.baseline]
    if not others:
        return pd.DataFrame()
    sub = ds.medians[others]
    out = ds.medians.index.to_frame(index=False)
    out["best_impl"] = sub.idxmin(axis=1, skipna=True).where(sub.notna().any(axis=1)).to_numpy()
    out["best_us"] = sub.min(axis=1).to_numpy()
    out["baseline_us"] = ds.medians[ds.baseline].to_numpy()
    out["speedup"] = out["baseline_us"] / out["best_us"]
    return out.dropna(subset=["speedup"]).reset_index(drop=True)


def floor_table(ds: Dataset) -> pd.DataFrame:
    """Per point: % of the memory floor reached by the fastest impl, and by each impl."""
    pct = ds.ok.pivot(index=list(POINT_COLUMNS), columns="impl", values="pct_of_floor").reindex(ds.medians.index)
    out = ds.points[[*POINT_COLUMNS, "winner", "best_us"]].copy()
    out["floor_us"] = ds.ok.groupby(list(POINT_COLUMNS))["floor_us"].first().reindex(ds.medians.index).to_numpy()
    out["pct_best"] = [pct.at[idx, w] if w in pct.columns else np.nan
                       for idx, w in zip(ds.medians.index, out["winner"])]
    for impl in ds.impls:
        out[f"pct:{impl}"] = pct[impl].to_numpy() if impl in pct.columns else np.nan
    return out


def rule_picks(selector: Selector, grid: Iterable[tuple[int, int, int]]) -> dict[tuple[int, int, int], str]:
    """What ``selector`` picks at every (rows, seq_len, k) of ``grid``."""
    picks = {}
    for rows, seq_len, k in grid:
        try:
            picks[(rows, seq_len, k)] = str(selector.select(int(rows), int(seq_len), int(k)))
        except Exception as exc:  # a user's module: report which point broke it, in one line
            raise ReportError(f"rule {selector.name!r}: select({rows}, {seq_len}, {k}) raised "
                              f"{type(exc).__name__}: {exc}") from None
    return picks


def regret(ds: Dataset, selector: Selector) -> pd.DataFrame:
    """Per point: what ``selector`` picks and its regret (picked median / best median).

    Regret is NaN where the pick has no ok timing at that point (not measured, failed, wrong).
    """
    out = ds.points[[*POINT_COLUMNS, "winner", "best_us"]].copy()
    picks = rule_picks(selector, out[list(POINT_COLUMNS)].itertuples(index=False, name=None))
    out["picked"] = [picks[p] for p in out[list(POINT_COLUMNS)].itertuples(index=False, name=None)]
    med = ds.medians.to_numpy(dtype=float)
    col = {impl: i for i, impl in enumerate(ds.medians.columns)}
    out["picked_us"] = [med[r, col[p]] if p in col else np.nan for r, p in enumerate(out["picked"])]
    out["regret"] = out["picked_us"] / out["best_us"]
    out["rule"] = selector.name
    return out


@dataclass(frozen=True)
class FixedChoice:
    """'Always impl X': the reference every fitted or hand rule should beat."""

    impl: str

    @property
    def name(self) -> str:
        return f"always {self.impl}"

    @property
    def description(self) -> str:
        return f"{self.impl} at every point"

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        return self.impl


def regret_summary(tables: list[tuple[Selector, pd.DataFrame]], kind: Callable[[Selector], str]) -> pd.DataFrame:
    """Per rule: coverage, geometric-mean and max regret, share of points within 5% of the oracle.

    The figures are topkbench.evaluate's, over the points where the pick has a timing.
    """
    rows = []
    for selector, table in tables:
        covered = Figures.of(table["regret"].dropna().to_numpy())
        uncovered = sorted(set(table.loc[table["regret"].isna(), "picked"]))
        rows.append({
            "rule": selector.name,
            "kind": kind(selector),
            "description": selector.description,
            "points": len(table),
            "covered": covered.n,
            "geomean_regret": covered.geomean,
            "max_regret": covered.max,
            "within_5pct": covered.within_5pct,
            "unmeasured_picks": ", ".join(uncovered),
        })
    return pd.DataFrame(rows)


def noise_table(ds: Dataset) -> pd.DataFrame:
    cols = [*POINT_COLUMNS, "impl", "median_us", "p20_us", "p80_us", "rel_spread", "noisy", "n_samples"]
    out = ds.ok[cols].copy()
    out["noisy"] = out["noisy"].fillna(False).astype(bool)
    return out.sort_values([*POINT_COLUMNS, "impl"]).reset_index(drop=True)


def provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: where, when, with what, and how many rows it holds."""

    def joined(values: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in values if str(v) not in ("", "nan", "None")}))

    grouped = frame.groupby("run_id", sort=True)
    out = grouped.agg(
        gpu_name=("gpu_name", joined), host=("host", joined), config_name=("config_name", joined),
        config_hash=("config_hash", lambda s: joined(s.astype(str).str[:12])),
        first=("timestamp", "min"), last=("timestamp", "max"),
        topkbench=("topkbench_version", joined), git_sha=("git_sha", lambda s: joined(s.astype(str).str[:10])),
        git_dirty=("git_dirty", lambda s: "yes" if s.fillna(False).astype(bool).any() else "no"),
        torch=("torch_version", joined), cuda=("cuda_version", joined), cupy=("cupy_version", joined),
        driver=("driver", joined), sm_count=("sm_count", joined),
        bandwidth_gbs=("bandwidth_gbs", "median"), result_rows=("impl", "size"),
    ).reset_index()
    return out.sort_values("first", kind="stable").reset_index(drop=True)


def kernel_hashes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per implementation: the kernel source hashes measured, and in which runs."""
    rows = []
    for impl, group in frame.groupby("impl", sort=True):
        hashes = sorted({h for h in group["kernel_hash"].astype(str) if h not in ("", "nan", "None")})
        rows.append({"impl": impl, "device": ", ".join(sorted(set(group["impl_device"].astype(str)))),
                     "kernel_hash": ", ".join(hashes) if hashes else "(library code)",
                     "runs": ", ".join(sorted(set(group["run_id"].astype(str))))})
    return pd.DataFrame(rows)
