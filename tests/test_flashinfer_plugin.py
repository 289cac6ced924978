"""The in-tree FlashInfer plugin, on the CPU: registration, the install hint, provenance, and
(against tests/plugins/fake_flashinfer, a stand-in with flashinfer 0.7.2's names and signatures)
the backend each variant pins, the FLASHINFER_TOPK_ALGO it runs under and the buffers it writes.
The GPU measurements themselves need a GPU and FlashInfer (scripts/flashinfer_wheels.sh)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from topkbench.errors import UnsupportedError
from topkbench.exactness import check_topk
from topkbench.impls import registry
from topkbench.plugins import flashinfer as plugin

FAKE = Path(__file__).resolve().parent / "plugins" / "fake_flashinfer"
VARIANTS = ["flashinfer", "flashinfer-deterministic", "flashinfer-lowest-index", "flashinfer-filtered",
            "flashinfer-radix", "flashinfer-cub"]


@pytest.fixture
def fake(monkeypatch):
    """The stand-in importable as ``flashinfer``; FLASHINFER_TOPK_ALGO unset."""
    monkeypatch.delenv(plugin.ALGO_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H200
    monkeypatch.syspath_prepend(str(FAKE))
    for name in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        monkeypatch.delitem(sys.modules, name)
    import flashinfer.topk as topk

    topk.CALLS.clear()
    topk.PREDICATES.clear()
    topk.FILTERED_CAPABLE[0] = True
    yield topk
    for name in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        del sys.modules[name]


def _run(name: str, rows: int, width: int, k: int, ragged: bool = True):
    """Prepare on the CPU (past the CUDA-only input check) and run once, poisoned output first."""
    logits = torch.randn(rows, width)
    lengths = torch.randint(1, width + 1, (rows,), dtype=torch.int32) if ragged else None
    runner = registry.get(name)._prepare(logits, lengths, k)
    runner.output.fill_(-7)
    runner.run()
    assert check_topk(logits, lengths, k, runner.result()).ok
    assert runner.result() is runner.output
    return runner


def test_every_variant_is_registered_as_a_plugin_not_a_builtin():
    names = registry.names()
    assert set(VARIANTS) <= set(names)
    for name in VARIANTS:
        assert not registry.is_builtin(name)
        prov = registry.provenance_of(name)
        assert prov.source == "module:topkbench.plugins.flashinfer"
        assert prov.source != "builtin"
        impl = registry.get(name)
        assert impl.device.value == "cuda" and impl.graph_capturable


@pytest.mark.skipif(importlib.util.find_spec("flashinfer") is not None, reason="FlashInfer is installed here")
def test_missing_flashinfer_says_how_to_install_it():
    for name in VARIANTS:
        assert registry.unavailable_reason(name) == "FlashInfer is not installed: pip install 'topkbench[flashinfer]'"
        assert name not in registry.available()


def test_only_the_lowest_index_variant_promises_the_contract_tie_rule():
    assert [n for n in VARIANTS if registry.get(n).deterministic] == ["flashinfer-lowest-index"]
    assert registry.get("flashinfer-lowest-index").max_k == 2048
    assert registry.get("flashinfer-filtered").unsupported_reason(4, 2048, 2048) is not None
    assert registry.get("flashinfer-filtered").unsupported_reason(4, 4096, 2049) is not None
    assert registry.get("flashinfer-filtered").unsupported_reason(4, 4096, 2048) is None
    assert registry.get("flashinfer-cub").unsupported_reason(1, (1 << 21) + 1, 8) is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only reason")
def test_with_flashinfer_but_no_gpu(fake):
    assert registry.get("flashinfer").unavailable_reason() == "no CUDA GPU visible to torch"
    assert registry.get("flashinfer").kernel_hash() is not None


@pytest.mark.parametrize("name, algo, op, deterministic, tie_break", [
    ("flashinfer-filtered", "filtered", "native", False, 0),
    ("flashinfer-radix", "multi_cta", "native", False, 0),
    ("flashinfer-cub", "cub", "cub", False, 0),
    ("flashinfer-lowest-index", None, "native", True, 1),
    ("flashinfer-deterministic", None, "native", True, 0),
])
def test_pinned_variants_run_their_backend_under_their_algo(fake, name, algo, op, deterministic, tie_break):
    runner = _run(name, rows=5, width=3000, k=64)
    (call,) = fake.CALLS
    assert call["op"] == op and call["algo"] == algo and call["tie_break"] == tie_break
    assert call["output"] is runner.output  # writes the buffer the harness poisons
    if op == "native":
        assert call["deterministic"] is deterministic and call["dsa_graph_safe"] is False
        assert call["row_states"].numel() == 1 << 20 and not call["row_states"].any()
        assert not call["offsets"].any()
    assert plugin.ALGO_ENV not in os.environ  # restored after the call


def test_the_caller_setting_is_restored(fake, monkeypatch):
    monkeypatch.setenv(plugin.ALGO_ENV, "default")
    _run("flashinfer-radix", rows=2, width=500, k=8)
    assert fake.CALLS[0]["algo"] == "multi_cta"
    assert os.environ[plugin.ALGO_ENV] == "default"


def test_default_dispatch_is_chosen_once_with_the_captured_call_rules(fake):
    # 64 x 40000: the captured-call rules pick CUB (the eager ones would not at 64 rows < 65536).
    runner = _run("flashinfer", rows=64, width=40000, k=16, ragged=False)
    assert fake.CALLS[-1]["op"] == "cub"
    assert ("cub_beneficial", None, 64, 40000, True, False) in fake.PREDICATES
    runner.run()  # pinned: the second run does not re-decide
    assert [c["op"] for c in fake.CALLS] == ["cub", "cub"]
    _run("flashinfer", rows=512, width=40000, k=16)
    assert fake.CALLS[-1]["op"] == "native" and fake.CALLS[-1]["algo"] is None


def test_default_dispatch_honours_the_callers_algo(fake, monkeypatch):
    monkeypatch.setenv(plugin.ALGO_ENV, "default")  # FlashInfer: native dispatch only
    _run("flashinfer", rows=64, width=40000, k=16)
    assert fake.CALLS[-1]["op"] == "native" and fake.CALLS[-1]["algo"] == "default"


def test_full_width_rows_get_a_lengths_buffer(fake):
    _run("flashinfer-radix", rows=3, width=700, k=32, ragged=False)
    assert fake.CALLS[0]["lengths"].tolist() == [700, 700, 700]


def test_native_backends_refuse_strided_logits_as_unsupported(fake):
    wide = torch.randn(4, 600)
    with pytest.raises(UnsupportedError, match="contiguous"):
        registry.get("flashinfer-radix")._prepare(wide[:, :500], None, 8)
    registry.get("flashinfer-cub")._prepare(wide[:, :500], None, 8)  # CUB takes a row stride


def test_cub_on_wide_rows_needs_sm90(fake, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(UnsupportedError, match="SM90"):
        registry.get("flashinfer-cub")._prepare(torch.randn(2, 9000), None, 8)
    registry.get("flashinfer-cub")._prepare(torch.randn(2, 8192), None, 8)


def test_filtered_needs_a_gpu_that_can_run_it(fake):
    fake.FILTERED_CAPABLE[0] = False
    for name in ("flashinfer-filtered", "flashinfer-lowest-index"):
        with pytest.raises(UnsupportedError, match="128 KiB"):
            registry.get(name)._prepare(torch.randn(2, 500), None, 8)
