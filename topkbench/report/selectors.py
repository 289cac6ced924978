"""The dispatch rules a report judges: the fitted heuristic module and the hand rules.

The fitted module is a generated, standalone file (docs/design.md section 8) loaded from its path; it
must expose ``select(num_rows, max_seq_len, k) -> str``. Its banner names the GPU its data came
from; a module fitted on another GPU, or one that picks implementations the data never measured,
says nothing about this data, so the report refuses it with one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from topkbench import rules
from topkbench.dispatch import load_heuristic_module
from topkbench.errors import ReportError, UsageError
from topkbench.evaluate import EvalRow
from topkbench.report.data import Dataset, Selector, rule_picks
from topkbench.results import Figures

#: Where a generated module may state its GPU: a module constant, else a banner line.
_GPU_ATTRS = ("GPU_NAME", "GPU", "DEVICE_NAME")
_GPU_LINE = re.compile(r"^\s*#?\s*(?:gpu|gpu_name|device)\s*[:=]\s*['\"]?(?P<name>[^'\"\n]+?)['\"]?\s*$",
                       re.IGNORECASE | re.MULTILINE)


@dataclass
class Heuristic:
    """A loaded heuristic module, usable as a :class:`Selector`."""

    path: Path
    module: ModuleType
    gpu_name: str | None

    @property
    def name(self) -> str:
        return f"fitted ({self.path.name})"

    @property
    def description(self) -> str:
        return f"thresholds fitted by topkbench, from {self.path}"

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        return self.module.select(num_rows, max_seq_len, k)

    def fitted_runs(self) -> set[str]:
        """The run ids of the data the module was fitted on (its SOURCES), if it records them."""
        sources = getattr(self.module, "SOURCES", ())
        try:
            return {str(run) for _, runs in sources for run in runs}
        except (TypeError, ValueError):
            return set()

    def recorded_quality(self) -> list[EvalRow]:
        """The held-out figures fit-heuristic recorded in the module (its FIGURES): the fit's quality."""
        rows = []
        for label, entry in (getattr(self.module, "FIGURES", None) or {}).items():
            if not isinstance(entry, dict) or entry.get("kind") != "held-out":
                continue
            note = "recorded by fit-heuristic on the data it was fitted to"
            if "geomean" not in entry:
                rows.append(EvalRow(label, "held-out", None, str(entry.get("note", ""))))
                continue
            figures = Figures(int(entry["n"]), float(entry["geomean"]), float(entry["max"]),
                              float(entry["within_5pct"]), int(entry["unavailable"]))
            rows.append(EvalRow(label, "held-out", figures, note))
        return rows


def _banner_gpu(module: ModuleType, source: str) -> str | None:
    for attr in _GPU_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    # Only the banner (the leading comments and docstring) is searched: a GPU name further down
    # would be data of the threshold table, not the module's claim about itself.
    head = (module.__doc__ or "") + "\n" + "\n".join(
        line for line in source.splitlines()[:40] if line.lstrip().startswith("#"))
    match = _GPU_LINE.search(head)
    return match.group("name").strip() if match else None


def load_heuristic(path: str | Path) -> Heuristic:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"heuristic module not found: {path}",
                          hint="give the .py file written by 'topkbench fit-heuristic'")
    try:
        module = load_heuristic_module(path, require_thresholds=False)
    except UsageError as exc:
        raise ReportError(exc.message, hint=exc.hint) from None
    return Heuristic(path, module, _banner_gpu(module, path.read_text(errors="replace")))


def datasets_for(heuristic: Heuristic, datasets: list[Dataset]) -> list[Dataset]:
    """The datasets ``heuristic`` applies to; ReportError when it does not match the data."""
    gpus = sorted({ds.key["gpu_name"] for ds in datasets})
    if heuristic.gpu_name is not None:
        chosen = [ds for ds in datasets if ds.key["gpu_name"] == heuristic.gpu_name]
        if not chosen:
            raise ReportError(f"heuristic {heuristic.path.name} was fitted on {heuristic.gpu_name!r} "
                              f"but the results are from {', '.join(repr(g) for g in gpus)}",
                              hint="give the heuristic module fitted on this GPU's results")
    else:
        chosen = datasets
    for ds in chosen:
        grid = ds.points[["rows", "seq_len", "k"]].itertuples(index=False, name=None)
        absent = sorted(set(rule_picks(heuristic, grid).values()) - set(ds.impls))
        if absent:
            raise ReportError(f"heuristic {heuristic.path.name} picks {', '.join(absent)}, not measured in "
                              f"the results ({ds.title}: {', '.join(ds.impls)})",
                              hint="give the heuristic module fitted on these results")
    return chosen


def hand_rules() -> list[Selector]:
    """The named hand rules of docs/design.md section 1: topkbench.rules' rules already are selectors."""
    return list(rules.RULES.values())
