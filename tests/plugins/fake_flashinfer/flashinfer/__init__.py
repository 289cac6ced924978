"""A stand-in for flashinfer-python 0.7.2 on the CPU: the names and signatures that
topkbench.plugins.flashinfer uses, recording each call (tests/test_flashinfer_plugin.py)."""
