"""Turn a plugin spec (a .py path, a module name or an entry point) into registrable classes.

This module only imports and inspects: it keeps no registry state (topkbench.impls.registry
does), so loading the same spec twice gives the same classes (an imported path is cached in
``sys.modules`` under a name derived from its absolute path) and never runs a plugin twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from topkbench.errors import one_line
from topkbench.impls.base import Implementation
from topkbench.plugins.checks import declares_name, instantiate, interface_problem

#: The entry-point group installed packages declare their implementations in.
ENTRY_POINT_GROUP = "topkbench.implementations"
#: os.pathsep-separated plugin specs read by the CLI and by ``topkbench.topk``.
ENV_VAR = "TOPKBENCH_PLUGINS"
#: A module may list its implementations here; otherwise every concrete Implementation subclass
#: defined in it (not imported into it) is one.
LIST_ATTRIBUTE = "IMPLEMENTATIONS"


class PluginWarning(UserWarning):
    """A plugin that was skipped: it did not import, or it breaks the interface."""


@dataclass(frozen=True)
class ImplProvenance:
    """Where an implementation comes from, stored with every result row.

    ``source``: "builtin", "path:<file>", "module:<name>" or "entry-point:<dist>:<entry point>";
    ``version``: topkbench's for built-ins, else the plugin's own (its class's ``version``, its
    module's ``__version__`` or its distribution's version; "" when it has none); ``hash``: the
    kernel hash for built-ins ("" for library code), a sha256 of the plugin's file(s) or its
    distribution's RECORD for plugins (combined with the plugin's ``kernel_hash()`` when it gives
    one).
    """

    source: str
    version: str
    hash: str


@dataclass
class LoadedPlugin:
    """One implementation class a plugin provides, built and checked."""

    name: str
    cls: type[Implementation]
    impl: Implementation
    source: str
    #: The sha256 of the plugin's file(s) or distribution listing (see ImplProvenance.hash).
    origin_hash: str
    #: The module's ``__version__`` or the distribution's version, before the class's own.
    origin_version: str
    spec: str = field(default="")


@dataclass
class LoadResult:
    plugins: list[LoadedPlugin]
    problems: list[str]


def is_path_spec(spec: str) -> bool:
    """A spec names a file when it ends in .py or contains a path separator; else a module."""
    return spec.endswith(".py") or "/" in spec or (os.sep in spec) or bool(os.altsep and os.altsep in spec)


def spec_key(spec: str) -> str:
    """The identity of a spec: the absolute path of a file, or the module name."""
    spec = spec.strip()
    return f"path:{Path(spec).expanduser().resolve()}" if is_path_spec(spec) else f"module:{spec}"


def env_specs(environ: dict[str, str] | os._Environ | None = None) -> list[str]:
    """The specs listed in $TOPKBENCH_PLUGINS (empty items ignored)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [item.strip() for item in value.split(os.pathsep) if item.strip()]


def load_spec(spec: str) -> LoadResult:
    """Import a path or module spec and collect its implementation classes."""
    key = spec_key(spec)
    kind, _, target = key.partition(":")
    try:
        module = _import_path(Path(target)) if kind == "path" else importlib.import_module(target)
    except FileNotFoundError:
        return LoadResult([], [f"plugin {spec}: no such file"])
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin that fails to import is skipped
        return LoadResult([], [f"plugin {spec} failed to import: {one_line(exc)}"])
    if kind == "path":
        digest, version = _sha256_files([Path(target)]), _module_version(module)
    else:
        digest, version = _sha256_files(_module_files(module)), _module_version(module) or _dist_version_of(module)
    return _collect(spec, key, module, digest, version)


def load_entry_points() -> LoadResult:
    """Every entry point of the ``topkbench.implementations`` group of the installed packages."""
    from importlib import metadata

    plugins: list[LoadedPlugin] = []
    problems: list[str] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (_dist_name(e), e.name)):
        source = f"entry-point:{_dist_name(ep)}:{ep.name}"
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            problems.append(f"plugin {source} ({ep.value}) failed to import: {one_line(exc)}")
            continue
        dist = getattr(ep, "dist", None)
        digest = _sha256_distribution(dist) if dist is not None else ""
        version = dist.version if dist is not None else ""
        result = _collect(ep.value, source, obj, digest, version)
        plugins += result.plugins
        problems += result.problems
    return LoadResult(plugins, problems)


def _collect(spec: str, source: str, obj: Any, digest: str, version: str) -> LoadResult:
    if isinstance(obj, ModuleType):
        classes = _classes_of(obj)
        if not classes:
            return LoadResult([], [f"plugin {spec}: defines no topkbench.Implementation subclass"])
    elif isinstance(obj, (list, tuple)):
        classes = list(obj)
    else:
        classes = [obj]
    plugins: list[LoadedPlugin] = []
    problems: list[str] = []
    for cls in classes:
        problem = interface_problem(cls)
        impl = None
        if problem is None:
            impl, problem = instantiate(cls)
        if problem is not None:
            problems.append(f"plugin {spec}: {problem}")
            continue
        plugins.append(LoadedPlugin(cls.name, cls, impl, source, digest, version, spec))
    return LoadResult(plugins, problems)


def _classes_of(module: ModuleType) -> list[Any]:
    listed = getattr(module, LIST_ATTRIBUTE, None)
    if listed is not None:
        return list(listed)
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Implementation) and obj is not Implementation
            and obj.__module__ == module.__name__ and declares_name(obj)]


def _import_path(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(path)
    # One module name per absolute path: loading the file again returns the module already run.
    stem = re.sub(r"\W", "_", path.stem)
    name = f"topkbench_plugin_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as the import system does (dataclasses need it)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _module_version(module: ModuleType) -> str:
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else ""


def _dist_version_of(module: ModuleType) -> str:
    from importlib import metadata

    top = module.__name__.split(".")[0]
    for dist_name in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _module_files(module: ModuleType) -> list[Path]:
    """The file of a module, or every .py file of a package (its code is the plugin)."""
    file = getattr(module, "__file__", None)
    if not file:
        return []
    path = Path(file)
    if path.name == "__init__.py":
        return sorted(p for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [path]


def _sha256_files(paths: list[Path]) -> str:
    if not paths:
        return ""
    digest = hashlib.sha256()
    root = paths[0].parent
    for path in paths:
        # The relative name enters the hash too, so that moving code between files changes it.
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _sha256_distribution(dist: Any) -> str:
    """The distribution's RECORD (itself a list of file hashes), else its file list."""
    record = dist.read_text("RECORD")
    if record:
        return hashlib.sha256(record.encode()).hexdigest()
    files = sorted(str(f) for f in (dist.files or []))
    text = "\n".join(files) or f"{dist.metadata['Name']}=={dist.version}"
    return hashlib.sha256(text.encode()).hexdigest()


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "unknown"
