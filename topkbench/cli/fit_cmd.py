"""``topkbench fit-heuristic``: fitted dispatch thresholds as a standalone module (DESIGN.md section 8)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from topkbench import codegen, dispatch
from topkbench.errors import UsageError
from topkbench.evaluate import Evaluation, evaluate
from topkbench.fit import DEFAULT_MAX_CUTS, DEFAULT_MAX_ROW_BANDS, FitResult, fit
from topkbench.points import select_points
from topkbench.store import read_results

_PARAGRAPHS = (
    """Fit dispatch thresholds that minimise regret and write them as a standalone Python module.""",
    """Regret of a choice at a point = its median time / the fastest median measured there. Only points
    with status ok of one GPU are used; an implementation that is unsupported, wrong or failed at a
    point is unavailable there (infinite regret). Length modes and distributions measured at one
    (rows, seq_len, k) cell are combined by their WORST regret.""",
    """Per measured k, at most --max-row-bands row bands, each with at most --max-cuts seq_len cut
    points, found by an exact search; cuts sit at the geometric midpoint between measured values,
    and values outside the measured range get the nearest band.""",
    """Writes OUT (the module), OUT.fit.json and OUT.fit.md, and prints held-out figures (leave one
    seq_len / rows value out) next to every fixed choice and the hand rules.""",
)
HELP = "\n\n".join(" ".join(p.split()) for p in _PARAGRAPHS)


def _figures_table(evaluation: Evaluation, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("choice", no_wrap=True)
    for column in ("geomean", "max", "within 5%", "unavailable"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in evaluation.rows:
        f = row.figures
        if f is None:
            table.add_row(row.label, "n/a", "n/a", "n/a", "n/a")
        else:
            table.add_row(row.label, codegen.fmt(f.geomean, 3), codegen.fmt(f.max, 3),
                          f"{100 * f.within_5pct:.1f}%", f"{f.unavailable}/{f.n}")
    notes = [f"{row.label}: {row.note}" for row in evaluation.rows if row.note]
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def _thresholds_table(result: FitResult) -> Table:
    table = Table(title="thresholds", title_justify="left")
    for column in ("k", "rows", "seq_len", "implementation"):
        table.add_column(column)
    previous = ("", "")
    for k_text, rows_text, seq_text, impl in codegen.threshold_rows(result):
        # Repeated band names are blanked so the table reads as a tree.
        shown = ("" if k_text == previous[0] else k_text,
                 "" if (k_text, rows_text) == previous else rows_text)
        table.add_row(shown[0], shown[1], seq_text, impl)
        previous = (k_text, rows_text)
    return table


def fit_heuristic(
    results: Annotated[list[Path], typer.Argument(help="Result Parquet files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The module to write (.py); OUT.fit.json and OUT.fit.md go next to it.")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU name or slug to fit (required when the results hold several).")] = None,
    impl: Annotated[Optional[list[str]], typer.Option("--impl", help="Implementation to consider (repeat); default: all with ok points.")] = None,
    k: Annotated[Optional[list[int]], typer.Option("--k", help="Keep only this k (repeat).")] = None,
    length_mode: Annotated[Optional[list[str]], typer.Option("--length-mode", help="Keep only this length mode (repeat).")] = None,
    distribution: Annotated[Optional[list[str]], typer.Option("--distribution", help="Keep only this distribution (repeat).")] = None,
    timing_mode: Annotated[Optional[str], typer.Option("--timing-mode", help="Timing mode to fit (required when the results mix them).")] = None,
    l2: Annotated[Optional[str], typer.Option("--l2", help="L2 mode to fit, hot or cold (required when the results mix them).")] = None,
    max_row_bands: Annotated[int, typer.Option("--max-row-bands", min=1, help="Most row bands per k.")] = DEFAULT_MAX_ROW_BANDS,
    max_cuts: Annotated[int, typer.Option("--max-cuts", min=0, help="Most seq_len cut points per row band.")] = DEFAULT_MAX_CUTS,
    install: Annotated[bool, typer.Option("--install", help="Also copy the module to ~/.config/topkbench/heuristics/<gpu_slug>.py, where impl='auto' finds it.")] = False,
) -> None:
    if out.suffix != ".py":
        raise UsageError(f"--out {out}: the module must be a .py file")
    frame = read_results(results)
    filters = {"k": k, "length_mode": length_mode, "distribution": distribution,
               "timing_mode": [timing_mode] if timing_mode else None, "l2": [l2] if l2 else None}
    points, provenance = select_points(frame, gpu=gpu, impls=impl, filters=filters)
    result = fit(points, provenance, max_row_bands=max_row_bands, max_cuts=max_cuts)
    evaluation = evaluate(result)

    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".fit.json")
    md_path = out.with_suffix(".fit.md")
    out.write_text(codegen.render_module(result, evaluation), encoding="utf-8")
    json_path.write_text(codegen.render_json(result, evaluation), encoding="utf-8")
    md_path.write_text(codegen.render_markdown(result, evaluation), encoding="utf-8")

    console = Console()
    console.print(f"{provenance.gpu_name}: {len(points.cells)} cells (rows, seq_len, k), "
                  f"implementations {', '.join(points.impls)}")
    console.print(_thresholds_table(result))
    console.print(_figures_table(evaluation, "regret = time / fastest measured time (worst over length modes and distributions)"))
    console.print(f"wrote {out}, {json_path.name}, {md_path.name}")
    if install:
        target = dispatch.user_heuristics_dir() / f"{provenance.gpu_slug}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, target)
        dispatch.reload()  # impl="auto" in this process looks again
        console.print(f"installed {target}: impl='auto' uses it on {provenance.gpu_name}")
        shadow = dispatch.module_path(provenance.gpu_slug)
        if shadow is not None and shadow != target:
            console.print(f"note: {shadow} comes first (${dispatch.ENV_VAR}) and is what impl='auto' uses")


def register(app: typer.Typer) -> None:
    app.command("fit-heuristic", help=HELP)(fit_heuristic)
