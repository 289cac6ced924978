"""impl="auto": the installed fitted module for the GPU, else the documented default."""

from __future__ import annotations

from pathlib import Path

import pytest

from topkbench import codegen, dispatch
from topkbench.errors import UsageError
from topkbench.fit import fit
from topkbench.results import select_points

from synthetic import make_frame
from test_fit import planted

GPU_IMPLS = ["torch", "per_row", "large_context", "radix"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.reload()
    return home


def install(folder: Path, slug: str = "synthetic-gpu", records=None) -> Path:
    """A generated module fitted to the planted crossover (per_row short, large_context long)."""
    points, prov = select_points(make_frame(records or planted()))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.py"
    path.write_text(codegen.render_module(fit(points, prov)))
    return path


def test_default_without_a_module_is_the_proposal_rule_mapped_onto_what_is_available():
    assert dispatch.find_fitted_module("h100") is None
    assert dispatch.choose(1, 131072, 2048, GPU_IMPLS, "h100") == "radix"
    assert dispatch.choose(64, 16384, 2048, GPU_IMPLS, "h100") == "large_context"
    assert dispatch.choose(64, 4096, 2048, GPU_IMPLS, "h100") == "per_row"
    # proposal's pick missing: torch.topk on CUDA, numpy on CPU
    assert dispatch.choose(1, 131072, 2048, ["torch", "per_row"], "h100") == "torch"
    assert dispatch.choose(8, 4096, 64, ["torch-cpu", "numpy"], "cpu-amd-epyc") == "numpy"
    assert dispatch.choose(8, 4096, 64, ["zeta", "alpha"], "x") == "alpha"
    with pytest.raises(UsageError, match="no implementation is available"):
        dispatch.choose(1, 1, 1, [], "h100")


def test_the_module_in_the_env_folder_is_used(tmp_path, monkeypatch):
    folder = tmp_path / "heuristics"
    install(folder)
    monkeypatch.setenv(dispatch.ENV_VAR, str(folder))
    module = dispatch.find_fitted_module("synthetic-gpu")
    assert module is not None and module.GPU_SLUG == "synthetic-gpu"
    # the proposal rule would say radix at 128K; the fit says large_context
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "large_context"
    assert dispatch.choose(1, 1024, 2048, GPU_IMPLS, "synthetic-gpu") == "per_row"
    # the fit's pick is not available here: the default decides
    assert dispatch.choose(64, 131072, 2048, ["torch", "radix"], "synthetic-gpu") == "radix"
    assert dispatch.find_fitted_module("another-gpu") is None


def test_user_folder_is_searched_after_the_env_folder(tmp_path, monkeypatch, isolated_home):
    user = isolated_home / ".config" / "topkbench" / "heuristics"
    assert dispatch.user_heuristics_dir() == user
    install(user)
    assert dispatch.module_path("synthetic-gpu") == user / "synthetic-gpu.py"
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "large_context"

    swapped = planted()
    for rec in swapped:
        rec["impl"] = {"per_row": "large_context", "large_context": "per_row"}[rec["impl"]]
    first = install(tmp_path / "env", records=swapped)
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path / "env"))
    assert dispatch.module_path("synthetic-gpu") == first
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "per_row"


def test_two_gpus_modules_do_not_replace_each_other(tmp_path, monkeypatch):
    swapped = planted()
    for rec in swapped:
        rec["impl"] = {"per_row": "large_context", "large_context": "per_row"}[rec["impl"]]
    install(tmp_path, "gpu-a")
    install(tmp_path, "gpu-b", records=swapped)
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path))
    assert dispatch.choose(1, 1024, 64, GPU_IMPLS, "gpu-a") == "per_row"
    assert dispatch.choose(1, 1024, 64, GPU_IMPLS, "gpu-b") == "large_context"
    assert dispatch.choose(1, 1024, 64, GPU_IMPLS, "gpu-a") == "per_row"


def test_a_broken_module_warns_and_falls_back(tmp_path, monkeypatch):
    (tmp_path / "h100.py").write_text("raise RuntimeError('half-written')\n")
    (tmp_path / "h200.py").write_text("X = 1\n")
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path))
    with pytest.warns(RuntimeWarning, match="cannot load the heuristic module.*half-written"):
        assert dispatch.choose(1, 131072, 2048, GPU_IMPLS, "h100") == "radix"
    with pytest.warns(RuntimeWarning, match="not a topkbench fitted module"):
        assert dispatch.find_fitted_module("h200") is None
    with pytest.raises(UsageError, match="cannot read the heuristic module"):
        dispatch.load_heuristic_module(tmp_path / "missing.py")


def test_load_heuristic_module_sees_a_rewritten_file(tmp_path):
    path = install(tmp_path, "gpu")
    assert dispatch.load_heuristic_module(path).select(1, 1024, 64) == "per_row"
    # the trailing newline changes the size, so even a same-mtime rewrite is seen
    path.write_text(path.read_text().replace("'per_row'", "'tmp'").replace("'large_context'", "'per_row'")
                    .replace("'tmp'", "'large_context'") + "\n")
    assert dispatch.load_heuristic_module(path).select(1, 1024, 64) == "large_context"


def test_choose_looks_the_module_up_once_until_reload(tmp_path, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path))
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "radix"  # no module: default
    install(tmp_path)
    # the hot path of impl="auto" does not walk the folders again ...
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "radix"
    # ... until it is told to, as fit-heuristic --install does
    dispatch.reload()
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "large_context"
    # another folder is another lookup
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path / "empty"))
    assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "synthetic-gpu") == "radix"
