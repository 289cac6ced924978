"""The measurements a dispatch fit sees: one regret table over (k, rows, seq_len) cells.

Regret
    At one measured point (rows, seq_len, k, length mode, distribution) the regret of an
    implementation is its median time divided by the fastest median measured there among the
    implementations considered (1.0 = the oracle's choice). An implementation that is missing at
    the point (status unsupported, error or wrong, or not measured) is *unavailable* there: its
    regret is infinite.

Cells: how distributions and length modes are combined
    The thresholds see only (num_rows, max_seq_len, k), so the points of one such *cell* that
    differ in length mode or distribution are combined by taking the **worst** regret over them:
    a dispatcher cannot see the data, and a choice must hold up on every kind of data measured.
    Timing modes and L2 modes are never combined: the data must hold one of each (choose with a
    filter otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from topkbench.errors import FitError
from topkbench.schema import KEY_COLUMNS, Status

#: Columns the CLI can filter on, in the order they are reported.
FILTER_COLUMNS = ("k", "length_mode", "distribution", "timing_mode", "l2")
#: Columns whose values are never combined in one fit.
SINGLE_VALUED = ("timing_mode", "l2")
CELL_COLUMNS = ("k", "rows", "seq_len")
COMBINED_COLUMNS = ("length_mode", "distribution")



@dataclass(frozen=True)
class Provenance:
    """Where the fitted points came from, for the banner of the generated module."""

    gpu_name: str
    gpu_slug: str
    #: (file or run folder basename, run ids) for every source of the rows used.
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    #: (implementation, kernel hash) pairs of the rows used; library code has none.
    kernel_hashes: tuple[tuple[str, str], ...]
    topkbench_versions: tuple[str, ...]
    #: (column, values) of the data after filtering, e.g. ("distribution", ("normal", ...)).
    selection: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Points:
    """The cell regret table: ``regret[i, j]`` of implementation ``impls[j]`` at ``cells[i]``.

    ``cells`` are sorted (k, rows, seq_len) tuples; ``inf`` marks an unavailable implementation.
    """

    impls: tuple[str, ...]
    cells: tuple[tuple[int, int, int], ...]
    regret: np.ndarray

    def subset(self, mask: Sequence[bool] | np.ndarray) -> "Points":
        mask = np.asarray(mask, dtype=bool)
        cells = tuple(c for c, keep in zip(self.cells, mask) if keep)
        return Points(self.impls, cells, self.regret[mask])

    def values(self, column: str) -> list[int]:
        return sorted({cell[CELL_COLUMNS.index(column)] for cell in self.cells})

    def regret_of(self, choices: Sequence[str]) -> np.ndarray:
        """The regret at each cell of the implementation chosen there (inf if not considered)."""
        index = {name: j for j, name in enumerate(self.impls)}
        return np.array([self.regret[i, index[c]] if c in index else np.inf for i, c in enumerate(choices)],
                        dtype=float)


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
        if column == "k":
            wanted = [int(v) for v in wanted]
        else:
            wanted = [str(v) for v in wanted]
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


def select_points(
    frame: pd.DataFrame,
    *,
    gpu: str | None = None,
    impls: Sequence[str] | None = None,
    filters: Mapping[str, Iterable[Any]] | None = None,
) -> tuple[Points, Provenance]:
    """The cell regret table of one GPU's results (a frame from ``store.read_results``).

    A point measured by several runs keeps its newest measurement (the run ids start with the UTC
    time), so a re-run after a kernel change replaces the old timing rather than mixing with it.
    """
    if frame.empty:
        raise FitError("no result rows to fit")
    frame = _apply_filters(_one_gpu(frame, gpu), filters or {})
    present = sorted(frame["impl"].unique().tolist())
    if impls:
        unknown = [name for name in impls if name not in present]
        if unknown:
            raise FitError(f"--impl {', '.join(unknown)}: not in the data; implementations there: {', '.join(present)}")
        frame = frame[frame["impl"].isin(list(impls))]
    frame = frame.sort_values(["timestamp", "run_id"], kind="stable")
    frame = frame.drop_duplicates(subset=list(KEY_COLUMNS), keep="last")
    usable = (frame["status"] == Status.OK.value) & np.isfinite(frame["median_us"]) & (frame["median_us"] > 0)
    ok = frame[usable]
    if ok.empty:
        raise FitError("no usable points: no row with status ok and a positive median time after filtering",
                       hint="check the filters, or run 'topkbench sweep' first")
    names = tuple(sorted(set(impls))) if impls else tuple(sorted(ok["impl"].unique().tolist()))
    with_points = sorted(ok["impl"].unique().tolist())
    if len(with_points) < 2:
        raise FitError(f"only one implementation ({', '.join(with_points)}) has usable points: nothing to choose between",
                       hint="measure at least two implementations on the same points")

    point_columns = [*CELL_COLUMNS, *COMBINED_COLUMNS]
    times = ok.pivot_table(index=point_columns, columns="impl", values="median_us", aggfunc="first")
    times = times.reindex(columns=list(names))
    regret = times.to_numpy(dtype=float) / np.nanmin(times.to_numpy(dtype=float), axis=1, keepdims=True)
    regret = np.where(np.isnan(regret), np.inf, regret)
    per_point = pd.DataFrame(regret, index=times.index, columns=list(names))
    worst = per_point.groupby(level=list(CELL_COLUMNS), sort=True).max()
    cells = tuple((int(k), int(r), int(s)) for k, r, s in worst.index)
    points = Points(names, cells, worst.to_numpy(dtype=float))

    hashes = sorted({(i, h) for i, h in zip(frame["impl"], frame["kernel_hash"]) if isinstance(h, str) and h})
    selection = tuple((c, tuple(str(v) for v in sorted(frame[c].unique().tolist()))) for c in FILTER_COLUMNS)
    provenance = Provenance(
        gpu_name=str(frame["gpu_name"].iloc[0]),
        gpu_slug=str(frame["gpu_slug"].iloc[0]),
        sources=_sources(frame),
        kernel_hashes=tuple(hashes),
        topkbench_versions=tuple(sorted({str(v) for v in frame["topkbench_version"]})),
        selection=selection,
    )
    return points, provenance
