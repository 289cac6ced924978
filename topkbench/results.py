"""The one reading of stored results behind fit, evaluate, report, compare and the terminal summary.

Newest run wins
    A (device, point, implementation) measured by several runs keeps its newest row (by
    timestamp, then run id), whatever its status: a re-run after a kernel change replaces the
    old measurement instead of mixing with it, and a newer ``wrong`` hides an older timing.
    :func:`newest` says so in a notice whenever it drops a row.

Usable timing
    A row is a usable timing when its status is ``ok`` and its median is finite and positive.

Regret
    At one measured point (rows, seq_len, k, length mode, distribution) the regret of an
    implementation is its median time divided by the fastest usable median there, over every
    implementation measured (1.0 = the oracle's choice). An implementation without a usable
    timing at the point (unsupported, error, wrong, not measured) is *unavailable* there: its
    regret is infinite, so a rule that picks it has infinite geometric-mean and max regret: a
    dispatch that picks a kernel which cannot run a shape is broken, not slower.

Cells: the one way distributions and length modes are combined
    A dispatcher sees only (num_rows, max_seq_len, k), so the points of one such *cell* that
    differ in length mode or distribution are combined by their **worst** regret: a choice must
    hold up on every kind of data measured. Timing modes, L2 modes and devices are never
    combined (choose one with a filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from topkbench.device_record import DeviceRecord, infer_compute_capability
from topkbench.errors import FitError
from topkbench.schema import KEY_COLUMNS, Status

#: Baselines a speedup is measured against, in order of preference: torch.topk on the GPU, then the CPU.
BASELINES = ("torch", "torch-cpu")
#: Columns the CLI can filter on, in the order they are reported.
FILTER_COLUMNS = ("k", "length_mode", "distribution", "timing_mode", "l2")
#: Columns whose values are never combined in one regret table.
SINGLE_VALUED = ("timing_mode", "l2")
CELL_COLUMNS = ("k", "rows", "seq_len")
COMBINED_COLUMNS = ("length_mode", "distribution")
#: One row per (device, point, implementation) after newest-wins.
IDENTITY = ("gpu_slug", *KEY_COLUMNS)
#: "Within 5% of the oracle" (docs/design.md section 8).
WITHIN = 1.05


def usable(frame: pd.DataFrame) -> pd.Series:
    """The rows that are usable timings: status ok, a finite positive median, and not measured on
    a device that a multi-GPU sweep's calibration flagged as off from its peers (device_flag)."""
    median = pd.to_numeric(frame["median_us"], errors="coerce")
    unflagged = frame["device_flag"].fillna("") == "" if "device_flag" in frame else True
    return (frame["status"] == Status.OK.value) & np.isfinite(median) & (median > 0) & unflagged


@dataclass(frozen=True)
class Figures:
    """The summary of a rule's regret over cells, the same wherever it is shown.

    ``geomean`` and ``max`` are inf as soon as one pick is unavailable (counted in ``unavailable``);
    ``within_5pct`` is the share of cells with regret <= 1.05.
    """

    n: int
    geomean: float
    max: float
    within_5pct: float
    unavailable: int

    @classmethod
    def of(cls, regret: Sequence[float] | np.ndarray) -> "Figures":
        regret = np.asarray(regret, dtype=float)
        if regret.size == 0:
            return cls(0, math.nan, math.nan, math.nan, 0)
        unavailable = int(np.isinf(regret).sum())
        geomean = math.inf if unavailable else float(np.exp(np.mean(np.log(regret))))
        return cls(int(regret.size), geomean, float(regret.max()), float(np.mean(regret <= WITHIN)), unavailable)


@dataclass(frozen=True)
class Newest:
    """The rows kept by newest-wins and, when runs overlapped, a one-line notice of what was dropped."""

    frame: pd.DataFrame
    notice: str | None


def newest(frame: pd.DataFrame) -> Newest:
    """One row per (device, point, implementation): the newest (see the module docstring)."""
    ordered = frame.sort_values(["timestamp", "run_id"], kind="stable")
    dropped_mask = ordered.duplicated(subset=list(IDENTITY), keep="last")
    kept = ordered[~dropped_mask]
    if not dropped_mask.any():
        return Newest(kept, None)
    dropped = ordered[dropped_mask]
    replaced_by = kept.set_index(list(IDENTITY))["run_id"]
    pairs: dict[tuple[str, str], int] = {}
    for old, key in zip(dropped["run_id"], dropped[list(IDENTITY)].itertuples(index=False, name=None)):
        pair = (str(old), str(replaced_by.loc[key]))
        pairs[pair] = pairs.get(pair, 0) + 1
    detail = "; ".join(f"{n} of run {old} replaced by run {new}" for (old, new), n in sorted(pairs.items()))
    return Newest(kept, f"runs overlap: {int(dropped_mask.sum())} (point, implementation) rows measured again "
                        f"by a newer run were left out ({detail})")


def winners(medians: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``medians`` (points x implementations, NaN = no timing): the fastest
    implementation, its time, the runner-up and the margin (runner-up / best - 1)."""
    values = medians.to_numpy(dtype=float)
    impls = np.array(medians.columns, dtype=object)
    filled = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(filled, axis=1, kind="stable")
    rows = np.arange(len(values))
    best_i = order[:, 0] if values.shape[1] else np.zeros(len(values), dtype=int)
    has_second = np.isfinite(values).sum(axis=1) >= 2
    second_i = order[:, 1] if values.shape[1] > 1 else best_i
    out = medians.index.to_frame(index=False)
    out["winner"] = impls[best_i]
    out["best_us"] = filled[rows, best_i]
    out["runner_up"] = np.where(has_second, impls[second_i], "")
    out["runner_up_us"] = np.where(has_second, filled[rows, second_i], np.nan)
    out["margin"] = out["runner_up_us"] / out["best_us"] - 1.0
    return out


def builtin_impls(frame: pd.DataFrame) -> list[str]:
    """Implementations shipped with topkbench: ``impl_source`` "builtin" (or empty, in files
    written before plugins were recorded); every other source is a plugin."""
    if "impl_source" not in frame:
        return sorted(frame["impl"].unique().tolist())
    source = frame["impl_source"].fillna("").astype(str)
    return sorted(frame.loc[source.isin(["", "builtin"]), "impl"].unique().tolist())


@dataclass(frozen=True)
class Provenance:
    """Where the fitted points came from, for the banner of the generated module."""

    device: DeviceRecord
    #: (file or run folder basename, run ids) for every source of the rows used.
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    #: (implementation, kernel hash) pairs of the rows used; library code has none.
    kernel_hashes: tuple[tuple[str, str], ...]
    topkbench_versions: tuple[str, ...]
    #: (column, values) of the data after filtering, e.g. ("distribution", ("normal", ...)).
    selection: tuple[tuple[str, tuple[str, ...]], ...]
    #: What newest-wins left out, if anything.
    overlap_notice: str | None = None

    @property
    def gpu_name(self) -> str:
        return self.device.name

    @property
    def gpu_slug(self) -> str:
        return self.device.slug


@dataclass(frozen=True)
class Points:
    """The cell regret table: ``regret[i, j]`` of implementation ``impls[j]`` at ``cells[i]``.

    ``cells`` are sorted (k, rows, seq_len) tuples; ``inf`` marks an unavailable implementation.
    ``impls`` are every implementation measured (the regret's denominators); a fit picks only
    among ``allowed`` (all of them unless restricted).
    """

    impls: tuple[str, ...]
    cells: tuple[tuple[int, int, int], ...]
    regret: np.ndarray
    allowed: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.allowed:
            object.__setattr__(self, "allowed", self.impls)

    def subset(self, mask: Sequence[bool] | np.ndarray) -> "Points":
        mask = np.asarray(mask, dtype=bool)
        cells = tuple(c for c, keep in zip(self.cells, mask) if keep)
        return Points(self.impls, cells, self.regret[mask], self.allowed)

    def values(self, column: str) -> list[int]:
        return sorted({cell[CELL_COLUMNS.index(column)] for cell in self.cells})

    def regret_of(self, choices: Sequence[str]) -> np.ndarray:
        """The regret at each cell of the implementation chosen there (inf if never measured)."""
        index = {name: j for j, name in enumerate(self.impls)}
        return np.array([self.regret[i, index[c]] if c in index else np.inf for i, c in enumerate(choices)],
                        dtype=float)

    def best(self) -> np.ndarray:
        """The least worst-case regret at each cell: what a dispatcher seeing only the cell can reach."""
        return self.regret.min(axis=1) if self.regret.size else np.zeros(0)


def cell_table(frame: pd.DataFrame, impls: Sequence[str] | None = None) -> Points:
    """The cell regret table of ``frame`` (one device, one timing mode and L2 mode, newest rows).

    ``impls`` fixes the columns (default: every implementation with a usable timing)."""
    ok = frame[usable(frame)]
    names = tuple(impls) if impls is not None else tuple(sorted(ok["impl"].unique().tolist()))
    if ok.empty:
        return Points(names, (), np.zeros((0, len(names))))
    point_columns = [*CELL_COLUMNS, *COMBINED_COLUMNS]
    times = ok.pivot_table(index=point_columns, columns="impl", values="median_us", aggfunc="first")
    values = times.reindex(columns=list(names)).to_numpy(dtype=float)
    fastest = np.nanmin(np.where(np.isnan(values), np.inf, values), axis=1, keepdims=True)
    regret = np.where(np.isnan(values), np.inf, values / fastest)
    per_point = pd.DataFrame(regret, index=times.index, columns=list(names))
    worst = per_point.groupby(level=list(CELL_COLUMNS), sort=True).max()
    cells = tuple((int(k), int(r), int(s)) for k, r, s in worst.index)
    return Points(names, cells, worst.to_numpy(dtype=float))


def _one_gpu(frame: pd.DataFrame, gpu: str | None) -> pd.DataFrame:
    gpus = sorted({f"{name} ({slug})" for name, slug in zip(frame["gpu_name"], frame["gpu_slug"])})
    if gpu is not None:
        wanted = gpu.casefold()
        chosen = frame[(frame["gpu_name"].str.casefold() == wanted) | (frame["gpu_slug"].str.casefold() == wanted)]
        if chosen.empty:
            raise FitError(f"no results for GPU {gpu!r}; the data holds: {', '.join(gpus)}",
                           hint="pass --gpu with one of those names or slugs")
        return chosen
    if len(gpus) > 1:
        raise FitError(f"the results come from several GPUs: {', '.join(gpus)}; choose one with --gpu",
                       hint="a fit is for one GPU; pass its name or slug")
    return frame


def _apply_filters(frame: pd.DataFrame, filters: Mapping[str, Iterable[Any]]) -> pd.DataFrame:
    for column in FILTER_COLUMNS:
        wanted = [v for v in filters.get(column) or ()]
        if not wanted:
            continue
        present = sorted(frame[column].unique().tolist())
        wanted = [int(v) for v in wanted] if column == "k" else [str(v) for v in wanted]
        unknown = [v for v in wanted if v not in present]
        if unknown:
            flag = "--" + column.replace("_", "-")
            raise FitError(f"{flag} {', '.join(map(str, unknown))}: not in the data; values there: "
                           f"{', '.join(map(str, present))}")
        frame = frame[frame[column].isin(wanted)]
    for column in SINGLE_VALUED:
        present = sorted(frame[column].unique().tolist())
        if len(present) > 1:
            flag = "--" + column.replace("_", "-")
            raise FitError(f"the data mixes {column} values {', '.join(present)}, which are never combined; "
                           f"choose one with {flag}")
    return frame


def _sources(frame: pd.DataFrame) -> tuple[tuple[str, tuple[str, ...]], ...]:
    runs: dict[str, set[str]] = {}
    for path, run_id in zip(frame["source_file"] if "source_file" in frame else [""] * len(frame), frame["run_id"]):
        parts = str(path).replace("\\", "/").split("/")
        # A run still being written is one part file per point: name its folder once.
        name = parts[-2] if len(parts) > 1 and parts[-2].endswith(".parts") else parts[-1]
        runs.setdefault(name or "(in memory)", set()).add(str(run_id))
    return tuple((name, tuple(sorted(ids))) for name, ids in sorted(runs.items()))


def device_of(frame: pd.DataFrame, compute_capability: str | None = None) -> DeviceRecord:
    """The record of the one device in ``frame``: its compute capability from ``compute_capability``,
    else the data's column, else the table of known names (device_record); bandwidth is the median
    over the runs."""
    name = str(frame["gpu_name"].iloc[0])
    stored = sorted({str(v) for v in frame.get("compute_capability", pd.Series(dtype=str)).dropna() if str(v)})
    capability = compute_capability or (stored[0] if len(stored) == 1 else "") or infer_compute_capability(name)
    bandwidth = pd.to_numeric(frame["bandwidth_gbs"], errors="coerce").dropna()
    return DeviceRecord(name, str(frame["gpu_slug"].iloc[0]), capability, int(frame["sm_count"].iloc[0]),
                        int(frame["l2_bytes"].iloc[0]), round(float(bandwidth.median()), 1) if len(bandwidth) else 0.0)


def select_points(
    frame: pd.DataFrame,
    *,
    gpu: str | None = None,
    impls: Sequence[str] | None = None,
    filters: Mapping[str, Iterable[Any]] | None = None,
    compute_capability: str | None = None,
) -> tuple[Points, Provenance]:
    """The cell regret table of one GPU's results (a frame from ``store.read_results``).

    ``impls`` are the implementations a fit may pick (default: the built-in ones; plugins only
    when named); the regret is relative to every implementation measured.
    """
    if frame.empty:
        raise FitError("no result rows to fit")
    kept = newest(_apply_filters(_one_gpu(frame, gpu), filters or {}))
    frame = kept.frame
    present = sorted(frame["impl"].unique().tolist())
    if impls:
        unknown = [name for name in impls if name not in present]
        if unknown:
            raise FitError(f"--impl {', '.join(unknown)}: not in the data; implementations there: {', '.join(present)}")
        allowed = sorted(set(impls))
    else:
        allowed = builtin_impls(frame)
    points = cell_table(frame)
    if not points.cells:
        raise FitError("no usable points: no row with status ok and a positive median time after filtering",
                       hint="check the filters, or run 'topkbench sweep' first")
    with_points = [name for name in points.impls if name in allowed]
    if len(with_points) < 2:
        plugins = sorted(set(points.impls) - set(allowed))
        raise FitError(f"only one implementation ({', '.join(with_points) or 'none'}) may be picked and has usable "
                       "points: nothing to choose between",
                       hint=f"allow plugins with --impl ({', '.join(plugins)})" if plugins and not impls else
                       "measure at least two implementations on the same points")
    points = Points(points.impls, points.cells, points.regret, tuple(with_points))

    hashes = sorted({(i, h) for i, h in zip(frame["impl"], frame["kernel_hash"]) if isinstance(h, str) and h})
    selection = tuple((c, tuple(str(v) for v in sorted(frame[c].unique().tolist()))) for c in FILTER_COLUMNS)
    provenance = Provenance(
        device=device_of(frame, compute_capability),
        sources=_sources(frame),
        kernel_hashes=tuple(hashes),
        topkbench_versions=tuple(sorted({str(v) for v in frame["topkbench_version"]})),
        selection=selection,
        overlap_notice=kept.notice,
    )
    return points, provenance
