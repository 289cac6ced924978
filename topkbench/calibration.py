"""Calibration of a multi-GPU sweep: do the GPUs of one model measure alike?

A throttled card (power or thermal cap, a bad clock state) or one shared with another job times
every point slower, and nothing in its rows would show it: its points simply look slow, and a
fitted cut point moves. So before the real points, every worker of a ``--devices`` sweep measures
the same few calibration points (:func:`calibration_points`) through the sweep's own measuring
path, without storing them as results. The parent compares, per model, each GPU's medians with
the other GPUs' (:func:`verdict`):

* a calibration measurement (point, implementation, L2 mode) *deviates* on a GPU when its median
  is above the others' p20-p80 band (lowest p20 to highest p80 over the other GPUs) widened by
  5%: beyond the run-to-run noise those GPUs show themselves;
* a GPU is *flagged* when more than half of its compared measurements deviate.

Only slowness counts: with two GPUs a gap is symmetric, and the slower card is the suspect one (a
card does not get faster than its model by accident). A majority of degraded cards cannot be told
from a healthy fleet this way. A flagged GPU's rows carry ``device_flag``; the calibration
measurements and the verdict are kept beside the run as ``<stem>.calibration/<session>.json``
(JSON, so no reader of results ever takes them for rows).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from topkbench.config import Point
from topkbench.errors import SignalInterrupt
from topkbench.trial import sticky_error
from topkbench.workload import Distribution, LengthMode

#: How many calibration points (spread over the sizes the config has).
CALIBRATION_POINTS = 3
#: The others' p20-p80 band is widened by this much before a median counts as outside it.
BAND_WIDEN = 0.05
#: A GPU is flagged when more than this share of its compared measurements deviate.
FLAG_SHARE = 0.5


def calibration_points(points: Sequence[Point]) -> list[int]:
    """Indices (into ``points``) of the calibration points: the config's largest k, fixed
    lengths and normal scores where it has them, at the smallest, the median and the 90th
    percentile size: launch-bound and bandwidth-bound behaviour both show."""
    timed = [i for i, p in enumerate(points) if p.k < p.seq_len]
    if not timed:
        return []
    top_k = max(points[i].k for i in timed)
    candidates = [i for i in timed if points[i].k == top_k]
    for axis, preferred in (("length_mode", LengthMode.FIXED), ("distribution", Distribution.NORMAL)):
        narrowed = [i for i in candidates if getattr(points[i], axis) is preferred]
        candidates = narrowed or candidates
    candidates.sort(key=lambda i: (points[i].rows * points[i].seq_len, i))
    picks = [candidates[round(q * (len(candidates) - 1))] for q in (0.0, 0.5, 0.9)]
    return sorted(dict.fromkeys(picks))[:CALIBRATION_POINTS]


def summarize(rows: Sequence[Mapping[str, Any]], point_index: int) -> list[dict[str, Any]]:
    """The calibration figures of one point's rows: what the parent compares (ok rows only)."""
    return [{"key": [point_index, row["impl"], row["l2"]], "median": row["median_us"], "p20": row["p20_us"],
             "p80": row["p80_us"]} for row in rows if row["status"] == "ok"]


@dataclass(frozen=True)
class Deviation:
    """How one GPU's calibration compared with the other GPUs of its model."""

    deviating: int
    compared: int
    ratio: float  # median over the compared measurements of (its median / the others' median)

    @property
    def flagged(self) -> bool:
        return self.compared > 0 and self.deviating > FLAG_SHARE * self.compared


def verdict(results: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict[int, Deviation]:
    """Per GPU (same model, keyed by device index): its deviation from the others."""
    by_key = {d: {tuple(m["key"]): m for m in ms} for d, ms in results.items()}
    out = {}
    for device, mine in by_key.items():
        deviating, ratios = 0, []
        for key, m in mine.items():
            others = [by_key[e][key] for e in by_key if e != device and key in by_key[e]]
            if not others:
                continue
            high = max(o["p80"] for o in others) * (1 + BAND_WIDEN)
            deviating += m["median"] > high
            ratios.append(m["median"] / statistics.median(o["median"] for o in others))
        out[device] = Deviation(deviating, len(ratios), statistics.median(ratios) if ratios else 1.0)
    return out


def flag_text(deviation: Deviation, model: str, others: int) -> str:
    """The device_flag of a flagged GPU's rows: why its timings are suspect."""
    return (f"calibration: slower than the other {others} {model} GPU(s) of this sweep on {deviation.deviating} of "
            f"{deviation.compared} calibration measurements (median {deviation.ratio:.2f}x theirs)")


def write_record(directory: Path, stem: str, session: str, record: Mapping[str, Any]) -> Path:
    """Keep the calibration beside the run (atomically): ``<stem>.calibration/<session>.json``."""
    folder = directory / f"{stem}.calibration"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session}.json"
    tmp = folder / f".{session}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=lambda v: getattr(v, "value", str(v))), encoding="utf-8")
    os.replace(tmp, path)
    return path


#: measure(task) -> (rows, sticky outcome or None): run_sweep's measuring of one task, unstored.
MeasureFn = Callable[[Any], tuple[list[dict[str, Any]], Any]]


def worker_hook(tasks: Sequence[Any], index_of: Mapping[Point, int], send: Callable[..., None],
                receive: Callable[[], dict | None]) -> Callable[[MeasureFn], str]:
    """The run_sweep ``calibrate`` hook of a worker: measure ``tasks`` (the calibration points'
    PointTasks), send the figures to the parent, wait for its verdict, return this GPU's flag."""

    def calibrate(measure: MeasureFn) -> str:
        figures: list[dict[str, Any]] = []
        for task in tasks:
            rows, sticky = measure(task)
            if sticky is not None:
                raise sticky_error(sticky, f"calibration point {task.label}")
            figures += summarize(rows, index_of[task.point])
        send("calibration", figures=figures)
        answer = receive()
        if answer is None:
            # the parent is gone (killed): stop as on a hang-up, keeping nothing half-written
            raise SignalInterrupt(signal.SIGHUP)
        return str(answer.get("flag", ""))

    return calibrate
