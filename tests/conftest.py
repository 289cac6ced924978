"""Shared test configuration: GPU tests carry ``@pytest.mark.gpu`` and skip cleanly without one."""

from __future__ import annotations

import pytest

from topkbench.cuda.loader import cupy_unavailable_reason


def pytest_collection_modifyitems(config, items):
    reason = cupy_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"GPU test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
