"""Top-k implementations: the interface, the library baselines and the registry."""

from topkbench.impls.base import Device, Implementation, Runner
from topkbench.impls.registry import available, get, names, require

__all__ = ["Device", "Implementation", "Runner", "available", "get", "names", "require"]
