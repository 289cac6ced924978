"""Plugin discovery, interface checks, the registry's view of plugins, and provenance."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import topkbench
from topkbench.errors import DeviceError, UsageError
from topkbench.exactness import check_topk
from topkbench.impls import registry
from topkbench.plugins import ENV_VAR, PluginWarning, load_plugins
from topkbench.plugins.option import load_cli_plugins

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO = PLUGINS.parents[1]


#: Every test starts like a new process: no plugin loaded, no $TOPKBENCH_PLUGINS.
pytestmark = pytest.mark.usefixtures("fresh_plugin_registry")


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.name.encode() + b"\0" + path.read_bytes()).hexdigest()


def test_path_plugin_is_registered_with_its_provenance():
    loaded = load_plugins([str(PLUGINS / "good_plugin.py")])
    assert [p.name for p in loaded] == ["fixture-path-topk", "fixture-path-topk-two"]
    names = registry.names()
    assert names[: len(registry._ENTRIES)] == list(registry._ENTRIES)  # built-ins first
    assert {"fixture-path-topk", "fixture-path-topk-two"} <= set(registry.available())
    assert "_Base" not in names  # an intermediate base without a name is not an implementation
    impl = registry.require("fixture-path-topk")
    assert registry.get("fixture-path-topk") is impl
    assert registry.get("fixture-path-topk-two").max_k == 64
    prov = registry.provenance_of("fixture-path-topk")
    assert prov.source == f"path:{PLUGINS / 'good_plugin.py'}"
    assert prov.version == "2.5"
    assert prov.hash == _sha256(PLUGINS / "good_plugin.py")


def test_loading_is_idempotent():
    first = load_plugins([str(PLUGINS / "good_plugin.py")])
    # the same file by another spelling of its path
    again = load_plugins([os.path.relpath(PLUGINS / "good_plugin.py"), str(PLUGINS / "good_plugin.py")])
    assert [p.cls for p in again] == [p.cls for p in first] * 2
    assert registry.names().count("fixture-path-topk") == 1
    module = sys.modules[first[0].cls.__module__]
    assert module.LOADS == [1]  # the file ran once


def test_module_plugin_and_plugin_run_through_the_contract(on_path):
    loaded = load_plugins(["fixture_module_plugin"])
    assert [p.name for p in loaded] == ["fixture-module-topk"]
    prov = registry.provenance_of("fixture-module-topk")
    assert prov.source == "module:fixture_module_plugin"
    assert prov.hash == _sha256(PLUGINS / "fixture_module_plugin.py")
    logits = torch.randn(3, 500)
    lengths = torch.tensor([500, 10, 200], dtype=torch.int32)
    runner = registry.get("fixture-module-topk").prepare(logits, lengths, 16)
    runner.run()
    assert check_topk(logits, lengths, 16, runner.result()).ok


def test_env_var_plugins_load_on_the_first_query(monkeypatch, on_path):
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(PLUGINS / "good_plugin.py"), "", "fixture_module_plugin"]))
    registry._reset_plugins()
    names = registry.names()
    assert {"fixture-path-topk", "fixture-module-topk"} <= set(names)


def test_topk_api_sees_env_var_plugins(monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(PLUGINS / "good_plugin.py"))
    registry._reset_plugins()
    x = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    out = topkbench.topk(x, 8, impl="fixture-path-topk")
    assert isinstance(out, np.ndarray) and out.shape == (2, 8)
    assert check_topk(torch.from_numpy(x), None, 8, torch.from_numpy(out)).ok
    assert "fixture-path-topk" in topkbench.implementations()


def test_entry_point_plugins(monkeypatch):
    site = PLUGINS / "site"
    monkeypatch.syspath_prepend(str(site))
    registry._reset_plugins()
    assert "fixture-ep-topk" in registry.names()
    prov = registry.provenance_of("fixture-ep-topk")
    assert prov.source == "entry-point:fixture-ep-dist:fixture"
    assert prov.version == "1.2.3"
    record = (site / "fixture_ep_dist-1.2.3.dist-info" / "RECORD").read_text()
    assert prov.hash == hashlib.sha256(record.encode()).hexdigest()
    logits = torch.randn(2, 100)
    assert check_topk(logits, None, 5, registry.get("fixture-ep-topk")(logits, 5)).ok


def test_builtin_provenance():
    prov = registry.provenance_of("numpy")
    assert (prov.source, prov.version, prov.hash) == ("builtin", topkbench.__version__, "")
    per_row = registry.provenance_of("per_row")
    assert per_row.source == "builtin" and per_row.hash == registry.get("per_row").kernel_hash()


def test_a_plugin_that_fails_to_import_is_one_warning_and_builtins_still_run():
    with pytest.warns(PluginWarning) as caught:
        assert load_plugins([str(PLUGINS / "broken_import.py")]) == []
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "broken_import.py failed to import: ModuleNotFoundError" in messages[0]
    assert "\n" not in messages[0]
    assert {"torch-cpu", "numpy"} <= set(registry.available())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_plugins([str(PLUGINS / "broken_import.py")])  # reported once, not on every call


def test_missing_file_and_missing_module_are_warnings():
    with pytest.warns(PluginWarning, match="no such file"):
        load_plugins(["/nonexistent/plugin.py"])
    with pytest.warns(PluginWarning, match="topkbench_no_such_plugin_module failed to import"):
        load_plugins(["topkbench_no_such_plugin_module"])


@pytest.mark.parametrize("expected", [
    "is not a subclass of topkbench.Implementation",
    "NoName sets no name",
    "name 'has space' must be",
    "fixture-wrong-device: device must be topkbench.Device.CPU or topkbench.Device.CUDA, got 'gpu'",
    "fixture-too-new: written for implementation interface version 2, this topkbench runs versions 1..1: "
    "upgrade topkbench",
    "fixture-abstract: does not implement _prepare",
    "fixture-ctor-fails: CtorFails() failed: RuntimeError: no GPU context",
    "'numpy' is the name of a built-in implementation",
])
def test_each_interface_break_is_reported_and_skipped(expected):
    with pytest.warns(PluginWarning) as caught:
        loaded = load_plugins([str(PLUGINS / "broken_plugins.py")])
    assert [p.name for p in loaded] == ["fixture-fine-beside-broken"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 8
    assert sum(expected in m for m in messages) == 1, messages
    assert registry.get("numpy").__class__.__module__ == "topkbench.impls.library"
    assert "fixture-too-new" not in registry.names()


def test_two_plugins_with_one_name_are_an_error_naming_both():
    load_plugins([str(PLUGINS / "clash_a.py")])
    with pytest.raises(UsageError) as info:
        load_plugins([str(PLUGINS / "clash_b.py")])
    message = info.value.message
    assert f"path:{PLUGINS / 'clash_a.py'}" in message and f"path:{PLUGINS / 'clash_b.py'}" in message
    assert "'fixture-clash'" in message


def test_a_name_clash_in_the_environment_stays_an_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, os.pathsep.join(str(PLUGINS / f"clash_{x}.py") for x in "ab"))
    registry._reset_plugins()
    for _ in range(2):
        with pytest.raises(UsageError, match="two plugins take the implementation name 'fixture-clash'"):
            registry.names()


def test_a_plugin_whose_unavailable_reason_raises_is_unavailable():
    load_plugins([str(PLUGINS / "unavailable_raises.py")])
    assert "fixture-unavailable-raises" in registry.names()
    assert "fixture-unavailable-raises" not in registry.available()
    reason = registry.unavailable_reason("fixture-unavailable-raises")
    assert reason == "unavailable_reason() raised OSError: driver probe failed"
    with pytest.raises(DeviceError, match="driver probe failed"):
        registry.require("fixture-unavailable-raises")


def test_unknown_name_hints_at_plugins():
    with pytest.raises(UsageError) as info:
        registry.get("no-such-impl")
    assert "--plugin" in info.value.hint


def test_cli_loader_prints_one_line_per_problem(capsys):
    loaded = load_cli_plugins([str(PLUGINS / "broken_import.py"), str(PLUGINS / "good_plugin.py")])
    assert [p.name for p in loaded] == ["fixture-path-topk", "fixture-path-topk-two"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: plugin ") and "failed to import" in err[0]
    assert load_cli_plugins(None) == []


def test_package_exports_the_interface_without_importing_cupy():
    code = ("import sys, topkbench; "
            "assert topkbench.Implementation.__module__ == 'topkbench.impls.base'; "
            "assert topkbench.INTERFACE_VERSION >= 1; "
            "assert {'Implementation', 'Runner', 'Device', 'INTERFACE_VERSION', 'load_plugins'} <= set(topkbench.__all__); "
            "assert 'cupy' not in sys.modules and 'flashinfer' not in sys.modules; "
            "import topkbench.impls.registry as r; r.names(); "
            "assert 'cupy' not in sys.modules and 'flashinfer' not in sys.modules")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
