"""impl="auto": the fitted module for the device, else the nearest device's, else the documented default."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from topkbench import codegen, dispatch
from topkbench.device_record import DeviceRecord, infer_compute_capability
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
    monkeypatch.setattr(dispatch, "_warned", set())
    dispatch.reload()
    yield home
    dispatch.reload()


@pytest.fixture
def no_shipped_modules(tmp_path, monkeypatch):
    """The shipped modules out of the way: the test installs the only candidates."""
    monkeypatch.setattr(dispatch, "bundled_heuristics_dir", lambda: tmp_path / "no-shipped-modules")


def fake_device(monkeypatch, record: DeviceRecord | None) -> None:
    """This machine's device, as the driver would describe it (no GPU needed)."""
    monkeypatch.setattr(dispatch, "this_device", lambda slug: record if record and record.slug == slug else None)


def install(folder: Path, slug: str = "synthetic-gpu", records=None, **device) -> Path:
    """A generated module fitted to the planted crossover (per_row short, large_context long);
    ``device`` overrides the synthetic GPU's record (compute_capability, sm_count, bandwidth_gbs...)."""
    records = records or planted()
    if device or slug != "synthetic-gpu":
        records = [{**r, "gpu_slug": slug, "gpu_name": slug.upper(), **device} for r in records]
    points, prov = select_points(make_frame(records))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.py"
    path.write_text(codegen.render_module(fit(points, prov)))
    return path


def test_default_without_a_module_is_the_proposal_rule_mapped_onto_what_is_available():
    assert dispatch.find_fitted_module("h100") is None
    assert dispatch.choose(1, 131072, 2048, GPU_IMPLS, "h100") == "radix"
    assert dispatch.choose(64, 16384, 2048, GPU_IMPLS, "h100") == "large_context"
    assert dispatch.choose(64, 4096, 2048, GPU_IMPLS, "h100") == "per_row"
    # proposal's pick missing: torch.topk on CUDA, then on CPU (measured faster than numpy beyond tiny rows)
    assert dispatch.choose(1, 131072, 2048, ["torch", "per_row"], "h100") == "torch"
    assert dispatch.default_choice(8, 4096, 64, ["numpy", "torch-cpu"]) == "torch-cpu"
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


SYNTHETIC_GPU = {"compute_capability": "9.0", "sm_count": 132, "bandwidth_gbs": 3000.0}


def test_a_gpu_without_a_module_uses_the_nearest_comparable_one_and_says_so_once(tmp_path, monkeypatch,
                                                                              no_shipped_modules):
    folder = tmp_path / "heuristics"
    install(folder, "gpu-near", compute_capability="9.0", sm_count=132, bandwidth_gbs=3350.0)
    # the far one answers the opposite way: picking it would show
    swapped = [{**r, "impl": {"per_row": "large_context", "large_context": "per_row"}[r["impl"]]} for r in planted()]
    install(folder, "gpu-far", records=swapped, compute_capability="9.0", sm_count=78, bandwidth_gbs=2000.0)
    install(folder, "gpu-older", records=swapped, compute_capability="8.0", sm_count=132, bandwidth_gbs=4800.0)
    monkeypatch.setenv(dispatch.ENV_VAR, str(folder))
    fake_device(monkeypatch, DeviceRecord("NVIDIA H200", "nvidia-h200", "9.0", 132, 60 << 20, 4800.0))

    resolution = dispatch.resolve("nvidia-h200")
    assert resolution.kind == "stand-in" and resolution.path == folder / "gpu-near.py"
    with pytest.warns(RuntimeWarning) as caught:
        assert dispatch.choose(64, 131072, 2048, GPU_IMPLS, "nvidia-h200") == "large_context"
    (warning,) = caught
    text = str(warning.message)
    assert "GPU-NEAR (compute capability 9.0, 132 SMs, 3350 GB/s)" in text
    assert "topkbench sweep dsv32-decode" in text and "topkbench fit-heuristic results/nvidia-h200" in text
    assert "--install" in text
    # once per process: not on the next call, nor after a reload
    dispatch.reload()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.choose(1, 1024, 2048, GPU_IMPLS, "nvidia-h200") == "per_row"


def test_the_same_compute_capability_comes_before_size(tmp_path, monkeypatch, no_shipped_modules):
    install(tmp_path, "same-cc-small", compute_capability="8.9", sm_count=46, bandwidth_gbs=500.0)
    install(tmp_path, "other-cc-same-size", compute_capability="8.0", sm_count=142, bandwidth_gbs=864.0)
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path))
    fake_device(monkeypatch, DeviceRecord("NVIDIA L40S", "nvidia-l40s", "8.9", 142, 96 << 20, 864.0))
    assert dispatch.resolve("nvidia-l40s").path == tmp_path / "same-cc-small.py"
    # without it, the same major version (8.x) still stands in
    (tmp_path / "same-cc-small.py").unlink()
    dispatch.reload()
    resolution = dispatch.resolve("nvidia-l40s")
    assert resolution.path == tmp_path / "other-cc-same-size.py" and "compute capability 8.0" in resolution.reason


def test_nothing_comparable_means_the_hand_rule(tmp_path, monkeypatch, no_shipped_modules):
    install(tmp_path, "hopper", **SYNTHETIC_GPU)
    (tmp_path / "old-style.py").write_text("THRESHOLDS = ()\ndef select(r, s, k):\n    return 'per_row'\n")
    monkeypatch.setenv(dispatch.ENV_VAR, str(tmp_path))
    fake_device(monkeypatch, DeviceRecord("NVIDIA B200", "nvidia-b200", "10.0", 148, 126 << 20, 8000.0))
    resolution = dispatch.resolve("nvidia-b200")
    assert resolution.kind == "default" and "compute capability 10.x" in resolution.reason
    assert "'topkbench sweep dsv32-decode'" in resolution.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hand rule is not a stand-in: no warning
        assert dispatch.choose(1, 131072, 2048, GPU_IMPLS, "nvidia-b200") == "radix"
    # a module without a DEVICE record (written before it existed) never stands in
    fake_device(monkeypatch, DeviceRecord("Old", "old", "", 10))
    assert dispatch.resolve("old").kind == "default"
    # a device's own module comes first, whatever the others
    fake_device(monkeypatch, DeviceRecord("HOPPER", "hopper", "9.0", 132))
    assert dispatch.resolve("hopper").kind == "own"


@pytest.mark.parametrize(("name", "bandwidth", "stand_in"), [
    ("NVIDIA H800", 3000.0, "nvidia-h100-80gb-hbm3.py"),  # nearest in bandwidth: the H100
    ("NVIDIA H20", 4000.0, "nvidia-h200.py"),  # nearest in bandwidth: the H200
])
def test_the_shipped_module_of_the_nearest_hopper_stands_in(monkeypatch, name, bandwidth, stand_in):
    slug = name.lower().replace(" ", "-")
    fake_device(monkeypatch, DeviceRecord(name, slug, "9.0", 132, 50 << 20, bandwidth))
    resolution = dispatch.resolve(slug)
    assert resolution.kind == "stand-in" and resolution.path.name == stand_in
    with pytest.warns(RuntimeWarning, match=name):
        assert dispatch.choose(1, 131072, 2048, GPU_IMPLS, slug) == "radix"


def test_the_h200_uses_its_own_shipped_module(monkeypatch):
    fake_device(monkeypatch, DeviceRecord("NVIDIA H200", "nvidia-h200", "9.0", 132, 60 << 20, 4800.0))
    assert dispatch.resolve("nvidia-h200").kind == "own"


def test_a_cpu_without_a_module_uses_the_shipped_cpu_fit(monkeypatch):
    resolution = dispatch.resolve("cpu-some-other-processor")
    assert resolution.kind == "stand-in" and resolution.path.name == "cpu-amd-epyc.py"
    assert "topkbench sweep cpu-crossover" in resolution.reason
    with pytest.warns(RuntimeWarning, match="cpu: AMD EPYC"):
        assert dispatch.choose(8, 4096, 64, ["numpy", "torch-cpu"], "cpu-some-other-processor") == "torch-cpu"
    assert dispatch.resolve("cpu-amd-epyc").kind == "own"


def test_compute_capability_of_known_names():
    assert infer_compute_capability("NVIDIA H100 80GB HBM3") == "9.0"
    assert infer_compute_capability("NVIDIA H200") == "9.0"
    assert infer_compute_capability("NVIDIA A100-SXM4-80GB") == "8.0"
    assert infer_compute_capability("NVIDIA B200") == "10.0"
    assert infer_compute_capability("NVIDIA L40S") == "8.9"
    assert infer_compute_capability("cpu: AMD EPYC") == "cpu"
    assert infer_compute_capability("Mystery Accelerator") == ""


def test_list_says_which_module_auto_uses_here_and_why(capsys):
    from topkbench.cli import main

    from topkbench.provenance import device_slug

    main(["list"])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    slug = device_slug(None)
    resolution = dispatch.resolve(slug)
    assert f"impl='auto' on {slug}: {resolution.kind}: {' '.join(resolution.reason.split())}" in out
