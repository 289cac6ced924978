"""``topkbench sweep CONFIG``: measure a config's points and store them as Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from topkbench.config import load_config
from topkbench.progress import PlainProgress, SweepEta, format_duration, task_features
from topkbench.store import RunStore
from topkbench.sweep import Plan, PointTasks, run_sweep
from topkbench.terminal import console, status_counts, summary_table


def sweep(
    config: Annotated[str, typer.Argument(help="A YAML config file, or a bundled config name (quick, dsv32-decode).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder; runs go to OUT/<gpu>/.")] = Path("results"),
    impl: Annotated[Optional[list[str]], typer.Option("--impl", "-i", help="Implementation to run (repeatable); "
                                                      "default: the config's list.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue the newest run of this config "
                                         "in OUT, or start a new run.")] = True,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Sweep a slice: AXIS=V1,V2 (repeatable), e.g. "
                                                      "k=2048. Slices of one config share its run, so a later "
                                                      "slice resumes it.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary table.")] = False,
) -> None:
    """Check every point for exactness, time it, and write tidy Parquet as the sweep goes."""
    cfg = load_config(config)
    restriction = cfg.parse_only(only) if only else None
    term = console(stderr=True)
    # a bar on a terminal; a plain line every 30 s in a log, where a bar would print nothing useful
    bar = term.is_terminal and not quiet
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"), console=term,
                        disable=not bar, transient=False)
    state: dict = {}

    def on_plan(plan: Plan, store: RunStore) -> None:
        scope = f"{sum(1 for _ in cfg.points(restriction))} of {cfg.num_points}" if restriction else f"{cfg.num_points}"
        term.print(f"[bold]{cfg.name}[/bold]: {scope} points, run {store.run_id} -> {store.directory}")
        term.print(f"  {plan.to_measure} measurements to take, {plan.unsupported} unsupported, "
                   f"{plan.already_done} already in this run")
        state["eta"] = eta = SweepEta([task_features(len(t.measure), t.point.rows * t.point.seq_len * 4)
                                       for t in plan.tasks])
        state["plain"] = PlainProgress(plan.to_measure, term.print) if not bar and not quiet else None
        state["task"] = progress.add_task("sweep", total=plan.to_measure, eta=format_duration(eta.remaining_s))
        progress.start()

    def on_point(task: PointTasks, rows: list, seconds: float) -> None:
        eta: SweepEta = state["eta"]
        eta.point_done(seconds)
        remaining = format_duration(eta.remaining_s)
        progress.update(state["task"], advance=len(task.measure), description=task.label, eta=remaining)
        if state["plain"] is not None:
            state["plain"].advance(len(task.measure), task.label, eta.remaining_s)

    try:
        outcome = run_sweep(cfg, out, impl, resume, on_plan, on_point, only=restriction)
    finally:
        progress.stop()
    if outcome.path is not None:
        term.print(f"results: {outcome.path}")
    if quiet:
        return
    measured = pd.DataFrame(outcome.measured_rows)
    if measured.empty:
        term.print("nothing new to measure" + (" (every point is already in this run)" if outcome.plan.already_done else ""))
        return
    term.print(f"this session: {status_counts(measured)}")
    bad = measured[measured["status"].isin(["wrong", "error"])]
    for _, row in bad.head(10).iterrows():
        term.print(f"  [red]{row['status']}[/red] {row['impl']} rows={row['rows']} L={row['seq_len']} k={row['k']} "
                   f"{row['length_mode']} {row['distribution']}: {row['reason']}")
    table, hidden = summary_table(measured)
    console().print(table)
    if hidden:
        term.print(f"... {hidden} more shapes in {outcome.path}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
