"""Where and with what a run measured: the device, its copy bandwidth, versions, the checkout."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from topkbench import __version__


@dataclass(frozen=True)
class DeviceInfo:
    gpu_name: str
    gpu_slug: str
    sm_count: int
    l2_bytes: int
    driver: str
    cuda_version: str
    cupy_version: str
    torch_version: str
    compute_capability: str = ""
    device_index: int = -1
    device_uuid: str = ""

    @property
    def is_cuda(self) -> bool:
        return not self.gpu_name.startswith("cpu:")


def slug(name: str) -> str:
    """A folder name for a device: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cupy_version() -> str:
    try:
        import cupy
    except ImportError:
        return ""
    return cupy.__version__


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


@functools.lru_cache(maxsize=None)
def device_slug(cuda_index: int | None) -> str:
    """The results folder name of a CUDA device (None: this machine's CPU), computed once:
    ``impl="auto"`` looks it up on every call."""
    if cuda_index is None:
        return slug("cpu-" + _cpu_name())
    return slug(torch.cuda.get_device_properties(cuda_index).name)


def _uuid(props: object) -> str:
    uuid = str(getattr(props, "uuid", "") or "")
    return uuid if not uuid or uuid.startswith("GPU-") else f"GPU-{uuid}"


def device_info(cuda: bool) -> DeviceInfo:
    """The device a run measures: the current CUDA device, or this machine's CPU."""
    # A worker of a multi-GPU sweep sees only its GPU (CUDA_VISIBLE_DEVICES) as device 0: the
    # parent tells it the physical index to record.
    physical = os.environ.get("TOPKBENCH_PHYSICAL_DEVICE")
    if cuda:
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        name = props.name
        return DeviceInfo(name, slug(name), props.multi_processor_count, int(getattr(props, "L2_cache_size", 0)),
                          _driver_version(), torch.version.cuda or "", _cupy_version(), torch.__version__,
                          f"{props.major}.{props.minor}", int(physical) if physical else index, _uuid(props))
    name = f"cpu: {_cpu_name()}"
    return DeviceInfo(name, device_slug(None), os.cpu_count() or 1, 0, "", "", _cupy_version(),
                      torch.__version__, "", int(physical) if physical else -1, "")


def measure_copy_bandwidth_gbs(cuda: bool, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Best device-to-device (or host memcpy) copy rate, counting bytes read plus bytes written."""
    if cuda:
        src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
        dst = torch.empty_like(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats + 2):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        del src, dst
        return 2 * nbytes / best / 1e9
    nbytes = min(nbytes, 256 << 20)
    src = np.random.default_rng(0).random(nbytes // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start_s = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start_s)
    return 2 * nbytes / best / 1e9


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool]:
    """(commit SHA, dirty) of the checkout topkbench runs from, or ('', False) outside one.

    TOPKBENCH_GIT_SHA (and TOPKBENCH_GIT_DIRTY=1) stand in where the tree was copied without
    its .git folder, as on a remote GPU machine.
    """
    if os.environ.get("TOPKBENCH_GIT_SHA"):
        return os.environ["TOPKBENCH_GIT_SHA"], os.environ.get("TOPKBENCH_GIT_DIRTY", "0") not in ("", "0")
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "", False
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return sha, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "", False


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_provenance(device: DeviceInfo) -> dict[str, object]:
    """The provenance columns shared by every row of a run (not the per-row timestamp)."""
    sha, dirty = git_state()
    return {**asdict(device), "topkbench_version": __version__, "git_sha": sha, "git_dirty": dirty,
            "host": socket.gethostname()}
