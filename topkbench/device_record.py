"""The device a dispatch module was fitted on, and how near another device is to it.

Every fitted module carries a ``DEVICE`` record (name, slug, compute capability, SM count, L2
bytes, measured copy bandwidth). ``impl="auto"`` on a GPU without a module of its own uses the
module of the most similar device (topkbench.dispatch), ranked here:

- only devices of the same kind and the same compute-capability *major* version are comparable
  (an sm_90 module says nothing about an sm_100 part; CPUs compare with CPUs only);
- among those, an exact compute-capability match comes first;
- then the nearest in ``|log(SMs / SMs')| + |log(bandwidth / bandwidth')|`` (a factor 2 in either
  counts the same); the bandwidth term is left out when either side does not know it.

Result files written before the ``compute_capability`` column existed leave it empty; a fit
then takes ``--compute-capability`` or infers it from :data:`KNOWN_COMPUTE_CAPABILITY`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

#: The compute capability of device names whose data may lack it (matched as words in the name,
#: first match wins): enough for the GPUs topkbench has been run on and their neighbours.
KNOWN_COMPUTE_CAPABILITY: tuple[tuple[str, str], ...] = (
    ("H100", "9.0"),
    ("H200", "9.0"),
    ("GH200", "9.0"),
    ("B200", "10.0"),
    ("A100", "8.0"),
    ("L40S", "8.9"),
)
#: The compute capability a CPU's record carries: CPUs are comparable with CPUs only.
CPU = "cpu"


def infer_compute_capability(name: str) -> str:
    """The compute capability of a known device name ("cpu" for a CPU run), or "" if unknown."""
    if name.startswith("cpu:"):
        return CPU
    words = set(name.upper().replace("-", " ").split())
    for model, capability in KNOWN_COMPUTE_CAPABILITY:
        if model in words:
            return capability
    return ""


@dataclass(frozen=True)
class DeviceRecord:
    """What a fitted module records about its device; "" / 0 mean unknown."""

    name: str
    slug: str
    compute_capability: str = ""
    sm_count: int = 0
    l2_bytes: int = 0
    bandwidth_gbs: float = 0.0

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "DeviceRecord":
        return cls(str(data.get("name", "")), str(data.get("slug", "")), str(data.get("compute_capability", "")),
                   int(data.get("sm_count", 0) or 0), int(data.get("l2_bytes", 0) or 0),
                   float(data.get("bandwidth_gbs", 0.0) or 0.0))

    @property
    def major(self) -> str:
        return self.compute_capability.split(".")[0]

    def comparable(self, other: "DeviceRecord") -> bool:
        """Same kind and compute-capability major version, both known."""
        return bool(self.compute_capability) and bool(other.compute_capability) and self.major == other.major

    def distance(self, other: "DeviceRecord") -> tuple[int, float]:
        """(0 for the same compute capability else 1, size distance): smaller is nearer."""
        size = 0.0
        for mine, theirs in ((self.sm_count, other.sm_count), (self.bandwidth_gbs, other.bandwidth_gbs)):
            if mine > 0 and theirs > 0:
                size += abs(math.log(mine / theirs))
        return (0 if self.compute_capability == other.compute_capability else 1, size)

    def describe(self) -> str:
        parts = [f"compute capability {self.compute_capability or '?'}" if self.compute_capability != CPU else "CPU"]
        if self.sm_count:
            parts.append(f"{self.sm_count} {'cores' if self.compute_capability == CPU else 'SMs'}")
        if self.bandwidth_gbs:
            parts.append(f"{self.bandwidth_gbs:.0f} GB/s")
        return f"{self.name} ({', '.join(parts)})"
