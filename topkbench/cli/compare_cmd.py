"""``topkbench compare A B``: how far two runs of the same points agree; with --fail-above, a gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from topkbench.compare import Comparison, compare_runs, point_name
from topkbench.errors import UsageError
from topkbench.output_files import check_output_path, write_texts
from topkbench.store import read_results
from topkbench.terminal import console, simple_table

HELP = " ".join("""Spread of the per-point median ratio B/A and winner agreement between two runs, and the
points that slowed down most, by name. With --fail-above PCT it is a regression gate: it exits 1 when
any (point, implementation) or the geometric mean is slower by more than PCT percent even at the
optimistic end of the two sides' measured noise (p20 of B / p80 of A); a pair whose noise band
straddles the threshold is reported as ambiguous and does not fail the gate.""".split())


def _worst_table(result: Comparison, shown: int):
    rows = []
    for row in result.worst(shown).to_dict("records"):
        rows.append((row["rows"], row["seq_len"], row["k"], row["length_mode"], row["distribution"], row["impl"],
                     f"{row['median_a']:.4g}", f"{row['median_b']:.4g}", f"{row['ratio']:.3f}",
                     f"{row['low']:.3f} - {row['high']:.3f}", row.get("verdict", "")))
    return simple_table(("rows", "seq_len", "k", "lengths", "distribution", "impl", "A us", "B us", "B/A",
                         "noise band", "verdict"), rows, title=f"the {len(rows)} pairs that slowed down most")


def compare(
    run_a: Annotated[Path, typer.Argument(help="Results of the first run (file or folder).")],
    run_b: Annotated[Path, typer.Argument(help="Results of the repeat (file or folder).")],
    margin: Annotated[float, typer.Option(help="Winner margin above which a changed winner counts.")] = 0.10,
    fail_above: Annotated[Optional[float], typer.Option(
        "--fail-above", metavar="PCT", help="Exit 1 when a point or the geomean is slower by more than PCT percent "
                                            "beyond its measured noise.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", metavar="PATH",
                                                      help="Also write the comparison as JSON.")] = None,
    shown: Annotated[int, typer.Option("--show", min=0, help="How many of the worst pairs to list.")] = 10,
) -> None:
    if margin < 0:
        raise UsageError(f"--margin must be >= 0, got {margin}")
    if fail_above is not None and fail_above < 0:
        raise UsageError(f"--fail-above must be >= 0, got {fail_above}")
    if json_path is not None:
        check_output_path(json_path, "--json")
    result = compare_runs(read_results([run_a]), read_results([run_b]), margin, fail_above)
    out = console()
    if result.same_run:
        out.print(f"[yellow]warning: both sides are the same run ({', '.join(result.shared_runs)}): "
                  "the comparison can show no difference[/yellow]")
    elif result.shared_runs:
        out.print(f"[yellow]warning: run {', '.join(result.shared_runs)} is on both sides[/yellow]")
    if result.devices[0] != result.devices[1]:
        out.print(f"note: different devices: A {result.devices[0]}, B {result.devices[1]}")
    for notice in result.notices:
        out.print(f"note: {notice}")
    out.print(simple_table(("figure", "value"), result.reproducibility.lines(), title=f"{run_b} vs {run_a}"))
    out.print(_worst_table(result, shown))
    ratio, low, high = result.geomean
    line = f"geometric mean B/A {ratio:.3f} (noise band {low:.3f} - {high:.3f})"
    if fail_above is not None:
        counts = ", ".join(f"{n} {v}" for v, n in result.counts().items())
        out.print(f"{line}: {result.geomean_verdict}; pairs: {counts} (threshold {fail_above:g}%)")
        ambiguous = result.pairs[result.pairs["verdict"] == "ambiguous"]
        for row in ambiguous.sort_values("ratio", ascending=False).head(shown).to_dict("records"):
            out.print(f"  ambiguous: {point_name(row)} B/A {row['ratio']:.3f} ({row['low']:.3f} - {row['high']:.3f})")
    else:
        out.print(line)
    if json_path is not None:
        write_texts({json_path: json.dumps(result.to_dict(), indent=1) + "\n"}, "--json")
        out.print(f"wrote {json_path}")
    if result.failed:
        slower = result.pairs[result.pairs["verdict"] == "slower"]
        what = [f"{len(slower)} pair(s)"] if len(slower) else []
        what += ["the geometric mean"] if result.geomean_verdict == "slower" else []
        typer.secho(f"regression: {' and '.join(what)} slower than {fail_above:g}% beyond the measured noise",
                    err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("compare", help=HELP)(compare)
