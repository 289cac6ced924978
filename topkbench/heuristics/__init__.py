"""Fitted dispatch modules shipped with topkbench, one ``<gpu_slug>.py`` per GPU.

Each is a byte-for-byte copy of a module that ``topkbench fit-heuristic`` generated from the
measurements committed under ``results/<gpu_slug>/`` (tests/test_committed_results.py checks the
copy). ``impl="auto"`` finds them after the user's own folders (see topkbench.dispatch).
"""
