"""Fitted dispatch modules shipped with topkbench, one ``<gpu_slug>.py`` per device.

Each is written by ``topkbench fit-heuristic`` from measurements committed under
``results/<gpu_slug>/`` (or, for the CPU, the labelled run named in its banner), with its
``.fit.md`` and ``.fit.json`` summaries beside it; tests/test_committed_results.py regenerates
them byte for byte. ``impl="auto"`` finds them after the user's own folders, and on a device
without a module of its own uses the module of the most similar one (see topkbench.dispatch).
"""
