"""``topkbench compare A B``: how far two runs of the same points agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from topkbench.compare import compare_runs
from topkbench.errors import UsageError
from topkbench.store import read_results
from topkbench.terminal import console, simple_table


def compare(
    run_a: Annotated[Path, typer.Argument(help="Results of the first run (file or folder).")],
    run_b: Annotated[Path, typer.Argument(help="Results of the repeat (file or folder).")],
    margin: Annotated[float, typer.Option(help="Winner margin above which a changed winner counts.")] = 0.10,
) -> None:
    """Spread of the per-point median ratio and winner agreement between two runs."""
    if margin < 0:
        raise UsageError(f"--margin must be >= 0, got {margin}")
    result = compare_runs(read_results([run_a]), read_results([run_b]), margin)
    console().print(simple_table(("figure", "value"), result.lines(), title=f"{run_b} vs {run_a}"))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
