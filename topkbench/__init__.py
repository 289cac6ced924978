"""topkbench: exact top-k kernels for sparse-attention decode, measured, fitted and reported.

Public API (DESIGN.md section 3)::

    topkbench.topk(logits, k, *, lengths=None, impl="auto") -> indices
    topkbench.implementations() -> list of names usable on this machine
"""

__version__ = "0.1.0"

from topkbench.api import implementations, topk  # noqa: E402

__all__ = ["__version__", "implementations", "topk"]
