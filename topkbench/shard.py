"""``--shard i/n``: a deterministic, cost-balanced partition of a config's points across hosts.

The tool has no scheduler of its own: N copies of one command (a Slurm job array, a Kubernetes
Indexed Job, a for loop over ssh) each measure one shard, and the shards together cover every
point of the config exactly once. That holds only if every copy computes the same partition
without talking to the others, so the partition depends on the config alone (its points, its
implementation list, its timing modes), never on this host's GPU, its installed plugins or what a
results folder already holds:

* each point's cost is the progress module's prior (a fixed cost per measurement plus a cost per
  byte), from the number of implementations the config *names*, rounded to integer microseconds
  so that the greedy sums below are exact on every machine;
* longest-processing-time greedy: points from the most to the least expensive (ties in config
  order) each go to the shard with the least cost so far (ties to the lowest shard).

``--shard auto`` reads the index and count the scheduler gives (see :func:`parse_shard`), and
:func:`agreed_run_id` names the run that all shards write into (docs/multi-gpu.md).
"""

from __future__ import annotations

import heapq
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from topkbench.config import Point, SweepConfig
from topkbench.errors import UsageError
from topkbench.progress import PRIOR_FIXED_S, PRIOR_PER_BYTE_S, task_features

#: The shard count, where the scheduler does not give one (Kubernetes never does) or where the
#: array being run is a subset of the original (a Slurm resubmission of some tasks).
SHARD_COUNT_ENV = "TOPKBENCH_SHARD_COUNT"

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str = ""  # where an 'auto' shard came from, for messages

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def lpt_partition(costs: Sequence[float], bins: int) -> list[list[int]]:
    """Indices of ``costs`` split into ``bins`` lists of near-equal total cost (LPT greedy),
    each list in ascending index order. Deterministic: ties go to the lower index and bin."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, b) for b in range(bins)]
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in order:
        load, b = heapq.heappop(heap)
        out[b].append(i)
        heapq.heappush(heap, (load + costs[i], b))
    return [sorted(members) for members in out]


def config_point_cost_us(config: SweepConfig, point: Point) -> int:
    """The prior cost of a point from the config alone, in integer microseconds."""
    names = len(config.implementations) if isinstance(config.implementations, tuple) else 1
    measurements = 0 if point.k >= point.seq_len else names * len(config.timing.l2)
    fixed, per_byte = task_features(measurements, float(point.rows * point.seq_len * 4))
    # two scalar products and a sum, no BLAS dot: the same bits on every host
    return int(round((float(fixed) * PRIOR_FIXED_S + float(per_byte) * PRIOR_PER_BYTE_S) * 1e6))


def shard_points(config: SweepConfig, shard: Shard, only: Mapping[str, Sequence[Any]] | None = None) -> frozenset[Point]:
    """The points of ``shard`` (of the config, or of the ``only`` slice every shard is given)."""
    points = list(config.points(only))
    parts = lpt_partition([config_point_cost_us(config, p) for p in points], shard.count)
    return frozenset(points[i] for i in parts[shard.index])


def _int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"--shard auto: {name}={raw!r} is not an integer") from None


def _checked(index: int, count: int | None, source: str, count_from: str) -> Shard:
    if count is None or count < 1:
        raise UsageError(f"--shard auto: {source} gives the index but no shard count",
                         hint=f"set {SHARD_COUNT_ENV} to the number of shards ({count_from})")
    if not 0 <= index < count:
        raise UsageError(f"--shard auto: index {index} from {source} is outside 0..{count - 1}",
                         hint=f"number the tasks from 0, and set {SHARD_COUNT_ENV} to their count")
    return Shard(index, count, source)


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``i/n`` (1-based, as people count shards) or ``auto``.

    ``auto``, in a Slurm job array: the index is SLURM_ARRAY_TASK_ID and the array must be
    numbered 0..n-1 (``--array=0-7``); the count is SLURM_ARRAY_TASK_COUNT, or
    TOPKBENCH_SHARD_COUNT when set (needed when resubmitting some tasks: ``--array=3`` alone has a
    count of 1). In a Kubernetes Indexed Job: the index is JOB_COMPLETION_INDEX, which the Job
    controller sets (0..completions-1); Kubernetes exposes no completion count to the pod, so the
    manifest sets TOPKBENCH_SHARD_COUNT to ``spec.completions``.
    """
    env = os.environ if environ is None else environ
    text = text.strip()
    if text != "auto":
        match = re.fullmatch(r"(\d+)/(\d+)", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise UsageError(f"--shard {text!r}: expected i/n with 1 <= i <= n (e.g. 2/8), or auto")
        return Shard(int(match[1]) - 1, int(match[2]))
    override = _int(env, SHARD_COUNT_ENV)
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        if override is None:
            count, low, high = _int(env, "SLURM_ARRAY_TASK_COUNT"), _int(env, "SLURM_ARRAY_TASK_MIN"), _int(env, "SLURM_ARRAY_TASK_MAX")
            if count is not None and (low, high) != (0, count - 1):
                raise UsageError(f"--shard auto: the Slurm array is {low}-{high} with {count} tasks, not 0-{count - 1}",
                                 hint=f"submit --array=0-<n-1>, or set {SHARD_COUNT_ENV}=<n> (e.g. when resubmitting "
                                      "some tasks of the original array)")
        else:
            count = override
        return _checked(task, count, "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT is not set")
    index = _int(env, "JOB_COMPLETION_INDEX")
    if index is not None:
        return _checked(index, override, "JOB_COMPLETION_INDEX", "Kubernetes does not expose spec.completions")
    raise UsageError("--shard auto: no SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX in the environment",
                     hint="run it as a Slurm array task or a Kubernetes Indexed Job pod, or give --shard i/n")


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"--run-id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit (it becomes part of file names)")
    return run_id


def agreed_run_id(explicit: str | None, shard: Shard | None, resume: bool,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """The run id this sweep writes into, or None for the usual choice (newest run, or a new one).

    Shards sharing a results folder must land in one run without talking to each other, so a
    sharded sweep's run id is derived, in this order, from: ``--run-id`` / TOPKBENCH_RUN_ID (the
    Kubernetes manifest sets it from the Job's name); the Slurm array's job id
    (``slurm-<SLURM_ARRAY_JOB_ID>``, the same for every task and for a requeued task); else
    ``shards-of-<n>``, so that re-running the same sharded command continues its run, as an
    unsharded sweep continues its newest run.
    """
    env = os.environ if environ is None else environ
    if explicit:
        if not resume:
            raise UsageError("--run-id names a run to create or continue; --no-resume cannot apply to it",
                             hint="give a new --run-id for a new run")
        return check_run_id(explicit)
    if shard is None:
        return None
    job = env.get("SLURM_ARRAY_JOB_ID", "").strip()
    if job:
        return check_run_id(f"slurm-{job}")
    if not resume:
        raise UsageError("--shard with --no-resume needs --run-id: the shards must agree on the new run's name",
                         hint="give every shard the same --run-id (or TOPKBENCH_RUN_ID)")
    return f"shards-of-{shard.count}"
