"""``topkbench sweep CONFIG``: measure a config's points and store them as Parquet.

``--devices`` measures on several GPUs of this host at once (topkbench/multi_device.py) and
``--shard i/n`` measures one cost-balanced part of the points, for schedulers that start N copies
of the command on N hosts (topkbench/shard.py); the two compose. docs/multi-gpu.md has the details.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from topkbench.config import SweepConfig, load_config
from topkbench.plugins.option import PluginOption, load_cli_plugins
from topkbench.progress import PlainProgress, SweepEta, format_duration
from topkbench.shard import agreed_run_id, parse_shard, shard_points
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
    devices: Annotated[Optional[str], typer.Option("--devices", help="Measure on several GPUs of this host: 'all' or "
                                                   "indices such as 0,1,3. One worker per GPU, each point whole on one "
                                                   "GPU, one run.")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Measure shard i of n of the points (i/n, e.g. 2/8), "
                                                 "or 'auto' from a Slurm array or Kubernetes Indexed Job; the n shards "
                                                 "cover every point once.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", envvar="TOPKBENCH_RUN_ID",
                                                  help="Measure into the run with this id, created or continued "
                                                       "(e.g. the one run that all shards of a job share).")] = None,
    pool_worker: Annotated[bool, typer.Option("--pool-worker", hidden=True)] = False,
    plugin: PluginOption = None,
) -> None:
    """Check every point for exactness, time it, and write tidy Parquet as the sweep goes."""
    load_cli_plugins(plugin)
    cfg = load_config(config)
    restriction = cfg.parse_only(only) if only else None
    if pool_worker:  # one GPU's worker of a --devices sweep: JSON lines on stdout, nothing else
        from topkbench.pool_worker import run_worker

        run_worker(cfg, out, impl, restriction)
        return
    shard_spec = parse_shard(shard) if shard else None
    share = shard_points(cfg, shard_spec, restriction) if shard_spec else None
    run_id = agreed_run_id(run_id, shard_spec, resume)
    term = console(stderr=True)
    if shard_spec is not None:
        source = f" (from {shard_spec.source})" if shard_spec.source else ""
        term.print(f"shard {shard_spec}{source}: {len(share)} of {sum(1 for _ in cfg.points(restriction))} points, "
                   f"run id {run_id}")
    if devices:
        # every option that changes what a worker measures (the rest is the parent's business)
        worker_argv = ["sweep", config, "--out", str(out), *[a for name in impl or [] for a in ("--impl", name)],
                       *[a for spec in only or [] for a in ("--only", spec)],
                       *[a for spec in plugin or [] for a in ("--plugin", spec)]]
        _sweep_devices(cfg, out, devices, worker_argv, impl, resume, restriction, share, run_id, quiet, term)
        return
    # a bar on a terminal; a plain line every 30 s in a log, where a bar would print nothing useful
    bar = term.is_terminal and not quiet
    progress = _progress(term, bar)
    state: dict = {}

    def on_plan(plan: Plan, store: RunStore) -> None:
        _print_scope(term, cfg, restriction, share, store.run_id, str(store.directory), plan.to_measure, plan.unsupported,
                     plan.already_done)
        state["eta"] = eta = SweepEta([t.cost_features for t in plan.tasks])
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
        outcome = run_sweep(cfg, out, impl, resume, on_plan, on_point, only=restriction,
                            point_filter=share.__contains__ if share is not None else None, run_id=run_id)
    finally:
        progress.stop()
    if outcome.path is not None:
        term.print(f"results: {outcome.path}")
    if not quiet:
        _print_summary(term, pd.DataFrame(outcome.measured_rows), outcome.plan.already_done, str(outcome.path))


def _progress(term, bar: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta {task.fields[eta]}"), console=term, disable=not bar, transient=False)


def _print_scope(term, cfg: SweepConfig, restriction, share, run_id: str, where: str, to_measure: int,
                 unsupported: int, already: int) -> None:
    in_scope = len(share) if share is not None else sum(1 for _ in cfg.points(restriction))
    scope = f"{in_scope} of {cfg.num_points}" if restriction or share is not None else f"{cfg.num_points}"
    term.print(f"[bold]{cfg.name}[/bold]: {scope} points, run {run_id} -> {where}")
    term.print(f"  {to_measure} measurements to take, {unsupported} unsupported, {already} already in this run")


def _print_summary(term, measured: pd.DataFrame, already_done: int, where: str) -> None:
    if measured.empty:
        term.print("nothing new to measure" + (" (every point is already in this run)" if already_done else ""))
        return
    term.print(f"this session: {status_counts(measured)}")
    bad = measured[measured["status"].isin(["wrong", "error"])]
    for _, row in bad.head(10).iterrows():
        term.print(f"  [red]{row['status']}[/red] {row['impl']} rows={row['rows']} L={row['seq_len']} k={row['k']} "
                   f"{row['length_mode']} {row['distribution']}: {row['reason']}")
    table, hidden = summary_table(measured)
    console().print(table)
    if hidden:
        term.print(f"... {hidden} more shapes in {where}")


def _sweep_devices(cfg, out, devices, worker_argv, impl, resume, restriction, share, run_id, quiet, term) -> None:
    """The --devices path: one worker per GPU, one bar and one summary here."""
    from topkbench.multi_device import PoolCallbacks, WorkerDied, run_pool
    from topkbench.pool_devices import pool_devices

    pool = pool_devices(devices)
    bar = term.is_terminal and not quiet
    progress = _progress(term, bar)
    state: dict = {}

    def on_plan(plan) -> None:
        where = ", ".join(str(s.directory) for s in plan.stores.values())
        _print_scope(term, cfg, restriction, share, plan.run_id, where, plan.to_measure, plan.unsupported, plan.already_done)
        for label, gpu, points, seconds in plan.shares:
            term.print(f"  {label} ({gpu}): {points} points, about {format_duration(seconds)}")
        if plan.calibrating:
            term.print(f"  calibrating {', '.join(plan.calibrating)} on the same points first")
        state["plain"] = PlainProgress(plan.to_measure, term.print) if not bar and not quiet else None
        eta = max((s for *_, s in plan.shares), default=0.0)
        state["task"] = progress.add_task("sweep", total=plan.to_measure, eta=format_duration(eta))
        progress.start()

    def on_point(label: str, measurements: int, eta_s: float) -> None:
        progress.update(state["task"], advance=measurements, description=label, eta=format_duration(eta_s))
        if state.get("plain") is not None:
            state["plain"].advance(measurements, label, eta_s)

    try:
        outcome = run_pool(cfg, out, pool, worker_argv, PoolCallbacks(on_plan, on_point, term.print), requested=impl,
                           resume=resume, only=restriction, point_filter=share.__contains__ if share else None,
                           run_id=run_id)
    finally:
        progress.stop()
    for path in outcome.paths:
        term.print(f"results: {path}")
    for note in outcome.notes:
        term.print(note)
    if not quiet:
        _print_summary(term, outcome.measured, outcome.plan.already_done if outcome.plan else 0,
                       ", ".join(map(str, outcome.paths)))
    for f in outcome.failures:
        term.print(f"[red]{f.label}[/red] ({f.gpu_name or 'did not start'}): {f.reason}"
                   + (f"; lost the point in flight ({f.in_flight}), {f.left} points left" if f.in_flight else ""))
    left = sum(f.left for f in outcome.failures)
    if left:  # a device refused at the start only moved its points to the others: nothing is missing
        raise WorkerDied(f"{len(outcome.failures)} of {len(pool)} workers stopped early; {left} points are not measured",
                         hint="run the same command to measure what is missing (the rest is kept)")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
