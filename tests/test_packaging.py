"""Packaging: the wheel carries the CUDA sources and configs; pyproject lists every package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts)
             for init in (REPO / "topkbench").rglob("__init__.py")
             if "__pycache__" not in init.parts}
    missing = sorted(found - listed)
    assert not missing, f"packages with an __init__.py missing from [tool.setuptools] packages: {missing}"


def test_mapped_packages_exist():
    setuptools = _pyproject()["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        assert (REPO / folder).is_dir(), package
        assert package in setuptools["packages"]
    for package in setuptools["packages"]:
        folder = setuptools["package-dir"].get(package) or package.replace(".", "/")
        assert (REPO / folder / "__init__.py").is_file(), package


def test_console_script_points_at_main():
    assert _pyproject()["project"]["scripts"]["topkbench"] == "topkbench.cli:main"


@pytest.mark.slow
def test_wheel_contains_kernel_sources_and_configs(tmp_path):
    # Build from a copy so the shared checkout gets no build/ or egg-info folders.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", "results", ".pytest_cache")
    shutil.copytree(REPO, src, ignore=ignore, symlinks=True)
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
                          cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("topkbench-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {"topkbench/_kernel_sources/topk_common.cuh", "topkbench/_configs/quick.yaml",
                "topkbench/heuristics/nvidia-h100-80gb-hbm3.py",
                "topkbench/__init__.py", "topkbench/cli/__init__.py", "topkbench/impls/library.py"}
    expected |= {f"topkbench/_kernel_sources/{p.name}" for p in (REPO / "kernels").glob("*.cu")}
    expected |= {f"topkbench/_kernel_sources/{p.name}" for p in (REPO / "kernels").glob("*.cuh")}
    expected |= {f"topkbench/_configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    assert len([n for n in expected if n.endswith(".cu")]) >= 1
    missing = sorted(expected - names)
    assert not missing, missing
    # every Python module of the source tree is in the wheel
    for module in (REPO / "topkbench").rglob("*.py"):
        if "__pycache__" in module.parts:
            continue
        assert str(module.relative_to(REPO)).replace("\\", "/") in names, module
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
