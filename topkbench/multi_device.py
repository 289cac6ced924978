"""``topkbench sweep CONFIG --devices all|0,1,3``: one worker process per GPU, one run.

The parent measures nothing itself. It starts one worker per GPU (topkbench/pool_worker.py),
each pinned through CUDA_VISIBLE_DEVICES so that no two processes share a GPU, and:

1. waits for each worker's ``hello`` (the GPU it sees: its model decides its results folder);
2. picks the one run id (``--run-id``, else the newest run of the config in those folders, else a
   new one), reads what the run already holds, plans the rest and shares the points out by
   expected cost (the progress module's cost prior, LPT greedy): every point whole on one GPU,
   so its implementations stay same-run side by side, and the GPUs finish together;
3. sends each worker its share and, with two or more GPUs of one model, the calibration points
   (topkbench/calibration.py); when a model's workers have all reported their calibration it
   decides, keeps the record beside the run, and sends each its flag;
4. turns the workers' per-point reports into one progress bar and one ETA (the remaining cost of
   the busiest GPU), and compacts the run once at the end.

Workers run in their own sessions, so a Ctrl-C at the terminal reaches only the parent, which
sends each worker the same signal exactly once (SIGTERM too): each stops with its points stored,
and the parent says in one line what was kept. A worker that dies loses only the point it was
measuring: the others carry on, the summary names it, the exit status is non-zero, and running
the same command again measures what is missing.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from topkbench.calibration import calibration_points, flag_text, verdict, write_record
from topkbench.config import Point, SweepConfig
from topkbench.errors import INTERRUPTS, Interrupted, SignalInterrupt, TopkbenchError, interrupt_exit_code
from topkbench.pool_devices import PoolDevice, child_env
from topkbench.progress import CostModel
from topkbench.schema import KEY_COLUMNS
from topkbench.shard import lpt_partition
from topkbench.store import RunStore, new_run_id, read_results
from topkbench.sweep import PointTasks, plan_sweep, resolve_implementations

#: How long stopped workers get to store their point and exit before they are killed.
STOP_GRACE_S = 60.0


class WorkerDied(TopkbenchError):
    """A worker of a --devices sweep ended without finishing its share."""


@dataclass
class PoolCallbacks:
    on_plan: Callable[["PoolPlan"], None]
    on_point: Callable[[str, int, float], None]  # (label, measurements, eta seconds)
    log: Callable[[str], None]


@dataclass
class PoolPlan:
    run_id: str
    stores: dict[str, RunStore]  # by GPU slug
    tasks: int
    to_measure: int
    unsupported: int
    already_done: int
    shares: list[tuple[str, str, int, float]]  # (device label, GPU name, points, expected seconds)
    calibrating: list[str]  # labels of the GPUs that calibrate


@dataclass
class PoolFailure:
    label: str
    gpu_name: str
    reason: str
    in_flight: str
    left: int


@dataclass
class PoolOutcome:
    plan: PoolPlan | None
    paths: list[Path]
    measured: pd.DataFrame
    failures: list[PoolFailure]
    notes: list[str]  # calibration verdicts and models, for the summary


class PoolEta:
    """The remaining seconds of a pool: the largest remaining expected cost over the workers,
    from one cost model refitted to every worker's observed points."""

    def __init__(self, model: CostModel | None = None) -> None:
        self.model = model or CostModel()
        self._left: dict[int, dict[Any, Any]] = {}

    def add(self, worker: int, key: Any, features: Any) -> None:
        self._left.setdefault(worker, {})[key] = features

    def done(self, worker: int, key: Any, seconds: float) -> None:
        features = self._left.get(worker, {}).pop(key, None)
        if features is not None:
            self.model.observe(features, seconds)

    def drop(self, worker: int) -> None:
        self._left.pop(worker, None)

    @property
    def remaining_s(self) -> float:
        return max((sum(self.model.expected(f) for f in left.values()) for left in self._left.values()), default=0.0)


class _Worker:
    def __init__(self, number: int, device: PoolDevice, argv: Sequence[str], events: queue.Queue) -> None:
        self.number, self.device = number, device
        self.proc = subprocess.Popen([sys.executable, "-m", "topkbench", *argv, "--pool-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, env=child_env(device), start_new_session=True)
        self.hello: dict | None = None
        self.tasks: list[PointTasks] = []
        self.reported = 0
        self.calibration: list | None = None
        self.open_streams = 2
        self.exited = False
        self.tail: deque[str] = deque(maxlen=8)
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(name, stream, events), daemon=True).start()

    def _pump(self, name: str, stream: Any, events: queue.Queue) -> None:
        for line in stream:
            events.put((self, name, line.rstrip("\n")))
        events.put((self, name, None))

    @property
    def gpu_name(self) -> str:
        return (self.hello or {}).get("gpu_name", "")

    @property
    def slug(self) -> str:
        return (self.hello or {}).get("gpu_slug", "")

    def send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it has died: its exit is handled when its output ends

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)  # its own session: it and anything it started
            except ProcessLookupError:
                pass

    def failure(self) -> PoolFailure:
        rc = self.proc.returncode
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        errors = [line for line in self.tail if line.startswith("error: ")]
        reason = how + (f": {errors[-1][len('error: '):]}" if errors else "")
        in_flight = self.tasks[self.reported].label if self.reported < len(self.tasks) else ""
        return PoolFailure(self.device.label, self.gpu_name, reason, in_flight, len(self.tasks) - self.reported)


class _Pool:
    def __init__(self, config: SweepConfig, devices: Sequence[PoolDevice], argv: Sequence[str],
                 callbacks: PoolCallbacks) -> None:
        self.config, self.callbacks = config, callbacks
        self.events: queue.Queue = queue.Queue()
        self.workers = [_Worker(n, d, argv, self.events) for n, d in enumerate(devices)]
        self.eta = PoolEta()
        self.stopping = False
        self.groups: list[list[_Worker]] = []
        self.decided: set[int] = set()
        self.stores: dict[str, RunStore] = {}
        self.points: Sequence[Point] = []
        self.calibration: list[int] = []
        self.notes: list[str] = []
        self.relayed: set[str] = set()
        self.session = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"

    def wait(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            try:
                self._handle(*self.events.get(timeout=0.2))
            except queue.Empty:
                continue
        return True

    def _handle(self, worker: _Worker, stream: str, line: str | None) -> None:
        if line is None:
            worker.open_streams -= 1
            if worker.open_streams == 0:
                self._exited(worker)
            return
        message = None
        if stream == "out":
            try:
                message = json.loads(line)
            except ValueError:
                pass
        if not isinstance(message, dict):
            worker.tail.append(line)
            if not self.stopping and line.strip() and line not in self.relayed:
                self.relayed.add(line)  # the same warning from every worker: shown once
                self.callbacks.log(f"{worker.device.label}: {line}")
            return
        event = message.get("event")
        if event == "hello":
            worker.hello = message
        elif event == "calibration":
            worker.calibration = message["figures"]
            self._decide()
        elif event == "point":
            worker.reported += 1
            self.eta.done(worker.number, (message["point"], message["l2"]), message["seconds"])
            self.callbacks.on_point(message["label"], message["measurements"], self.eta.remaining_s)

    def _exited(self, worker: _Worker) -> None:
        worker.proc.wait()
        worker.exited = True
        self.eta.drop(worker.number)
        if worker.proc.returncode != 0 and not self.stopping and worker.hello is not None and worker.tasks:
            failure = worker.failure()
            self.callbacks.log(f"{failure.label} ({failure.gpu_name}) stopped, {failure.reason}; the other devices "
                               f"carry on, {failure.left} of its points are left for a resume")
        self._decide()

    def share_out(self, plan_tasks: list[PointTasks], points: Sequence[Point], run_id: str) -> list[_Worker]:
        """Split the plan by point over the ready workers, send each its share; returns them."""
        ready = [w for w in self.workers if w.hello is not None and not w.exited]
        by_point: dict[Point, list[PointTasks]] = {}
        for task in plan_tasks:
            by_point.setdefault(task.point, []).append(task)
        order = list(by_point)
        costs = [sum(self.eta.model.expected(t.cost_features) for t in by_point[p]) for p in order]
        index_of = {p: i for i, p in enumerate(points)}
        shares = lpt_partition(costs, len(ready))
        for worker, members in zip(ready, shares):
            worker.tasks = [t for i in members for t in by_point[order[i]]]
            for task in worker.tasks:
                self.eta.add(worker.number, (index_of[task.point], task.l2.value), task.cost_features)
        self.points, self.calibration = points, calibration_points(points)
        for slug in dict.fromkeys(w.slug for w in ready):
            members = [w for w in ready if w.slug == slug and w.tasks]
            if len(members) >= 2 and self.calibration:
                self.groups.append(members)
        calibrating = {w.number for group in self.groups for w in group}
        for worker in ready:
            worker.send({"event": "spec", "config_hash": self.config.hash(), "run_id": run_id,
                         "points": sorted({index_of[t.point] for t in worker.tasks}),
                         "calibration": self.calibration if worker.number in calibrating else []})
        return ready

    def _decide(self) -> None:
        """Decide each model's calibration once all its workers reported (or ended)."""
        for number, group in enumerate(self.groups):
            if number in self.decided or not all(w.calibration is not None or w.exited for w in group):
                continue
            self.decided.add(number)
            reported = [w for w in group if w.calibration is not None]
            deviations = verdict({w.device.index: w.calibration for w in reported}) if len(reported) >= 2 else {}
            flags = {i: flag_text(d, group[0].gpu_name, len(reported) - 1) for i, d in deviations.items() if d.flagged}
            store = self.stores[group[0].slug]
            record = {"run_id": store.run_id, "config": self.config.name, "gpu_name": group[0].gpu_name,
                      "points": {i: vars(self.points[i]) for i in self.calibration},
                      "devices": {w.device.index: w.hello for w in reported}, "rule": "see topkbench/calibration.py",
                      "figures": {w.device.index: w.calibration for w in reported}, "flags": flags,
                      "deviations": {i: vars(d) for i, d in deviations.items()}}
            path = write_record(store.directory, store.stem, self.session, record)
            for worker in reported:
                worker.send({"event": "verdict", "flag": flags.get(worker.device.index, "")})
            labels = ", ".join(w.device.label for w in reported)
            if flags:
                for w in reported:
                    if w.device.index in flags:
                        self.notes.append(f"[red]{w.device.label} ({w.gpu_name}) is flagged[/red]: {flags[w.device.index]}"
                                          f"; its rows carry device_flag ({path})")
            elif deviations:
                self.notes.append(f"calibration: {labels} ({group[0].gpu_name}) agree ({path})")

    def stop(self, signum: int) -> None:
        """Stop every worker with ``signum``; wait (ignoring further interrupts) for them to store
        their point and exit, then kill what is left."""
        self.stopping = True
        for worker in self.workers:
            worker.signal(signum)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            try:
                if self.wait(lambda: all(w.exited for w in self.workers), timeout=deadline - time.monotonic()):
                    return
            except INTERRUPTS:
                continue
        self.kill()

    def kill(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGKILL)
        for worker in self.workers:
            worker.proc.wait()


def open_run(config: SweepConfig, out: Path, slugs: Sequence[str], resume: bool,
             run_id: str | None) -> tuple[str, dict[str, RunStore]]:
    """One run id for every GPU model's folder: the given one, else the newest run of the config
    in any of them (as RunStore.open picks it: the greatest stem), else a new one."""
    if run_id is None and resume:
        existing = [s for slug in slugs for s in [RunStore.open(out, slug, config.name, config.hash(), True)] if s.exists]
        run_id = max(existing, key=lambda s: s.stem).run_id if existing else None
    run_id = run_id or new_run_id()
    return run_id, {slug: RunStore.open(out, slug, config.name, config.hash(), True, run_id=run_id) for slug in slugs}


def run_pool(config: SweepConfig, out: Path, devices: Sequence[PoolDevice], worker_argv: Sequence[str],
             callbacks: PoolCallbacks, *, requested: list[str] | None = None, resume: bool = True,
             only: Mapping[str, Sequence[Any]] | None = None, point_filter: Callable[[Point], bool] | None = None,
             run_id: str | None = None) -> PoolOutcome:
    """Measure the config's points (or the ``point_filter`` share, a shard) on ``devices``."""
    impls = resolve_implementations(config, requested)  # a bad --impl fails here, not N times
    pool = _Pool(config, devices, worker_argv, callbacks)
    plan: PoolPlan | None = None
    done: set[tuple] = set()
    try:
        pool.wait(lambda: all(w.hello is not None or w.exited for w in pool.workers))
        ready = [w for w in pool.workers if w.hello is not None and not w.exited]
        if not ready:
            raise WorkerDied("no worker started: " + "; ".join(f"{w.device.label}: {w.failure().reason}"
                                                               for w in pool.workers))
        slugs = list(dict.fromkeys(w.slug for w in ready))
        run_id, pool.stores = open_run(config, out, slugs, resume, run_id)
        for store in pool.stores.values():
            done |= store.done_keys() if store.exists else set()
        sweep_plan = plan_sweep(config, impls, done, only, point_filter)
        ready = pool.share_out(sweep_plan.tasks, list(config.points(only)), run_id)
        plan = PoolPlan(run_id, pool.stores, len(sweep_plan.tasks), sweep_plan.to_measure, sweep_plan.unsupported,
                        sweep_plan.already_done,
                        [(w.device.label, w.gpu_name, len({t.point for t in w.tasks}),
                          sum(pool.eta.model.expected(t.cost_features) for t in w.tasks)) for w in ready],
                        [w.device.label for group in pool.groups for w in group])
        callbacks.on_plan(plan)
        pool.wait(lambda: all(w.exited for w in pool.workers))
    except INTERRUPTS as exc:
        pool.stop(exc.signum if isinstance(exc, SignalInterrupt) else signal.SIGINT)
        if plan is None:
            raise Interrupted("interrupted while the workers started: nothing was measured",
                              hint="run the same command to start again", exit_code=interrupt_exit_code(exc)) from None
        kept = sum(w.reported for w in pool.workers)
        where = ", ".join(str(s.parts_dir) for s in pool.stores.values())
        raise Interrupted(f"interrupted: {kept} of {plan.tasks} points measured in this session are kept in {where}",
                          hint="run the same command to resume where it stopped",
                          exit_code=interrupt_exit_code(exc)) from None
    finally:
        if not all(w.exited for w in pool.workers):  # the parent failed: stop the workers as on SIGTERM
            pool.stop(signal.SIGTERM)
    failures = [w.failure() for w in pool.workers if w.proc.returncode != 0]
    paths = [p for s in pool.stores.values() if s.exists for p in [s.finalize()] if p is not None]
    frames = [read_results([p]) for p in paths]
    measured = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(KEY_COLUMNS))
    if len(measured):
        measured = measured[[k not in done for k in measured[list(KEY_COLUMNS)].itertuples(index=False, name=None)]]
    if len(pool.stores) > 1:
        models = [f"{', '.join(w.device.label for w in members)} ({members[0].gpu_name}) -> {store.directory}"
                  for slug, store in pool.stores.items() for members in [[w for w in ready if w.slug == slug]]]
        pool.notes.append(f"GPUs of {len(models)} models, one run id, a folder each: {'; '.join(models)}. "
                          "Fit and report each folder on its own.")
    return PoolOutcome(plan, paths, measured, failures, pool.notes)
