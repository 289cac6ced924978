"""A kernel class's compile-time defines and its source's `#ifndef NAME` / `#define NAME value` lines
agree: every define the class passes is one its source reads, every define its source offers is one
the class knows (so that timing variants and tests can set it: a define the class does not know is
refused when a variant sets it), and the source's default is the class's value (a build without the
class's defines, as `test_kernel_compile` makes, is the kernel the class launches). No GPU needed.
"""

from __future__ import annotations

import re

import pytest

from topkbench.cuda import loader
from topkbench.impls import registry

_DEFAULT = re.compile(r"#ifndef (\w+)\s*\n\s*#define \1 (-?\d+)")


def _kernel_classes() -> list[tuple[str, type]]:
    found = []
    for name in registry.names():
        cls = type(registry.get(name))
        if getattr(cls, "source", None) and isinstance(getattr(cls, "defines", None), dict):
            found.append((name, cls))
    return found


KERNEL_CLASSES = _kernel_classes()


def source_defaults(source: str) -> dict[str, int]:
    """The defines a kernel source gives a default, with that default."""
    return {name: int(value) for name, value in _DEFAULT.findall(loader.expand_includes(source))}


def test_source_defaults_are_read_from_ifndef_blocks():
    assert _DEFAULT.findall("#ifndef A_B\n#define A_B 12\n#endif\n#ifndef C\n#define D 1\n#endif") == [("A_B", "12")]


def test_every_kernel_class_is_checked():
    assert {name for name, _ in KERNEL_CLASSES} >= {"per_row", "large_context", "filtered"}


@pytest.mark.parametrize("name, cls", KERNEL_CLASSES, ids=[name for name, _ in KERNEL_CLASSES])
def test_class_and_source_agree_on_defines(name, cls):
    defaults = source_defaults(cls.source)
    prefixes = {define.split("_")[0] for define in cls.defines}
    unread = sorted(set(cls.defines) - set(defaults))
    unknown = sorted(d for d in defaults if d.split("_")[0] in prefixes and d not in cls.defines)
    # The nondeterministic twins differ from the source's default in their determinism define only.
    own = getattr(cls, "deterministic_define", None)
    differing = {d: (v, defaults[d]) for d, v in cls.defines.items() if d in defaults and d != own and defaults[d] != v}
    assert not unread, f"{name}: defines its source never reads: {unread}"
    assert not unknown, f"{name}: {cls.source} offers defines the class does not know: {unknown}"
    assert not differing, f"{name}: class value vs {cls.source}'s default: {differing}"
