"""One worker of a ``--devices`` sweep: the process that measures on one GPU.

The parent (topkbench/multi_device.py) starts ``topkbench sweep CONFIG ... --pool-worker`` once
per GPU, pinned to it by CUDA_VISIBLE_DEVICES and told its physical index through
TOPKBENCH_PHYSICAL_DEVICE (recorded as device_index). The two talk in JSON lines:

worker -> parent (stdout): ``hello`` (the device it sees), ``calibration`` (its calibration
figures), ``point`` (one per stored point: the progress bar and the ETA), ``done``.
parent -> worker (stdin): the ``spec`` (run id, its share of the points and the calibration
points, as indices into the config's point list), later the calibration ``verdict``.

Everything the worker measures goes straight into the run's store as its own part files
(finalize=False: the parent compacts once at the end), so a worker that dies loses at most the
point it was measuring. Errors go to stderr, which the parent relays.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from topkbench.calibration import worker_hook
from topkbench.config import SweepConfig
from topkbench.device_lock import hold_device
from topkbench.errors import SignalInterrupt, UsageError
from topkbench.impls import Device
from topkbench.provenance import device_info
from topkbench.sweep import PointTasks, device_key, plan_sweep, resolve_implementations, run_sweep


def send(event: str, **fields: Any) -> None:
    try:
        print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)
    except BrokenPipeError:
        # the parent is gone: stop as on a hang-up (the points stored so far are kept)
        raise SignalInterrupt(signal.SIGHUP) from None


def receive() -> dict | None:
    """The parent's next message; None once it has closed our stdin (or died)."""
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else None


def run_worker(config: SweepConfig, out: Path, requested: list[str] | None,
               only: Mapping[str, Sequence[Any]] | None) -> None:
    impls = resolve_implementations(config, requested)
    device = device_info(any(impl.device is Device.CUDA for impl in impls))
    key, description = device_key(device)
    # refuse a GPU another sweep holds before the parent shares out the points, so that they
    # go to the other GPUs (run_sweep takes the lock for good below)
    with hold_device(key, description, f"starting a --devices sweep of {config.name}"):
        pass
    send("hello", gpu_name=device.gpu_name, gpu_slug=device.gpu_slug, device_index=device.device_index,
         device_uuid=device.device_uuid)
    spec = receive()
    if spec is None:
        raise SignalInterrupt(signal.SIGHUP)
    if spec["config_hash"] != config.hash():
        raise UsageError("the --devices parent and this worker read different configs (was the file edited?)")
    points = list(config.points(only))
    share = frozenset(points[i] for i in spec["points"])
    if not share:
        send("done")
        return
    index_of = {p: i for i, p in enumerate(points)}
    calibrate = None
    if spec["calibration"]:
        wanted = frozenset(points[i] for i in spec["calibration"])
        tasks = plan_sweep(config, impls, set(), only, wanted.__contains__).tasks
        calibrate = worker_hook(tasks, index_of, send, receive)

    def on_point(task: PointTasks, rows: list, seconds: float) -> None:
        send("point", point=index_of[task.point], l2=task.l2.value, measurements=len(task.measure),
             seconds=seconds, label=task.label)

    run_sweep(config, out, requested, True, None, on_point, only=only, point_filter=share.__contains__,
              run_id=spec["run_id"], finalize=False, calibrate=calibrate)
    send("done")
