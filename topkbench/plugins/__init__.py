"""Plugins: third-party top-k implementations measured like the built-ins (docs/plugins.md).

A plugin is a Python module (a .py file or an importable module) defining one or more
``topkbench.Implementation`` subclasses. topkbench finds plugins in four places:

- the plugins shipped in this tree (``topkbench.plugins.flashinfer``), which say themselves when
  they cannot run here;
- the ``topkbench.implementations`` entry points of installed packages;
- ``$TOPKBENCH_PLUGINS``, an os.pathsep-separated list of files or module names, read by the CLI
  and by ``topkbench.topk``;
- ``--plugin PATH_OR_MODULE`` on ``sweep``, ``verify`` and ``list``, through :func:`load_plugins`.

The first three load on the first registry query that needs them. Every plugin's classes are
checked against the interface before they are registered; one that fails is skipped with a
:class:`PluginWarning` of one line, and the built-ins still run. Two plugins with one name are a
``UsageError`` naming both sources.
"""

from __future__ import annotations

from typing import Sequence

from topkbench.plugins.loading import (
    ENTRY_POINT_GROUP,
    ENV_VAR,
    ImplProvenance,
    LoadedPlugin,
    PluginWarning,
)

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "ImplProvenance", "LoadedPlugin", "PluginWarning", "load_plugins"]


def load_plugins(specs: Sequence[str]) -> list[LoadedPlugin]:
    """Load plugin specs (each a .py file path or an importable module name) into the registry,
    after the bundled plugins, entry points and $TOPKBENCH_PLUGINS. Safe to call repeatedly: a
    spec loaded before is not imported again. Returns the plugins the given specs provide."""
    # The registry holds the table; imported here, not at module level, because the registry
    # imports this package's loading module when it first loads plugins.
    from topkbench.impls import registry

    return registry.load_plugins(specs)
