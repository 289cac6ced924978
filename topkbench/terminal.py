"""Compact terminal tables (rich) for sweep summaries, verify results and the list command."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from topkbench.results import BASELINES, cell_table, newest, usable

#: Width for output that is not a terminal (logs, pipes): rich's 80 columns would cut table columns.
LOG_WIDTH = 160


def console(stderr: bool = False) -> Console:
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = LOG_WIDTH
    return out


def fmt_us(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def summary_table(frame: pd.DataFrame, max_lines: int = 30) -> tuple[Table, int]:
    """Median microseconds per (rows, seq_len, k) and implementation over the usable timings.

    Times are the geometric mean over the distributions and length modes measured, so the table
    stays one line per shape; "best" is the implementation with the least worst-case regret over
    them, as the fit judges a cell (topkbench.results). Returns the table and how many shapes
    were left out.
    """
    kept = newest(frame).frame
    ok = kept[usable(kept)]
    table = Table(title="median us per selection (geometric mean over distributions and length modes; best: least "
                        "worst-case regret)", title_justify="left", show_edge=False, pad_edge=False)
    if ok.empty:
        table.add_column("no successful measurements")
        return table, 0
    grid = (ok.assign(log_us=np.log(ok["median_us"]))
              .groupby(["rows", "seq_len", "k", "impl"])["log_us"].mean().apply(np.exp)
              .unstack("impl"))
    impls = list(grid.columns)
    # the measured read floor (GPU points), averaged the same way: the best as "x the read floor"
    read = ok["read_us"] if "read_us" in ok else pd.Series(np.nan, index=ok.index)
    read_floor = (ok.assign(log_read=np.log(read.where(read > 0)))
                    .groupby(["rows", "seq_len", "k"])["log_read"].mean().apply(np.exp))
    show_read = bool(read_floor.notna().any())
    cells = cell_table(kept, impls)
    best_of = {(r, s, k): impls[int(np.argmin(regret))] for (k, r, s), regret in zip(cells.cells, cells.regret)}
    baseline = next((b for b in BASELINES if b in impls), None)
    for name in ("rows", "seq_len", "k"):
        table.add_column(name, justify="right")
    for impl in impls:
        table.add_column(impl, justify="right")
    table.add_column("best", justify="left")
    if baseline is not None and len(impls) > 1:
        table.add_column(f"vs {baseline}", justify="right")
    if show_read:
        table.add_column("read us", justify="right")
        table.add_column("x read", justify="right")
    shown = grid.head(max_lines)
    for (rows, seq_len, k), values in shown.iterrows():
        best = best_of[(rows, seq_len, k)]
        cells_text = [str(rows), str(seq_len), str(k)]
        cells_text += [f"[bold]{fmt_us(values[i])}[/bold]" if i == best else fmt_us(values[i]) for i in impls]
        cells_text.append(best)
        if baseline is not None and len(impls) > 1:
            cells_text.append(f"{values[baseline] / values[best]:.2f}x" if values[baseline] == values[baseline] else "-")
        if show_read:
            floor = read_floor.get((rows, seq_len, k), np.nan)
            cells_text += [fmt_us(floor), f"{values[best] / floor:.1f}x" if floor == floor else "-"]
        table.add_row(*cells_text)
    return table, len(grid) - len(shown)


def status_counts(frame: pd.DataFrame) -> str:
    counts = frame["status"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("ok", "wrong", "unsupported", "error") if s in counts) or "nothing"


def simple_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    return table
