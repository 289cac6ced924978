"""Build the report: stored results in, one self-contained HTML page out. Nothing is re-run."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from topkbench import results
from topkbench.errors import ReportError, StoreError
from topkbench.output_files import check_output_path, write_texts
from topkbench.report import data as D
from topkbench.report import figures as F
from topkbench.report.fmt import pct
from topkbench.report.html import Column, Page, key_values, note, num, table
from topkbench.report.selectors import Heuristic, datasets_for, hand_rules, load_heuristic
from topkbench.store import read_results


#: The noise section lists the worst timings only; the figure shows all of them.
NOISY_ROWS_SHOWN = 25


_REGRET_COLUMNS = [
    Column("rule", "rule"), Column("kind", "figures"),
    Column("geomean_regret", "geo-mean regret", num, numeric=True),
    Column("max_regret", "max regret", num, numeric=True),
    Column("within_5pct", "within 5% of fastest", pct, numeric=True),
    Column("unavailable", "unavailable picks", lambda v: str(int(v)), numeric=True),
    Column("cells", "cells", lambda v: str(int(v)), numeric=True),
    Column("note", "note"),
]
#: How each kind of figure reads, for the legend under the table.
_KINDS = ("held-out: the fitted thresholds on cells they were not fitted to, the fit's quality; in-sample: on "
          "the cells they were fitted to (optimistic); fitted: a module judged on results it was not fitted to; "
          "fixed and rule: need no fitting, judged on every cell.")
_POINT = [Column("rows", "rows"), Column("seq_len", "seq_len"), Column("k", "k")]
_FAIL_COLUMNS = [Column("gpu_name", "device"), Column("timing_mode", "timing"), Column("l2", "L2"),
                 Column("length_mode", "lengths"), Column("distribution", "distribution"), *_POINT,
                 Column("impl", "impl"), Column("status", "status"), Column("reason", "reason"),
                 Column("run_id", "run")]
_NOISE_COLUMNS = [*_POINT, Column("impl", "impl"), Column("median_us", "median (us)", num, numeric=True),
                  Column("p20_us", "p20 (us)", num, numeric=True), Column("p80_us", "p80 (us)", num, numeric=True),
                  Column("rel_spread", "rel. spread", num, numeric=True),
                  Column("n_samples", "samples", lambda v: str(int(v)), numeric=True)]
_RUN_COLUMNS = [Column(k, k.replace("_", " ")) for k in
                ("run_id", "gpu_name", "host", "config_name", "config_hash", "first", "last", "topkbench",
                 "git_sha", "git_dirty", "torch", "cuda", "cupy", "driver", "sm_count")] + [
    Column("bandwidth_gbs", "copy bandwidth (GB/s)", num, numeric=True),
    Column("result_rows", "result rows", lambda v: str(int(v)), numeric=True)]
_HASH_COLUMNS = [Column("impl", "impl"), Column("device", "device"), Column("kernel_hash", "kernel source hash"),
                 Column("runs", "runs")]


def _selectors(ds: D.Dataset, fitted: list[D.Dataset], heuristic: Heuristic | None,
               rules: Sequence[D.Selector]) -> list[D.Selector]:
    chosen: list[D.Selector] = [heuristic] if heuristic is not None and any(ds is f for f in fitted) else []
    return chosen + list(rules)


def _dataset_section(page: Page, ds: D.Dataset, selectors: list[D.Selector], index: int) -> None:
    anchor = f"ds{index}-{ds.slug}"
    page.heading(ds.title, 2, anchor)
    page.html(key_values([
        ("points", f"{len(ds.points)} (rows x seq_len x k)"),
        ("implementations", ", ".join(ds.impls)),
        ("baseline", ds.baseline or "none measured (no torch / torch-cpu timings)"),
        ("k values", ", ".join(str(k) for k in ds.ks)),
        ("rules judged", ", ".join(s.name for s in selectors) or "none"),
    ]))

    page.heading("Latency vs seq_len", 3, f"{anchor}-latency")
    page.html(note("One figure per k, one panel per rows value; line: median, band: p20-p80. Log axes."))
    for k in ds.ks:
        page.figure(F.latency(ds, k))

    page.heading("Winner map and dispatch rules", 3, f"{anchor}-winners")
    page.html(note("Colour: the fastest implementation at each (rows, seq_len); the percentage is its margin "
                   "over the runner-up. Lines mark where each rule switches implementation (toggle them in the "
                   "legend); hover a cell for exact times and what every rule picks there."))
    page.figure(F.winner_map(ds, selectors))

    page.heading(f"Speedup over {ds.baseline or 'the baseline'}", 3, f"{anchor}-speedup")
    fig = F.speedup(ds)
    if fig is None:
        page.html(note("No speedup: this dataset lacks a baseline (torch / torch-cpu) or any other implementation."))
    page.figure(fig)

    page.heading("Share of the memory floor", 3, f"{anchor}-floor")
    page.figure(F.floor(ds))

    fig = F.read_floor(ds)
    if fig is not None:
        page.heading("Times the read floor", 3, f"{anchor}-read")
        page.figure(fig)

    page.heading("Timing noise", 3, f"{anchor}-noise")
    noise = D.noise_table(ds)
    noisy = noise[noise["noisy"]]
    page.html(note(f"{len(noisy)} of {len(noise)} timings are flagged noisy (their spread stayed above the "
                   "sweep's noise target within its time budget); read their medians with care."))
    page.figure(F.noise(ds))
    if not noisy.empty:
        page.html(note("The noisiest flagged timings:"))
        page.html(table(noisy.sort_values("rel_spread", ascending=False), _NOISE_COLUMNS, limit=NOISY_ROWS_SHOWN))


def _rule_section(page: Page, rule_table: D.RuleTable, index: int) -> None:
    anchor = f"rules{index}"
    page.heading(f"Dispatch rules: {rule_table.title}", 2, anchor)
    combined = len(rule_table.points.cells)
    page.html(note(f"Regret at a cell (rows, seq_len, k) = the chosen implementation's median / the fastest median, "
                   f"worst over the length modes and distributions measured there ({combined} cells): a dispatcher "
                   "sees only the cell. A pick without a usable timing is unavailable: infinite regret, counted in "
                   "its own column. These are the figures fit-heuristic writes for the same data."))
    page.html(table(D.rule_summary(rule_table), _REGRET_COLUMNS))
    page.html(note(_KINDS))
    page.figure(F.regret(rule_table))


def render(frame: pd.DataFrame, heuristic: Heuristic | None = None, rules: Sequence[D.Selector] | None = None,
           sources: Sequence[str] = ()) -> str:
    """The report page for the results in ``frame`` (a frame of the result schema)."""
    F.plotly_modules()
    from plotly.offline import get_plotlyjs

    kept = results.newest(frame)
    datasets = D.split_datasets(kept.frame)
    fitted = datasets_for(heuristic, datasets) if heuristic is not None else []
    rules = list(hand_rules() if rules is None else rules)
    failed = D.failures(kept.frame)
    rule_tables = D.rule_tables(kept.frame, rules, heuristic if fitted else None,
                                heuristic.gpu_name or fitted[0].key["gpu_name"] if fitted else None,
                                heuristic.recorded_quality() if fitted else [],
                                heuristic.fitted_runs() if fitted else set())

    page = Page("topkbench report")
    devices = sorted(frame["gpu_name"].astype(str).unique())
    timings = len(kept.frame) - len(failed)
    page.html(key_values([
        ("devices", ", ".join(devices)),
        ("result rows", f"{len(frame)} ({timings} ok timings, {len(failed)} failed/unsupported"
                        + (f", {len(frame) - len(kept.frame)} replaced by newer runs" if kept.notice else "") + ")"),
        ("datasets", str(len(datasets))),
        ("measured", f"{frame['timestamp'].min()} to {frame['timestamp'].max()}"),
        ("fitted heuristic", f"{heuristic.path} (GPU: {heuristic.gpu_name or 'not stated'})" if heuristic else "none given"),
        ("sources", ", ".join(sources) or "in-memory frame"),
        *([("overlapping runs", kept.notice)] if kept.notice else []),
    ]))
    page.html(note("A dataset holds the timings taken under one set of conditions (device, timing mode, "
                   "L2 state, length mode, distribution); timings are compared only within one. A point "
                   "measured by several runs shows its newest measurement."))
    for i, rule_table in enumerate(rule_tables):
        _rule_section(page, rule_table, i)
    for i, ds in enumerate(datasets):
        _dataset_section(page, ds, _selectors(ds, fitted, heuristic, rules), i)

    page.heading("Failed, wrong and unsupported points", 2, "failures")
    page.html(note("These are never plotted as timings. 'wrong' means the exactness check failed."))
    page.html(table(failed, _FAIL_COLUMNS, row_class=lambda r: "bad" if r["status"] == "wrong" else ""))

    page.heading("Provenance", 2, "provenance")
    page.html(table(D.provenance(frame), _RUN_COLUMNS))
    page.heading("Kernel sources", 3, "kernels")
    page.html(table(D.kernel_hashes(frame), _HASH_COLUMNS))
    return page.render(get_plotlyjs())


def build_report(paths: Iterable[str | Path], out: str | Path, heuristic: str | Path | None = None) -> Path:
    """Read stored results under ``paths`` and write the report to ``out``."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no result files given", hint="topkbench report RESULTS... --out report.html")
    out = Path(out)
    check_output_path(out, "--out", ReportError)  # before the work: a bad path should not cost a report first
    F.plotly_modules()
    try:
        frame = read_results(paths)
    except StoreError as exc:
        raise ReportError(exc.message, hint=exc.hint) from None
    loaded = load_heuristic(heuristic) if heuristic is not None else None
    sources = sorted(set(frame.get("source_file", pd.Series(dtype=str)).astype(str)))
    write_texts({out: render(frame, loaded, sources=sources)}, "--out", ReportError)
    return out
