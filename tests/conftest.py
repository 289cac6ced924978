"""Shared test configuration: GPU tests carry ``@pytest.mark.gpu`` and skip cleanly without one."""

from __future__ import annotations

import os
import tempfile

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


def pytest_configure(config):
    # The sweeps of this session (and the subprocesses it starts) lock their device in a folder of
    # their own: another process measuring on this machine must not refuse the tests' sweeps.
    os.environ["TOPKBENCH_LOCK_DIR"] = tempfile.mkdtemp(prefix="topkbench-test-locks-")


@pytest.fixture
def fresh_plugin_registry(monkeypatch):
    """A test that starts like a new process: no plugin loaded, no $TOPKBENCH_PLUGINS."""
    from topkbench.impls import registry
    from topkbench.plugins import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)
    registry._reset_plugins()
    yield
    registry._reset_plugins()
