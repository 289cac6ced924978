"""CUDA sources of topkbench's kernels, shipped as package data (``topkbench._kernel_sources``)."""
