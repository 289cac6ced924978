"""The registry of implementations, by name: the built-ins and the plugins (docs/plugins.md).

Built-in entries are "module:Class" strings so that importing topkbench never imports CuPy; a
class is imported when it is first asked for. Plugins come from three places: the plugins shipped
in this tree (FlashInfer), the ``topkbench.implementations`` entry points of installed packages
and ``$TOPKBENCH_PLUGINS``, all loaded on the first query that needs them; and explicit specs
(``--plugin``) through :func:`load_plugins`. A plugin that does not import or breaks the interface
is skipped with one PluginWarning; two plugins with one name are a UsageError.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Sequence

from topkbench.errors import DeviceError, UsageError, one_line
from topkbench.impls.base import Implementation

if TYPE_CHECKING:
    from topkbench.plugins.loading import ImplProvenance, LoadedPlugin, LoadResult

_ENTRIES: dict[str, str] = {
    "torch": "topkbench.impls.library:TorchCuda",
    "per_row": "topkbench.cuda.one_cta:PerRow",
    "large_context": "topkbench.cuda.one_cta:LargeContext",
    "radix": "topkbench.cuda.radix:RadixTopk",
    "filtered": "topkbench.cuda.one_cta:Filtered",
    "per_row-nondet": "topkbench.cuda.one_cta:PerRowNondet",
    "large_context-nondet": "topkbench.cuda.one_cta:LargeContextNondet",
    "radix-nondet": "topkbench.cuda.radix:RadixTopkNondet",
    "torch-cpu": "topkbench.impls.library:TorchCpu",
    "numpy": "topkbench.impls.library:NumpyArgpartition",
}

#: Plugins that ship inside topkbench. They load like any plugin (so their rows are not
#: "builtin" and a fit never picks them unless told to) and say themselves when they cannot run.
BUNDLED_PLUGINS = ("topkbench.plugins.flashinfer",)

_plugins: dict[str, LoadedPlugin] = {}
# Specs already loaded, by identity (absolute path or module name): loading is idempotent.
_loaded_specs: dict[str, LoadResult] = {}
# Problems already reported, so that each is one line however often the registry is queried.
_reported: set[str] = set()
# None: the bundled plugins, entry points and $TOPKBENCH_PLUGINS are not loaded yet.
_defaults: str | None = None


def names() -> list[str]:
    """Every registered implementation, usable here or not: the built-ins, then the plugins."""
    _load_defaults()
    return list(_ENTRIES) + [name for name in _plugins if name not in _ENTRIES]


@functools.lru_cache(maxsize=None)
def get(name: str) -> Implementation:
    """The implementation called ``name`` (UsageError naming the choices if there is none)."""
    if name in _ENTRIES:
        module_name, class_name = _ENTRIES[name].split(":")
        import importlib

        return getattr(importlib.import_module(module_name), class_name)()
    _load_defaults()
    if name in _plugins:
        return _plugins[name].impl
    raise UsageError(
        f"unknown implementation {name!r}",
        hint=f"choose from: {', '.join(names())} (topkbench list shows which run here; "
             "a plugin's implementations need --plugin PATH_OR_MODULE or $TOPKBENCH_PLUGINS)",
    )


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run on this machine, or None. Never raises for a known name: a plugin
    whose ``unavailable_reason()`` raises is unavailable, with the exception as its reason."""
    impl = get(name)
    try:
        return impl.unavailable_reason()
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not hide the other implementations
        return f"unavailable_reason() raised {one_line(exc)}"


def available() -> list[str]:
    """Names of the implementations usable on this machine."""
    return [name for name in names() if unavailable_reason(name) is None]


def require(name: str) -> Implementation:
    """``get(name)``, raising DeviceError when it cannot run on this machine."""
    impl = get(name)
    reason = unavailable_reason(name)
    if reason is not None:
        raise DeviceError(f"implementation {name!r} cannot run here: {reason}",
                          hint="topkbench list shows the implementations usable on this machine")
    return impl


def is_builtin(name: str) -> bool:
    return name in _ENTRIES


@functools.lru_cache(maxsize=None)
def provenance_of(name: str) -> ImplProvenance:
    """Source, version and hash of ``name`` (see topkbench.plugins.ImplProvenance)."""
    import hashlib

    from topkbench import __version__
    from topkbench.plugins.loading import ImplProvenance

    impl = get(name)
    kernel = impl.kernel_hash() or ""
    if name in _ENTRIES:
        return ImplProvenance("builtin", __version__, kernel)
    plugin = _plugins[name]
    own = getattr(plugin.cls, "version", None)
    version = own if isinstance(own, str) and own else plugin.origin_version
    digest = plugin.origin_hash
    if kernel:
        # The plugin's Python and the kernel source it reports both decide what runs.
        digest = hashlib.sha256(f"{digest}:{kernel}".encode()).hexdigest()
    return ImplProvenance(plugin.source, version, digest)


def plugins() -> list[LoadedPlugin]:
    """The plugins registered so far (after the lazily loaded ones)."""
    _load_defaults()
    return list(_plugins.values())


def load_plugins(specs: Sequence[str]) -> list[LoadedPlugin]:
    """Load plugin specs (a .py path or an importable module name each) into the registry.

    Also loads the bundled plugins, the entry points and $TOPKBENCH_PLUGINS if no query has yet.
    Idempotent: a spec loaded before is not imported again. Returns the plugins these specs
    provide; problems are PluginWarnings, two plugins with one name a UsageError.
    """
    _load_defaults()
    loaded: list[LoadedPlugin] = []
    for spec in specs:
        loaded += _admit(_load_spec(spec))
    return loaded


def _load_defaults() -> None:
    global _defaults
    if _defaults is not None:
        return  # loaded, or loading: a plugin that queries the registry while it imports sees the built-ins
    from topkbench.plugins.loading import env_specs, load_entry_points

    _defaults = "loading"
    try:
        for spec in BUNDLED_PLUGINS:
            _admit(_load_spec(spec))
        if "entry-points" not in _loaded_specs:
            _loaded_specs["entry-points"] = load_entry_points()
        _admit(_loaded_specs["entry-points"])
        for spec in env_specs():
            _admit(_load_spec(spec))
    except BaseException:
        _defaults = None  # a name clash stays an error on every query, not only the first
        raise
    _defaults = "done"


def _load_spec(spec: str) -> LoadResult:
    from topkbench.plugins.loading import load_spec, spec_key

    key = spec_key(spec)
    if key not in _loaded_specs:
        _loaded_specs[key] = load_spec(spec)
    return _loaded_specs[key]


def _admit(result: LoadResult) -> list[LoadedPlugin]:
    """Register a load's plugins; report its problems once each."""
    for problem in result.problems:
        _report(problem)
    admitted = []
    for plugin in result.plugins:
        if plugin.name in _ENTRIES:
            _report(f"plugin {plugin.spec}: {plugin.name!r} is the name of a built-in implementation; "
                    f"rename the plugin's implementation")
            continue
        held = _plugins.get(plugin.name)
        if held is not None and held.cls is not plugin.cls:
            raise UsageError(f"two plugins take the implementation name {plugin.name!r}: "
                             f"{held.source} and {plugin.source}",
                             hint="load only one of them, or rename one implementation")
        if held is None:
            _plugins[plugin.name] = plugin
        admitted.append(_plugins[plugin.name])
    return admitted


def _report(problem: str) -> None:
    from topkbench.plugins.loading import PluginWarning

    if problem in _reported:
        return
    _reported.add(problem)
    # warn_explicit with no source line: the message is the whole report, one line.
    warnings.warn_explicit(problem, PluginWarning, filename="topkbench", lineno=0)


def _reset_plugins() -> None:
    """Forget every plugin (tests: a fresh process's registry, with the environment re-read)."""
    global _defaults
    _plugins.clear()
    _loaded_specs.clear()
    _reported.clear()
    _defaults = None
    get.cache_clear()
    provenance_of.cache_clear()
