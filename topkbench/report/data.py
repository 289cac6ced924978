"""Tidy aggregations behind the report: datasets, speedups, the dispatch rules' regret.

Everything is read through topkbench.results, as the fit reads it: the newest row of each
(device, point, implementation) wins, and only usable timings (status ok, finite positive median)
are plotted; everything else goes to the failure table.

A *dataset* is every point measured under one set of conditions (device, timing mode, L2 state,
length mode, distribution): timings are only comparable inside one. Within a dataset a *point* is
(rows, seq_len, k). Dispatch rules are judged per (device, timing mode, L2 state) on the cell
table of topkbench.results (worst regret over the length modes and distributions), with the
figures of topkbench.evaluate: the same numbers fit-heuristic writes for the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np
import pandas as pd

from topkbench import results
from topkbench.errors import ReportError
from topkbench.evaluate import EvalRow, judge, reference_rows
from topkbench.results import BASELINES, WITHIN, Points, usable, winners

#: Conditions under which timings are comparable; one report section each.
DATASET_COLUMNS = ("gpu_name", "timing_mode", "l2", "length_mode", "distribution")
#: Conditions under which dispatch rules are judged (length modes and distributions combined).
RULE_COLUMNS = ("gpu_name", "timing_mode", "l2")
POINT_COLUMNS = ("rows", "seq_len", "k")
#: "Within 5% of the oracle" (docs/design.md section 8), as the fit's evaluation counts it.
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


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not usable timings, with why; an ok row without a timing is listed too."""
    bad = frame[~usable(frame)].copy()
    no_timing = bad["status"] == "ok"
    bad.loc[no_timing, "reason"] = "status ok but no finite timing stored"
    bad.loc[no_timing, "status"] = "error"
    columns = [*DATASET_COLUMNS, *POINT_COLUMNS, "impl", "status", "reason", "run_id"]
    return bad[columns].sort_values([*DATASET_COLUMNS, *POINT_COLUMNS, "impl"], kind="stable").reset_index(drop=True)


def split_datasets(frame: pd.DataFrame) -> list[Dataset]:
    """The usable timings of ``frame`` (after newest-wins) grouped into datasets; ReportError when
    there are none."""
    newest = results.newest(frame).frame
    ok = newest[usable(newest)].copy()
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


def read_floor_table(ds: Dataset) -> pd.DataFrame:
    """Per point with a measured read floor (GPU runs): the fastest impl as a multiple of one
    streaming read of the same scores (read_us), and each impl's multiple."""
    if "read_us" not in ds.ok:
        return pd.DataFrame()
    read = ds.ok.groupby(list(POINT_COLUMNS))["read_us"].first().reindex(ds.medians.index)
    out = ds.points[[*POINT_COLUMNS, "winner", "best_us"]].copy()
    out["read_us"] = read.to_numpy()
    out["x_read"] = out["best_us"] / out["read_us"]
    for impl in ds.impls:
        out[f"x:{impl}"] = (ds.medians[impl] / read).to_numpy() if impl in ds.medians else np.nan
    return out.dropna(subset=["x_read"]).reset_index(drop=True)


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


@dataclass
class RuleTable:
    """Dispatch rules judged on one (device, timing mode, L2 state): figures per rule and per cell."""

    key: dict[str, str]
    points: Points
    #: One row per rule, from topkbench.evaluate (kinds: in-sample, fitted, held-out, fixed, rule).
    rows: list[EvalRow]
    #: (label, cells' picks, cells' regret) of every rule judged on the cells here.
    picks: list[tuple[str, list[str], np.ndarray]]

    @property
    def title(self) -> str:
        return f"{self.key['gpu_name']} - {self.key['timing_mode']}/{self.key['l2']} L2"


def _judged(points: Points, label: str, kind: str, selector: Selector,
            picks: list[tuple[str, list[str], np.ndarray]]) -> EvalRow:
    row = judge(points, label, kind, selector)
    chosen = [str(p) for p in rule_picks(selector, ((r, s, k) for k, r, s in points.cells)).values()]
    picks.append((label, chosen, points.regret_of(chosen)))
    return row


def rule_tables(newest: pd.DataFrame, rules: list[Selector], fitted: Selector | None = None,
                fitted_gpu: str | None = None, fitted_rows: list[EvalRow] = (),
                fitted_runs: set[str] = frozenset()) -> list[RuleTable]:
    """Per (device, timing mode, L2 state) of ``newest``: every hand rule, every fixed choice, and
    the fitted module on its own device (in-sample when fitted on these runs), with the held-out
    figures it recorded (``fitted_rows``)."""
    tables = []
    for key, group in newest.groupby(list(RULE_COLUMNS), sort=True):
        points = results.cell_table(group)
        if len(points.impls) < 2 or not points.cells:
            continue
        picks: list[tuple[str, list[str], np.ndarray]] = []
        rows: list[EvalRow] = []
        if fitted is not None and key[0] == fitted_gpu:
            # its quality first: the held-out figures it recorded; then what it does on these cells
            rows += fitted_rows
            in_sample = bool(fitted_runs & set(group["run_id"].astype(str)))
            label = "fitted module, in-sample" if in_sample else "fitted module, on these results"
            rows.append(_judged(points, label, "in-sample" if in_sample else "fitted", fitted, picks))
        for rule in rules:
            missing = rule.missing(points.impls) if hasattr(rule, "missing") else []
            if missing:
                rows.append(EvalRow(f"rule {rule.name}", "rule", None, f"n/a: no data for {', '.join(missing)}"))
            else:
                rows.append(_judged(points, f"rule {rule.name}", "rule", rule, picks))
        rows += reference_rows(points, rule_names=[])
        picks += [(f"always {impl}", [impl] * len(points.cells), points.regret[:, j])
                  for j, impl in enumerate(points.impls)]
        tables.append(RuleTable(dict(zip(RULE_COLUMNS, key)), points, rows, picks))
    # The main condition (graph replay, hot L2) reads first, as for the datasets.
    return sorted(tables, key=lambda t: (t.key["gpu_name"], t.key["timing_mode"] != "graph", t.key["l2"] != "hot"))


def rule_summary(table: RuleTable) -> pd.DataFrame:
    """One line per rule of ``table``: its figures, or why it does not apply."""
    out = []
    for row in table.rows:
        f = row.figures
        out.append({"rule": row.label, "kind": row.kind, "note": row.note,
                    "cells": f.n if f else np.nan, "geomean_regret": f.geomean if f else np.nan,
                    "max_regret": f.max if f else np.nan, "within_5pct": f.within_5pct if f else np.nan,
                    "unavailable": f.unavailable if f else np.nan})
    return pd.DataFrame(out)


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
