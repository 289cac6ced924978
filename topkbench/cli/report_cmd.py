"""``topkbench report RESULTS... --out report.html``: an HTML report from stored results only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    results: Annotated[Optional[list[Path]], typer.Argument(
        help="Result Parquet files or folders (searched recursively), as written by 'topkbench sweep'.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    heuristic: Annotated[Optional[Path], typer.Option(
        "--heuristic", help="A module written by 'topkbench fit-heuristic': its thresholds are drawn "
                            "and judged next to the hand rules.")] = None,
) -> None:
    """Write one self-contained HTML page of plots and tables; nothing is re-measured."""
    # Imported here so that the CLI starts (and the GPU machine, which has no plotly, runs every
    # other command) without the report's dependencies.
    from topkbench.report import build_report

    path = build_report(results or [], out, heuristic)
    typer.echo(f"report: {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
