"""Every (kernel source, compile-time defines) pair that topkbench compiles.

The compile test (tests/test_kernel_compile.py) builds each pair with nvcc and fails on spills.
An implementation declares its pairs with a ``compile_variants()`` classmethod returning
``[(source_name, {define: value, ...}), ...]``; every registered implementation that has one is
asked, and every .cu in kernels/ is also built with its source defaults, so a new kernel is
covered before its Python side exists.
"""

from __future__ import annotations

from topkbench.cuda import loader
from topkbench.impls import registry


def compile_variants() -> list[tuple[str, dict[str, int]]]:
    """Distinct (source, defines) pairs: each .cu with no defines, plus every declared variant."""
    seen: dict[tuple[str, tuple[tuple[str, object], ...]], tuple[str, dict[str, int]]] = {}
    for source in loader.source_names():
        seen[(source, ())] = (source, {})
    for name in registry.names():
        declared = getattr(type(registry.get(name)), "compile_variants", None)
        if declared is None:
            continue
        for source, defines in declared():
            seen.setdefault((source, tuple(sorted(defines.items()))), (source, dict(defines)))
    return sorted(seen.values(), key=lambda pair: (pair[0], sorted(pair[1].items())))
