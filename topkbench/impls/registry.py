"""The registry of implementations, by name.

Entries are "module:Class" strings so that importing topkbench never imports CuPy; a class is
imported when it is first asked for.
"""

from __future__ import annotations

import functools
import importlib

from topkbench.errors import DeviceError, UsageError
from topkbench.impls.base import Implementation

_ENTRIES: dict[str, str] = {
    "torch": "topkbench.impls.library:TorchCuda",
    "per_row": "topkbench.cuda.one_cta:PerRow",
    "large_context": "topkbench.cuda.one_cta:LargeContext",
    "radix": "topkbench.cuda.radix:RadixTopk",
    "torch-cpu": "topkbench.impls.library:TorchCpu",
    "numpy": "topkbench.impls.library:NumpyArgpartition",
}


def names() -> list[str]:
    """Every registered implementation, usable here or not."""
    return list(_ENTRIES)


@functools.lru_cache(maxsize=None)
def get(name: str) -> Implementation:
    """The implementation called ``name`` (UsageError naming the choices if there is none)."""
    try:
        module_name, class_name = _ENTRIES[name].split(":")
    except KeyError:
        raise UsageError(
            f"unknown implementation {name!r}",
            hint=f"choose from: {', '.join(names())} (topkbench list shows which run here)",
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def available() -> list[str]:
    """Names of the implementations usable on this machine."""
    return [name for name in names() if get(name).unavailable_reason() is None]


def require(name: str) -> Implementation:
    """``get(name)``, raising DeviceError when it cannot run on this machine."""
    impl = get(name)
    reason = impl.unavailable_reason()
    if reason is not None:
        raise DeviceError(f"implementation {name!r} cannot run here: {reason}",
                          hint="topkbench list shows the implementations usable on this machine")
    return impl
