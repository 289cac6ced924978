"""``--plugin`` for the commands that run or list implementations (sweep, verify, list).

Wiring, in a command::

    from topkbench.plugins.option import PluginOption, load_cli_plugins

    def sweep(..., plugin: PluginOption = None) -> None:
        load_cli_plugins(plugin)   # first, before any implementation name is resolved
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Optional, Sequence

import typer

from topkbench.plugins import load_plugins
from topkbench.plugins.loading import ENV_VAR, LoadedPlugin, PluginWarning

PluginOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--plugin",
        metavar="PATH_OR_MODULE",
        help="Load implementations from a plugin: a .py file or an importable module (repeatable). "
             f"${ENV_VAR} and installed 'topkbench.implementations' entry points load too.",
    ),
]


def load_cli_plugins(specs: Sequence[str] | None) -> list[LoadedPlugin]:
    """Load the ``--plugin`` specs (and the lazily loaded ones) and print each plugin problem as
    one ``warning: ...`` line on stderr, instead of Python's two-line warning format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        loaded = load_plugins(list(specs or []))
    for item in caught:
        if issubclass(item.category, PluginWarning):
            print(f"warning: {item.message}", file=sys.stderr)
        else:  # not ours: let it through as it would have gone
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    return loaded
