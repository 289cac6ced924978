"""topkbench: exact top-k kernels for sparse-attention decode, measured, fitted and reported.

Public API (docs/design.md section 3)::

    topkbench.topk(logits, k, *, lengths=None, impl="auto") -> indices
    topkbench.implementations() -> list of names usable on this machine

The implementation interface, for plugins (docs/plugins.md)::

    topkbench.Implementation, topkbench.Runner, topkbench.Device, topkbench.INTERFACE_VERSION
    topkbench.load_plugins(specs)
"""

__version__ = "0.1.0"

from topkbench.api import implementations, topk  # noqa: E402
from topkbench.impls.base import INTERFACE_VERSION, Device, Implementation, Runner  # noqa: E402
from topkbench.plugins import load_plugins  # noqa: E402

__all__ = ["INTERFACE_VERSION", "Device", "Implementation", "Runner", "__version__", "implementations",
           "load_plugins", "topk"]
