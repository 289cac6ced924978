"""The devices of a ``--devices`` sweep: which GPUs ``all|0,1,3`` names, and the environment that
pins a worker process to one of them (topkbench/multi_device.py starts the workers)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from topkbench.errors import UsageError

#: Test and demo facility: N stand-in devices 0..N-1 that run the CPU implementations (a CPU-only
#: config), so that the pool can be exercised on a machine without GPUs.
FAKE_DEVICES_ENV = "TOPKBENCH_FAKE_DEVICES"


@dataclass(frozen=True)
class PoolDevice:
    index: int  # the physical index: the worker's TOPKBENCH_PHYSICAL_DEVICE, its rows' device_index
    visible: str  # the worker's CUDA_VISIBLE_DEVICES ("" for a stand-in: it must not touch a GPU)
    fake: bool = False

    @property
    def label(self) -> str:
        return f"stand-in device {self.index}" if self.fake else f"GPU {self.index}"


def pool_devices(spec: str, environ: Mapping[str, str] | None = None) -> list[PoolDevice]:
    """The devices ``--devices all|0,1,3`` names. Indices count the GPUs this process sees, as
    CUDA does: with CUDA_VISIBLE_DEVICES=2,3 set, ``0`` is physical GPU 2."""
    env = os.environ if environ is None else environ
    fake = env.get(FAKE_DEVICES_ENV, "").strip()
    if fake:
        if not fake.isdigit():
            raise UsageError(f"{FAKE_DEVICES_ENV}={fake!r}: expected a number of stand-in devices")
        visible = [str(i) for i in range(int(fake))]
    else:
        import torch

        count = torch.cuda.device_count()
        listed = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        visible = listed[:count] if "CUDA_VISIBLE_DEVICES" in env else [str(i) for i in range(count)]
    if not visible:
        raise UsageError("--devices: no CUDA device is visible",
                         hint=f"run on a GPU machine ({FAKE_DEVICES_ENV}=N gives CPU stand-ins for tests)")
    if spec.strip() == "all":
        chosen = list(range(len(visible)))
    else:
        try:
            chosen = [int(v) for v in spec.split(",")]
        except ValueError:
            raise UsageError(f"--devices {spec!r}: expected 'all' or indices such as 0,1,3") from None
        bad = [i for i in chosen if not 0 <= i < len(visible)]
        if bad or len(set(chosen)) != len(chosen):
            raise UsageError(f"--devices {spec!r}: {len(visible)} devices are visible (0..{len(visible) - 1}), "
                             "each may be named once")
    return [PoolDevice(int(visible[i]) if visible[i].isdigit() else i, "" if fake else visible[i], bool(fake))
            for i in chosen]


def child_env(device: PoolDevice) -> dict[str, str]:
    """The environment of the worker on ``device``: it sees only that GPU, and records its index."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": device.visible, "TOPKBENCH_PHYSICAL_DEVICE": str(device.index)}
    # a checkout run without installing: the worker must import this same topkbench
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists():
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env
