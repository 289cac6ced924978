"""The report's plotly figures, one function per figure kind, each from a :class:`Dataset`.

Visible numbers are rounded to 3 significant digits; hover text carries the exact stored values
(as strings, so plotly's own number formatting cannot round them again).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from topkbench.errors import ReportError
from topkbench.report import data as D
from topkbench.report.fmt import RULE_COLOURS, RULE_STYLES, count_label, impl_colours, sig

#: Facet columns per figure: wider panels stop being readable on a laptop screen.
FACET_COLUMNS = 4
MAP_COLUMNS = 3


def plotly_modules() -> tuple[Any, Any]:
    """(plotly.graph_objects, make_subplots), or ReportError saying how to install plotly."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise ReportError("plotly is not installed; reports need it",
                          hint="pip install 'topkbench[report]' (or: pip install plotly)") from None
    return go, make_subplots


def _exact(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else repr(float(value))
    return str(value)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _grid(n: int, columns: int) -> tuple[int, int]:
    cols = max(1, min(columns, n))
    return math.ceil(n / cols), cols


def _cell(i: int, cols: int) -> tuple[int, int]:
    return i // cols + 1, i % cols + 1


def _layout(fig: Any, title: str, height: int) -> None:
    # The legend sits at the right: above the plot it collides with subplot titles.
    fig.update_layout(title=dict(text=title, x=0.01), height=height, template="plotly_white",
                      margin=dict(l=70, r=30, t=80, b=60), hovermode="closest",
                      legend=dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top"))


def latency(ds: D.Dataset, k: int) -> Any:
    """Median latency vs seq_len per impl, a p20-p80 band, one panel per rows value (log axes)."""
    go, make_subplots = plotly_modules()
    colours = impl_colours(ds.impls)
    sub = ds.ok[ds.ok["k"] == k]
    rows_values = sorted(sub["rows"].unique())
    nrow, ncol = _grid(len(rows_values), FACET_COLUMNS)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[f"rows = {r}" for r in rows_values],
                        horizontal_spacing=0.06, vertical_spacing=min(0.12, 0.5 / nrow))
    for i, rows in enumerate(rows_values):
        r, c = _cell(i, ncol)
        panel = sub[sub["rows"] == rows]
        for impl in ds.impls:
            line = panel[panel["impl"] == impl].sort_values("seq_len")
            if line.empty:
                continue
            colour = colours[impl]
            fig.add_trace(go.Scatter(x=line["seq_len"], y=line["p80_us"], mode="lines", line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=impl), row=r, col=c)
            fig.add_trace(go.Scatter(x=line["seq_len"], y=line["p20_us"], mode="lines", line=dict(width=0),
                                     fill="tonexty", fillcolor=_rgba(colour, 0.18), hoverinfo="skip",
                                     showlegend=False, legendgroup=impl), row=r, col=c)
            custom = np.array([[_exact(v) for v in rec] for rec in
                               line[["median_us", "p20_us", "p80_us", "rel_spread", "n_samples"]].itertuples(index=False)])
            fig.add_trace(go.Scatter(
                x=line["seq_len"], y=line["median_us"], mode="lines+markers", name=impl, legendgroup=impl,
                showlegend=i == 0, line=dict(color=colour, width=2), marker=dict(size=6),
                customdata=custom,
                hovertemplate=(f"<b>{impl}</b><br>rows {rows}, seq_len %{{x}}, k {k}<br>median %{{customdata[0]}} us"
                               "<br>p20 %{customdata[1]} us, p80 %{customdata[2]} us"
                               "<br>rel. spread %{customdata[3]}, samples %{customdata[4]}<extra></extra>"),
            ), row=r, col=c)
    # dtick D2 labels 1, 2, 5 per decade: every digit crowds the short panels.
    fig.update_xaxes(type="log", title_text="seq_len", tickformat="~s", dtick="D2")
    fig.update_yaxes(type="log", tickformat="~s", dtick="D2")
    for i in range(0, len(rows_values), ncol):
        fig.update_yaxes(title_text="latency (us)", row=i // ncol + 1, col=1)
    _layout(fig, f"Latency vs seq_len, k = {k} (median, band p20-p80)", 140 + 290 * nrow)
    return fig


def _map_axes(ds: D.Dataset, k: int) -> tuple[list[int], list[int]]:
    pts = ds.points[ds.points["k"] == k]
    return sorted(pts["seq_len"].unique().tolist()), sorted(pts["rows"].unique().tolist())


def _boundaries(picks: dict[tuple[int, int], str], xs: list[int], ys: list[int], offset: float) -> tuple[list, list]:
    """Cell edges (in index coordinates) between neighbours where a rule's pick changes."""
    bx: list = []
    by: list = []
    for yi, rows in enumerate(ys):
        for xi, seq in enumerate(xs):
            if xi + 1 < len(xs) and picks[(rows, seq)] != picks[(rows, xs[xi + 1])]:
                bx += [xi + 0.5 + offset, xi + 0.5 + offset, None]
                by += [yi - 0.5, yi + 0.5, None]
            if yi + 1 < len(ys) and picks[(rows, seq)] != picks[(ys[yi + 1], seq)]:
                bx += [xi - 0.5, xi + 0.5, None]
                by += [yi + 0.5 + offset, yi + 0.5 + offset, None]
    return bx, by


def _heat_subplots(ds: D.Dataset, title_fmt: str) -> tuple[Any, int, int]:
    _, make_subplots = plotly_modules()
    nrow, ncol = _grid(len(ds.ks), MAP_COLUMNS)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[title_fmt.format(k=k) for k in ds.ks],
                        horizontal_spacing=0.08, vertical_spacing=min(0.15, 0.6 / nrow))
    return fig, nrow, ncol


def _index_axes(fig: Any, xs: list[int], ys: list[int], r: int, c: int) -> None:
    fig.update_xaxes(tickvals=list(range(len(xs))), ticktext=[count_label(x) for x in xs], title_text="seq_len",
                     range=[-0.5, len(xs) - 0.5], showgrid=False, zeroline=False, row=r, col=c)
    fig.update_yaxes(tickvals=list(range(len(ys))), ticktext=[str(y) for y in ys], title_text="rows",
                     range=[-0.5, len(ys) - 0.5], showgrid=False, zeroline=False, row=r, col=c)


def _map_height(ds: D.Dataset, nrow: int) -> int:
    most_rows = max(len(_map_axes(ds, k)[1]) for k in ds.ks)
    return 150 + nrow * max(260, 46 * most_rows + 90)


def _heat_cells(ds: D.Dataset, table: pd.DataFrame, k: int, empty_hover: str,
                cell: Callable[[int, int, int, pd.Series], tuple[float, str, str]]) -> tuple[list, list, Any, Any, Any]:
    """(xs, ys, z, text, hover) over k's rows x seq_len grid; ``cell(rows, seq_len, k, row)`` gives
    the (z, text, hover) of each row of ``table`` at k; the other cells keep ``empty_hover``."""
    xs, ys = _map_axes(ds, k)
    z = np.full((len(ys), len(xs)), np.nan)
    text = np.full(z.shape, "", dtype=object)
    hover = np.full(z.shape, empty_hover, dtype=object)
    for (rows, seq), p in table[table["k"] == k].set_index(["rows", "seq_len"]).iterrows():
        yi, xi = ys.index(rows), xs.index(seq)
        z[yi, xi], text[yi, xi], hover[yi, xi] = cell(rows, seq, k, p)
    return xs, ys, z, text, hover


def _heatmap(go: Any, xs: list, ys: list, z: Any, text: Any, hover: Any, **style: Any) -> Any:
    """A heat map in index coordinates with cell text and the hover text of every cell."""
    return go.Heatmap(z=z, x=list(range(len(xs))), y=list(range(len(ys))), text=text, customdata=hover,
                      texttemplate="%{text}", xgap=1, ygap=1, hovertemplate="%{customdata}<extra></extra>", **style)


def winner_map(ds: D.Dataset, selectors: list[D.Selector]) -> Any:
    """Fastest impl per (rows x seq_len), its margin in hover, each rule's boundaries on top."""
    go, _ = plotly_modules()
    colours = impl_colours(ds.impls)
    n = len(ds.impls)
    scale = []
    for i, impl in enumerate(ds.impls):
        scale += [(i / n, colours[impl]), ((i + 1) / n, colours[impl])]
    fig, nrow, ncol = _heat_subplots(ds, "k = {k}")
    # Implementation names fit in a cell only while a row of panels holds few cells; beyond
    # that the colour (and the legend) name the winner and the cell keeps only the margin.
    named = max(len(_map_axes(ds, k)[0]) for k in ds.ks) * ncol <= 16
    for ki, k in enumerate(ds.ks):
        r, c = _cell(ki, ncol)
        xs, ys = _map_axes(ds, k)
        pts = ds.points[ds.points["k"] == k].set_index(["rows", "seq_len"])
        grid = [(rows, seq, k) for rows in ys for seq in xs]
        rule_picks = [D.rule_picks(s, grid) for s in selectors]
        z = np.full((len(ys), len(xs)), np.nan)
        text = np.full((len(ys), len(xs)), "", dtype=object)
        hover = np.full((len(ys), len(xs)), "not measured", dtype=object)
        for yi, rows in enumerate(ys):
            for xi, seq in enumerate(xs):
                picks = "".join(f"<br>{s.name} picks {p[(rows, seq, k)]}" for s, p in zip(selectors, rule_picks))
                if (rows, seq) not in pts.index:
                    hover[yi, xi] = f"rows {rows}, seq_len {seq}, k {k}: no ok timing{picks}"
                    continue
                p = pts.loc[(rows, seq)]
                z[yi, xi] = ds.impls.index(p["winner"])
                margin = "only impl measured" if not p["runner_up"] else \
                    f"{p['runner_up']} {_exact(p['runner_up_us'])} us, margin {_exact(p['margin'])}"
                margin_text = "" if not p["runner_up"] else f"+{sig(100 * p['margin'])}%"
                text[yi, xi] = f"{p['winner']}<br>{margin_text}" if named else margin_text
                hover[yi, xi] = (f"rows {rows}, seq_len {seq}, k {k}<br><b>{p['winner']}</b> {_exact(p['best_us'])} us"
                                 f"<br>runner-up: {margin}{picks}")
        fig.add_trace(_heatmap(go, xs, ys, z, text, hover, textfont=dict(size=9), colorscale=scale, zmin=-0.5,
                               zmax=n - 0.5, showscale=False), row=r, col=c)
        for si, (sel, picks) in enumerate(zip(selectors, rule_picks)):
            offset = (si - (len(selectors) - 1) / 2) * 0.07
            bx, by = _boundaries({(rw, sq): p for (rw, sq, _), p in picks.items()}, xs, ys, offset)
            fig.add_trace(go.Scatter(x=bx or [None], y=by or [None], mode="lines", name=f"rule: {sel.name}",
                                     legendgroup=f"rule:{sel.name}", showlegend=ki == 0,
                                     line=dict(color=RULE_COLOURS[si % len(RULE_COLOURS)], width=3,
                                               dash=RULE_STYLES[si % len(RULE_STYLES)]),
                                     hoverinfo="name"), row=r, col=c)
        _index_axes(fig, xs, ys, r, c)
    for impl in ds.impls:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=impl, legendgroup=impl,
                                 marker=dict(size=12, symbol="square", color=colours[impl])), row=1, col=1)
    _layout(fig, "Fastest implementation per point (cell text: winner, margin over the runner-up); "
                 "lines: where each rule switches", _map_height(ds, nrow))
    return fig


def speedup(ds: D.Dataset) -> Any | None:
    """Baseline time / fastest other impl's time per (rows x seq_len), one panel per k."""
    go, _ = plotly_modules()
    table = D.speedup(ds)
    if table.empty:
        return None
    fig, nrow, ncol = _heat_subplots(ds, "k = {k}")
    top = max(2.0, float(np.nanmax(np.abs(np.log2(table["speedup"])))))
    ticks = [2.0 ** e for e in range(-math.ceil(top), math.ceil(top) + 1)]

    def cell(rows: int, seq: int, k: int, p: pd.Series) -> tuple[float, str, str]:
        return (math.log2(p["speedup"]), f"{sig(p['speedup'])}x",
                f"rows {rows}, seq_len {seq}, k {k}<br>speedup {_exact(p['speedup'])}x"
                f"<br>{p['best_impl']} {_exact(p['best_us'])} us<br>{ds.baseline} {_exact(p['baseline_us'])} us")

    for ki, k in enumerate(ds.ks):
        r, c = _cell(ki, ncol)
        xs, ys, z, text, hover = _heat_cells(ds, table, k, "no timing of both", cell)
        fig.add_trace(_heatmap(go, xs, ys, z, text, hover, textfont=dict(size=10), colorscale="RdBu", zmid=0,
                               zmin=-top, zmax=top, showscale=ki == 0,
                               colorbar=dict(title="speedup", tickvals=[math.log2(t) for t in ticks],
                                             ticktext=[f"{t:g}x" for t in ticks])), row=r, col=c)
        _index_axes(fig, xs, ys, r, c)
    _layout(fig, f"Speedup of the fastest other implementation over {ds.baseline} (blue: faster than the baseline)",
            _map_height(ds, nrow))
    return fig


def _best_against_floor(ds: D.Dataset, table: pd.DataFrame, *, value: str, prefix: str, unit: str,
                        floor_label: str, floor_column: str, title: str, **style: Any) -> Any:
    """One heat map per k of the fastest impl against a floor: ``value`` per point, each impl's
    ``prefix:<impl>`` in the hover."""
    go, _ = plotly_modules()
    fig, nrow, ncol = _heat_subplots(ds, "k = {k}")

    def cell(rows: int, seq: int, k: int, p: pd.Series) -> tuple[float, str, str]:
        per_impl = "".join(f"<br>{i}: {_exact(p[f'{prefix}:{i}'])}{unit}" for i in ds.impls
                           if p[f"{prefix}:{i}"] == p[f"{prefix}:{i}"])
        return (p[value], f"{sig(p[value])}{unit}",
                f"rows {rows}, seq_len {seq}, k {k}<br>{floor_label} {_exact(p[floor_column])} us"
                f"<br>fastest: {p['winner']} {_exact(p['best_us'])} us{per_impl}")

    for ki, k in enumerate(ds.ks):
        r, c = _cell(ki, ncol)
        xs, ys, z, text, hover = _heat_cells(ds, table, k, "", cell)
        fig.add_trace(_heatmap(go, xs, ys, z, text, hover, textfont=dict(size=10), showscale=ki == 0, **style),
                      row=r, col=c)
        _index_axes(fig, xs, ys, r, c)
    _layout(fig, title, _map_height(ds, nrow))
    return fig


def floor(ds: D.Dataset) -> Any:
    """% of the memory floor the fastest impl reaches, per (rows x seq_len), one panel per k."""
    table = D.floor_table(ds)
    return _best_against_floor(
        ds, table, value="pct_best", prefix="pct", unit="%", floor_label="floor", floor_column="floor_us",
        title="Fastest implementation's share of the memory floor (100% = bytes moved at the measured copy bandwidth)",
        colorscale="Viridis", zmin=0, zmax=max(100.0, float(np.nanmax(table["pct_best"]))),
        colorbar=dict(title="% of floor"))


def read_floor(ds: D.Dataset) -> Any | None:
    """The fastest impl as a multiple of the measured read floor, per (rows x seq_len), per k."""
    table = D.read_floor_table(ds)
    if table.empty:
        return None
    return _best_against_floor(
        ds, table, value="x_read", prefix="x", unit="x", floor_label="one read of the scores",
        floor_column="read_us", title="Fastest implementation as a multiple of the read floor (one streaming read "
                                      "of the same scores, timed in the same run and mode)",
        colorscale="Viridis_r", zmin=1, colorbar=dict(title="x read"))


def regret(table: D.RuleTable) -> Any | None:
    """Regret of each rule at every cell (worst over length modes and distributions; 1 = the
    fastest everywhere there); unavailable picks are left out of the plot and counted in the table."""
    go, _ = plotly_modules()
    fig = go.Figure()
    cells = table.points.cells
    for si, (label, picks, regret) in enumerate(table.picks):
        shown = np.isfinite(regret)
        if not shown.any():
            continue
        hover = [f"rows {r}, seq_len {s}, k {k}<br>picked {p}<br>regret {_exact(float(g))}"
                 for (k, r, s), p, g, keep in zip(cells, picks, regret, shown) if keep]
        colour = RULE_COLOURS[si % len(RULE_COLOURS)]
        fig.add_trace(go.Box(y=regret[shown], name=label, boxpoints="all", jitter=0.5, pointpos=0,
                             marker=dict(size=5, color=colour), line=dict(color=colour), fillcolor="rgba(0,0,0,0)",
                             customdata=hover, hovertemplate="%{customdata}<extra>%{fullData.name}</extra>"))
    if not fig.data:
        return None
    fig.add_hline(y=D.NEAR_ORACLE, line=dict(color="#999", dash="dot"))
    # Annotations on a log axis take log10 coordinates (add_hline's own label would land at 10^1.05).
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=math.log10(D.NEAR_ORACLE), yref="y", yanchor="bottom",
                       text="5% over the fastest", showarrow=False, font=dict(color="#777", size=11))
    fig.update_yaxes(type="log", title_text="regret (chosen / fastest, worst over the data kinds)")
    _layout(fig, "Regret per cell (rows, seq_len, k): chosen implementation's median / the fastest median, "
                 "worst over length modes and distributions", 480)
    fig.update_layout(showlegend=False)
    return fig


def noise(ds: D.Dataset) -> Any:
    """Relative spread (p80 - p20) / median of every timing; flagged-noisy ones drawn as crosses."""
    go, _ = plotly_modules()
    colours = impl_colours(ds.impls)
    table = D.noise_table(ds)
    fig = go.Figure()
    for impl in ds.impls:
        for noisy in (False, True):
            t = table[(table["impl"] == impl) & (table["noisy"] == noisy)]
            if t.empty:
                continue
            hover = [f"<b>{impl}</b> rows {p.rows}, seq_len {p.seq_len}, k {p.k}<br>median {_exact(p.median_us)} us"
                     f"<br>rel. spread {_exact(p.rel_spread)}, samples {p.n_samples}"
                     f"{'<br><b>flagged noisy</b>' if noisy else ''}" for p in t.itertuples(index=False)]
            fig.add_trace(go.Scatter(x=t["seq_len"], y=t["rel_spread"], mode="markers",
                                     name=f"{impl} (noisy)" if noisy else impl, legendgroup=impl,
                                     marker=dict(color=colours[impl], size=11 if noisy else 7,
                                                 symbol="x" if noisy else "circle", opacity=0.85),
                                     customdata=hover, hovertemplate="%{customdata}<extra></extra>"))
    fig.update_xaxes(type="log", title_text="seq_len", tickformat="~s", dtick="D2")
    fig.update_yaxes(title_text="(p80 - p20) / median", rangemode="tozero")
    _layout(fig, "Timing noise: relative spread of every timing (crosses: above the sweep's noise target)", 420)
    return fig
