"""Does a plugin class keep the implementation interface (docs/plugins.md)?

Every check here runs when a plugin is loaded, before its class enters the registry, so that a
broken plugin costs one warning line instead of a crash in the middle of a sweep.
"""

from __future__ import annotations

import inspect
import re

from topkbench.impls.base import INTERFACE_VERSION, MIN_INTERFACE_VERSION, Device, Implementation

# Names appear in YAML lists, --impl options, Parquet columns and generated Python: keep them to
# one token without spaces, commas or quotes.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def declares_name(cls: type) -> bool:
    """Whether ``cls`` or a base below Implementation sets ``name`` (an intermediate base of a
    plugin's own, which sets none, is not itself an implementation)."""
    return any("name" in vars(klass) for klass in cls.__mro__ if klass is not Implementation
               and issubclass(klass, Implementation))


def interface_problem(cls: object) -> str | None:
    """Why ``cls`` cannot be registered as an implementation, or None when it can."""
    if not isinstance(cls, type) or not issubclass(cls, Implementation):
        return f"{_label(cls)} is not a subclass of topkbench.Implementation"
    if cls is Implementation:
        return "topkbench.Implementation itself is not an implementation"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return f"{_label(cls)} sets no name (a class attribute: name = 'my-topk')"
    if not _NAME.fullmatch(name):
        return (f"{_label(cls)}: name {name!r} must be 1-64 letters, digits or _ . + -, "
                "starting with a letter or digit")
    version = getattr(cls, "interface_version", None)
    if isinstance(version, bool) or not isinstance(version, int):
        return f"{name}: interface_version must be an int, got {version!r}"
    if version > INTERFACE_VERSION:
        return (f"{name}: written for implementation interface version {version}, this topkbench "
                f"runs versions {MIN_INTERFACE_VERSION}..{INTERFACE_VERSION}: upgrade topkbench")
    if version < MIN_INTERFACE_VERSION:
        return (f"{name}: written for implementation interface version {version}, which this "
                f"topkbench no longer runs (oldest: {MIN_INTERFACE_VERSION})")
    device = getattr(cls, "device", None)
    if not isinstance(device, Device):
        return (f"{name}: device must be topkbench.Device.CPU or topkbench.Device.CUDA, "
                f"got {device!r}")
    summary = getattr(cls, "summary", None)
    if not isinstance(summary, str) or not summary.strip():
        return f"{name}: summary must be a one-line description (a non-empty str)"
    max_k = getattr(cls, "max_k", None)
    if max_k is not None and (isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1):
        return f"{name}: max_k must be None or an int >= 1, got {max_k!r}"
    for flag in ("graph_capturable", "deterministic"):
        if not isinstance(getattr(cls, flag, None), bool):
            return f"{name}: {flag} must be True or False, got {getattr(cls, flag, None)!r}"
    version_attr = getattr(cls, "version", None)
    if version_attr is not None and not isinstance(version_attr, str):
        return f"{name}: version must be a str or None, got {version_attr!r}"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        return f"{name}: does not implement {missing}"
    return None


def instantiate(cls: type[Implementation]) -> tuple[Implementation | None, str | None]:
    """``cls()``, or the one-line reason it cannot be built without arguments."""
    try:
        return cls(), None
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's constructor is its problem
        return None, f"{cls.name}: {cls.__name__}() failed: {type(exc).__name__}: {_first_line(exc)}"


def _label(obj: object) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} object {obj!r}"[:120]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
