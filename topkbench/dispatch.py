"""What ``impl="auto"`` runs: the fitted module for this device, else the nearest device's, else a default.

Where fitted modules are looked for, in order, as ``<device_slug>.py``:

1. the folder named by ``$TOPKBENCH_HEURISTICS``;
2. ``~/.config/topkbench/heuristics/`` (where ``topkbench fit-heuristic --install`` copies them);
3. the modules shipped with topkbench (``topkbench/heuristics/``): an NVIDIA H100 80GB HBM3 and
   the CPU of the development machine (a 2-core AMD EPYC) so far.

Which module a device uses (:func:`resolve`):

- its own, when one of the folders holds ``<its slug>.py``;
- else a *stand-in*: the module of the most similar device among all those found (first folder
  wins per slug), ranked by topkbench.device_record: the same compute-capability major version
  only (CPUs with CPUs), an exact compute capability first, then the nearest SM count and
  bandwidth. This device's SM count and L2 come from the driver; its bandwidth is the driver's
  theoretical peak when torch reports the memory clock and bus width, and is left out of the
  ranking otherwise. A warning, once per process, names the stand-in and the two commands that
  fit this device;
- else the default: the hand rule "proposal" (topkbench.rules) when its pick is available;
  otherwise the first available of ``FALLBACK_ORDER`` (torch.topk on CUDA; on CPU torch.topk,
  measured 1.3-15x faster than numpy.argpartition except on one or two rows of 128 columns:
  results/cpu-amd-epyc); otherwise the first available name in sorted order. The default also answers when a module cannot be loaded (a
  warning says why) or picks an implementation that is not available here.

The resolution is made once per process (for each value of ``$TOPKBENCH_HEURISTICS`` and
``$HOME``), on the first ``impl="auto"`` call: a decode step then pays a dictionary lookup, not a
file-system walk. A module installed, edited or removed after that is seen only after
:func:`reload` (or in a new process); ``topkbench fit-heuristic --install`` calls it for its own
process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Sequence

from topkbench.device_record import CPU, DeviceRecord
from topkbench.errors import UsageError
from topkbench.rules import get_rule

ENV_VAR = "TOPKBENCH_HEURISTICS"
DEFAULT_RULE = "proposal"
FALLBACK_ORDER = ("torch", "torch-cpu", "numpy")
#: The sweep config whose measurements a fit of this kind of device wants.
FIT_CONFIG = {"gpu": "dsv32-decode", "cpu": "cpu-crossover"}

_cache: dict[tuple[str, int, int], ModuleType] = {}
_BUNDLED = Path(__file__).resolve().parent / "heuristics"


@dataclass(frozen=True)
class Resolution:
    """Which fitted module ``impl="auto"`` uses on a device, and why."""

    kind: str  # "own", "stand-in" or "default"
    module: ModuleType | None
    path: Path | None
    reason: str


#: (device slug, $TOPKBENCH_HEURISTICS, $HOME) -> its resolution; see reload().
_chosen: dict[tuple[str, str | None, str | None], Resolution] = {}
#: Devices whose stand-in was announced: once per process, whatever reload() does.
_warned: set[str] = set()


def reload() -> None:
    """Forget which fitted module each device uses: the next ``choose`` looks in the folders again."""
    _chosen.clear()


def user_heuristics_dir() -> Path:
    """``~/.config/topkbench/heuristics``, where ``--install`` puts fitted modules."""
    return Path.home() / ".config" / "topkbench" / "heuristics"


def search_dirs() -> list[Path]:
    """The folders searched for ``<gpu_slug>.py``, first match wins."""
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(user_heuristics_dir())
    dirs.append(bundled_heuristics_dir())
    return dirs


def bundled_heuristics_dir() -> Path:
    """The fitted modules shipped inside the package."""
    return _BUNDLED


def load_heuristic_module(path: str | Path, require_thresholds: bool = True) -> ModuleType:
    """Load a generated module from ``path`` (not via sys.path; cached per file version).

    Raises UsageError when the file is missing or is not a fitted module (no ``select``, or no
    ``THRESHOLDS`` when ``require_thresholds``: a report also judges hand-written rules).
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the heuristic module ({exc.strerror})") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _cache:
        return _cache[key]
    # A name of its own per file keeps two GPUs' modules from replacing each other in sys.modules.
    name = "topkbench_heuristic_" + hashlib.sha1(key[0].encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken file must not take the caller down with an odd type
        raise UsageError(f"{path}: cannot load the heuristic module ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(module, "select", None)):
        raise UsageError(f"{path}: not a topkbench fitted module (no select(num_rows, max_seq_len, k) function)",
                         hint="generate one with 'topkbench fit-heuristic'")
    if require_thresholds and not hasattr(module, "THRESHOLDS"):
        raise UsageError(f"{path}: not a topkbench fitted module (no THRESHOLDS)",
                         hint="generate one with 'topkbench fit-heuristic'")
    _cache[key] = module
    return module


def module_path(gpu_slug: str) -> Path | None:
    """The installed module for ``gpu_slug``, or None."""
    if not gpu_slug or "/" in gpu_slug or gpu_slug.startswith("."):
        return None
    for directory in search_dirs():
        candidate = directory / f"{gpu_slug}.py"
        if candidate.is_file():
            return candidate
    return None


def find_fitted_module(gpu_slug: str) -> ModuleType | None:
    """The fitted module installed for ``gpu_slug``, or None (a warning says so if it is broken)."""
    path = module_path(gpu_slug)
    if path is None:
        return None
    try:
        return load_heuristic_module(path)
    except UsageError as exc:
        warnings.warn(f"ignoring the fitted heuristic: {exc.message}", RuntimeWarning, stacklevel=2)
        return None


def fitted_modules() -> list[tuple[Path, ModuleType, DeviceRecord]]:
    """Every loadable fitted module that records its device (first folder wins per slug)."""
    found: dict[str, Path] = {}
    for directory in search_dirs():
        for path in sorted(directory.glob("*.py")) if directory.is_dir() else []:
            if not path.name.startswith(("_", ".")):
                found.setdefault(path.stem, path)
    out = []
    for slug, path in sorted(found.items()):
        try:
            module = load_heuristic_module(path)
        except UsageError:
            continue  # a broken module of another device: it warns when that device uses it
        device = getattr(module, "DEVICE", None)
        if isinstance(device, dict):
            out.append((path, module, DeviceRecord.from_data(device)))
    return out


def _theoretical_bandwidth_gbs(props: object) -> float:
    clock_khz = getattr(props, "memory_clock_rate", 0) or 0
    bus_bits = getattr(props, "memory_bus_width", 0) or 0
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate


def this_device(device_slug: str) -> DeviceRecord | None:
    """The record of the device called ``device_slug`` on this machine, from the driver; None when
    no visible device has that slug. A slug starting with "cpu-" is this machine's CPU."""
    if device_slug.startswith("cpu-"):
        return DeviceRecord(device_slug, device_slug, CPU, os.cpu_count() or 1)
    import torch

    from topkbench.provenance import slug

    if not torch.cuda.is_available():
        return None
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        if slug(props.name) == device_slug:
            return DeviceRecord(props.name, device_slug, f"{props.major}.{props.minor}", props.multi_processor_count,
                                int(getattr(props, "L2_cache_size", 0)), round(_theoretical_bandwidth_gbs(props), 1))
    return None


def _fit_commands(device: DeviceRecord) -> str:
    config = FIT_CONFIG["cpu" if device.compute_capability == CPU else "gpu"]
    return (f"'topkbench sweep {config}' then 'topkbench fit-heuristic results/{device.slug} "
            f"--out {device.slug}.py --install'")


def resolve(device_slug: str) -> Resolution:
    """Which module ``impl="auto"`` uses on the device ``device_slug`` (see the module docstring)."""
    path = module_path(device_slug)
    own = find_fitted_module(device_slug) if path is not None else None
    if own is not None:
        return Resolution("own", own, path, f"fitted on this device ({path})")
    device = this_device(device_slug)
    if device is None:
        return Resolution("default", None, None, f"no module fitted for {device_slug}, and the device is not "
                                                 f"visible here to compare: the hand rule {DEFAULT_RULE!r}")
    comparable = [(device.distance(record), record.slug, path, module, record)
                  for path, module, record in fitted_modules() if device.comparable(record)]
    if not comparable:
        if device.compute_capability == CPU:
            what, default = "another CPU", f"the first available of {', '.join(FALLBACK_ORDER[1:])}"
        else:
            what, default = f"a GPU of compute capability {device.major or '?'}.x", f"the hand rule {DEFAULT_RULE!r}"
        return Resolution("default", None, None, f"no module fitted for {device.describe()} nor for {what}: "
                                                 f"{default}; to fit it: {_fit_commands(device)}")
    _, _, path, module, record = min(comparable, key=lambda c: c[:2])
    same = "the same compute capability" if record.compute_capability == device.compute_capability else \
        f"compute capability {record.compute_capability}"
    return Resolution("stand-in", module, path,
                      f"no module fitted for {device.describe()}; using the one of the most similar device, "
                      f"{record.describe()} ({same}, nearest in SMs and bandwidth; {path}); to fit this device: "
                      f"{_fit_commands(device)}")


def default_choice(num_rows: int, max_seq_len: int, k: int, available: Sequence[str]) -> str:
    """The documented default (see the module docstring)."""
    if not available:
        raise UsageError("no implementation is available to choose from")
    pick = get_rule(DEFAULT_RULE).select(num_rows, max_seq_len, k)
    if pick in available:
        return pick
    for name in FALLBACK_ORDER:
        if name in available:
            return name
    return sorted(available)[0]


def choose(num_rows: int, max_seq_len: int, k: int, available: list[str], gpu_slug: str) -> str:
    """The implementation ``impl="auto"`` runs for this step, one of ``available``."""
    if not available:
        raise UsageError("no implementation is available to choose from")
    key = (gpu_slug, os.environ.get(ENV_VAR), os.environ.get("HOME"))
    try:
        resolution = _chosen[key]
    except KeyError:
        resolution = _chosen[key] = resolve(gpu_slug)
        if resolution.kind == "stand-in" and gpu_slug not in _warned:
            _warned.add(gpu_slug)
            warnings.warn(f"impl='auto': {resolution.reason}", RuntimeWarning, stacklevel=2)
    if resolution.module is not None:
        try:
            pick = resolution.module.select(int(num_rows), int(max_seq_len), int(k))
        except Exception as exc:  # a hand-edited module must not break a decode step
            warnings.warn(f"the fitted heuristic for {gpu_slug} failed ({type(exc).__name__}: {exc}); "
                          "using the default", RuntimeWarning, stacklevel=2)
        else:
            if pick in available:
                return pick
    return default_choice(num_rows, max_seq_len, k, available)
