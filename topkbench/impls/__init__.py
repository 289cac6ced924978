"""Top-k implementations: the interface, the library baselines and the registry."""

from topkbench.impls.base import INTERFACE_VERSION, Device, Implementation, Runner
from topkbench.impls.registry import available, get, names, provenance_of, require

__all__ = ["INTERFACE_VERSION", "Device", "Implementation", "Runner", "available", "get", "names",
           "provenance_of", "require"]
