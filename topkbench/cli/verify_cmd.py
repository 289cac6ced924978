"""``topkbench verify [CONFIG]``: exactness of every implementation; non-zero exit on any failure."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from topkbench.config import load_config
from topkbench.plugins.option import PluginOption, load_cli_plugins
from topkbench.errors import VerificationFailed
from topkbench.schema import Status
from topkbench.terminal import console, simple_table
from topkbench.verify import CaseResult, verify


def verify_command(
    config: Annotated[str, typer.Argument(help="A config file or bundled config name.")] = "verify",
    impl: Annotated[Optional[list[str]], typer.Option("--impl", "-i", help="Implementation to check (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    plugin: PluginOption = None,
) -> None:
    """Check every implementation against the top-k contract over the adversarial distributions."""
    load_cli_plugins(plugin)
    cfg = load_config(config)
    term = console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=term, disable=quiet, transient=True) as progress:
        task = progress.add_task("verify", total=None)
        outcome = verify(cfg, impl, on_case=lambda r: progress.update(task, advance=1, description=f"{r.impl}"))
    results = outcome.results
    by_cell: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in results:
        by_cell[(r.impl, r.distribution)][r.status] += 1
    rows = []
    for (name, dist), counts in sorted(by_cell.items()):
        verdict = "FAIL" if counts[Status.WRONG] or counts[Status.ERROR] else "pass"
        rows.append((name, dist, counts[Status.OK], counts[Status.WRONG], counts[Status.ERROR],
                     counts[Status.UNSUPPORTED], verdict))
    console().print(simple_table(("implementation", "distribution", "exact", "wrong", "error", "unsupported", ""),
                                 rows, title=f"exactness over {cfg.name}"))
    failures: list[CaseResult] = [r for r in results if r.status in (Status.WRONG, Status.ERROR)]
    for r in failures[:20]:
        term.print(f"  [red]{r.status.value}[/red] {r.impl} rows={r.rows} seq_len={r.seq_len} k={r.k} "
                   f"{r.length_mode} {r.distribution}: {r.detail}")
    if outcome.stopped_by is not None:
        raise outcome.stopped_by
    if failures:
        raise VerificationFailed(f"{len(failures)} of {len(results)} cases failed",
                                 hint="the lines above name each failing case")
    term.print(f"all {sum(r.status is Status.OK for r in results)} checked cases exact")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
