"""``topkbench fit-heuristic``: fitted dispatch thresholds as a standalone module (docs/design.md section 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from topkbench import codegen, dispatch
from topkbench.errors import UsageError
from topkbench.evaluate import Against, Evaluation, against, evaluate
from topkbench.fit import DEFAULT_CAPS, MISS_MARGIN, SELECTION_TOLERANCE, Complexity, FitResult, fit
from topkbench.output_files import check_output_path, write_texts
from topkbench.results import select_points
from topkbench.store import read_results

_PARAGRAPHS = (
    """Fit dispatch thresholds that minimise regret and write them as a standalone Python module.""",
    """Regret of a choice at a point = its median time / the fastest median measured there. Only points
    with status ok of one GPU are used (a point measured by several runs: the newest); an implementation
    that is unsupported, wrong or failed at a point is unavailable there (infinite regret). Length modes and
    distributions measured at one (rows, seq_len, k) cell are combined by their WORST regret.""",
    f"""k bands, row bands and seq_len cut points found by an exact search for every complexity up to
    the caps; the complexity with the lowest held-out regret (leave one seq_len out, leave one rows value
    out, random 20%) is kept, and among those within {100 * SELECTION_TOLERANCE:g}% of it the one with the
    fewest misses (picks more than {100 * MISS_MARGIN:g}% slower than the fastest at a measured cell), then
    the simplest. Cuts sit where the two sides' regret cross between measured values; values outside the
    measured range get the nearest band.""",
    """The module picks only built-in implementations unless --impl names the ones it may pick (plugins
    included). Writes OUT (the module), OUT.fit.json and OUT.fit.md, and prints the held-out figures next
    to every fixed choice and the hand rules.""",
    f"""--against MODULE judges another dispatch module (the one shipped before the refit, say) on the same
    cells and lists every cell where the fit's pick is more than {100 * MISS_MARGIN:g}% slower than its
    pick: what the refit would make slower.""",
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


def _against_table(comparison: Against, name: str) -> Table:
    table = Table(title=f"cells where the fit is more than {100 * comparison.margin:g}% slower than {name}",
                  title_justify="left")
    for column in ("k", "rows", "seq_len", "its pick", "regret", "the fit's", "regret"):
        table.add_column(column, justify="left" if column in ("its pick", "the fit's") else "right", no_wrap=True)
    for change in comparison.slower:
        k, rows, seq_len = change.cell
        table.add_row(str(k), str(rows), str(seq_len), change.before, codegen.fmt(change.before_regret, 3),
                      change.after, codegen.fmt(change.after_regret, 3))
    return table


def _print_against(console: Console, comparison: Against, name: str) -> None:
    cells = comparison.after.n
    console.print(f"against {name}: geomean regret {codegen.fmt(comparison.after.geomean, 4)} "
                  f"({name}: {codegen.fmt(comparison.before.geomean, 4)}); {comparison.faster} of {cells} "
                  f"cells more than {100 * comparison.margin:g}% faster, {len(comparison.slower)} more than "
                  f"{100 * comparison.margin:g}% slower")
    if comparison.slower:
        console.print(_against_table(comparison, name))


def fit_heuristic(
    results: Annotated[list[Path], typer.Argument(help="Result Parquet files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The module to write (.py); OUT.fit.json and OUT.fit.md go next to it.")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU name or slug to fit (required when the results hold several).")] = None,
    impl: Annotated[Optional[list[str]], typer.Option("--impl", help="Implementation the module may pick (repeat); default: the built-in ones measured.")] = None,
    k: Annotated[Optional[list[int]], typer.Option("--k", help="Keep only this k (repeat).")] = None,
    length_mode: Annotated[Optional[list[str]], typer.Option("--length-mode", help="Keep only this length mode (repeat).")] = None,
    distribution: Annotated[Optional[list[str]], typer.Option("--distribution", help="Keep only this distribution (repeat).")] = None,
    timing_mode: Annotated[Optional[str], typer.Option("--timing-mode", help="Timing mode to fit (required when the results mix them).")] = None,
    l2: Annotated[Optional[str], typer.Option("--l2", help="L2 mode to fit, hot or cold (required when the results mix them).")] = None,
    max_k_bands: Annotated[int, typer.Option("--max-k-bands", min=1, help="Most k bands.")] = DEFAULT_CAPS.k_bands,
    max_row_bands: Annotated[int, typer.Option("--max-row-bands", min=1, help="Most row bands per k band.")] = DEFAULT_CAPS.row_bands,
    max_cuts: Annotated[int, typer.Option("--max-cuts", min=0, help="Most seq_len cut points per row band.")] = DEFAULT_CAPS.cuts,
    compute_capability: Annotated[Optional[str], typer.Option("--compute-capability", help="The GPU's compute capability (e.g. 9.0) when the results lack it and its name is not a known one.")] = None,
    install: Annotated[bool, typer.Option("--install", help="Also copy the module to ~/.config/topkbench/heuristics/<gpu_slug>.py, where impl='auto' finds it.")] = False,
    against_module: Annotated[Optional[Path], typer.Option("--against", help="A dispatch module (a .py with select(num_rows, max_seq_len, k)) to judge beside the fit on the same cells: the cells the fit makes slower are listed.")] = None,
) -> None:
    if out.suffix != ".py":
        raise UsageError(f"--out {out}: the module must be a .py file")
    json_path, md_path = out.with_suffix(".fit.json"), out.with_suffix(".fit.md")
    for path in (out, json_path, md_path):
        check_output_path(path, "--out")  # before the fit: a bad path should not cost a fit first
    if compute_capability is not None and not compute_capability.replace(".", "", 1).isdigit():
        raise UsageError(f"--compute-capability {compute_capability}: expected MAJOR.MINOR, e.g. 9.0")
    # Loaded before the fit: a bad module should not cost a fit first.
    before = None if against_module is None else dispatch.load_heuristic_module(against_module, require_thresholds=False)
    frame = read_results(results)
    filters = {"k": k, "length_mode": length_mode, "distribution": distribution,
               "timing_mode": [timing_mode] if timing_mode else None, "l2": [l2] if l2 else None}
    points, provenance = select_points(frame, gpu=gpu, impls=impl, filters=filters,
                                       compute_capability=compute_capability)
    result = fit(points, provenance, caps=Complexity(max_k_bands, max_row_bands, max_cuts))
    evaluation = evaluate(result)
    write_texts({out: codegen.render_module(result, evaluation), json_path: codegen.render_json(result, evaluation),
                 md_path: codegen.render_markdown(result, evaluation)}, "--out")

    console = Console()
    if provenance.overlap_notice:
        console.print(f"note: {provenance.overlap_notice}")
    console.print(f"{provenance.device.describe()}: {len(points.cells)} cells (rows, seq_len, k), "
                  f"picking among {', '.join(points.allowed)}")
    if not provenance.device.compute_capability:
        console.print("note: the compute capability is unknown (not in the data, not a known GPU name): pass "
                      "--compute-capability so that the module can stand in for similar GPUs")
    console.print(_thresholds_table(result))
    console.print(f"model: {result.complexity} (by held-out regret, then misses, up to {result.caps})")
    console.print(_figures_table(evaluation, "regret = time / fastest measured time (worst over length modes and "
                                             "distributions); held-out rows are the fit's quality"))
    console.print(f"wrote {out}, {json_path.name}, {md_path.name}")
    if before is not None:
        _print_against(console, against(points, result, before), against_module.name)
    if install:
        target = dispatch.user_heuristics_dir() / f"{provenance.gpu_slug}.py"
        write_texts({target: out.read_text(encoding="utf-8")}, "--install")
        dispatch.reload()  # impl="auto" in this process looks again
        console.print(f"installed {target}: impl='auto' uses it on {provenance.gpu_name}")
        shadow = dispatch.module_path(provenance.gpu_slug)
        if shadow is not None and shadow != target:
            console.print(f"note: {shadow} comes first (${dispatch.ENV_VAR}) and is what impl='auto' uses")


def register(app: typer.Typer) -> None:
    app.command("fit-heuristic", help=HELP)(fit_heuristic)
