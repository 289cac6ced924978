"""topkbench: exact top-k kernels for sparse-attention decode, measured, fitted and reported."""

__version__ = "0.1.0"
