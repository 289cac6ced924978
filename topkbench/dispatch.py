"""What ``impl="auto"`` runs: the fitted module for this GPU when one is installed, else a default.

Where fitted modules are looked for, in order, as ``<gpu_slug>.py``:

1. the folder named by ``$TOPKBENCH_HEURISTICS``;
2. ``~/.config/topkbench/heuristics/`` (where ``topkbench fit-heuristic --install`` copies them);
3. the modules shipped with topkbench (``topkbench/heuristics/``), fitted from the measurements
   committed under ``results/`` (an NVIDIA H100 80GB HBM3 so far).

The default, used when no module is installed, when it cannot be loaded (a warning says why) or
when it picks an implementation that is not available here: the hand rule "proposal"
(topkbench.rules) when its pick is available; otherwise the first available of
``FALLBACK_ORDER`` (torch.topk on CUDA, numpy.argpartition on CPU); otherwise the first available
name in sorted order.

Which module a GPU uses is looked up once per process (for each value of ``$TOPKBENCH_HEURISTICS``
and ``$HOME``), on the first ``impl="auto"`` call: a decode step then pays a dictionary lookup,
not a file-system walk.
A module installed, edited or removed after that is seen only after :func:`reload` (or in a new
process); ``topkbench fit-heuristic --install`` calls it for its own process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence

from topkbench.errors import UsageError
from topkbench.rules import get_rule

ENV_VAR = "TOPKBENCH_HEURISTICS"
DEFAULT_RULE = "proposal"
FALLBACK_ORDER = ("torch", "numpy", "torch-cpu")

_cache: dict[tuple[str, int, int], ModuleType] = {}
#: (gpu_slug, $TOPKBENCH_HEURISTICS, $HOME) -> the fitted module impl="auto" uses, or None; see reload().
_chosen: dict[tuple[str, str | None, str | None], ModuleType | None] = {}
_BUNDLED = Path(__file__).resolve().parent / "heuristics"


def reload() -> None:
    """Forget which fitted module each GPU uses: the next ``choose`` looks in the folders again."""
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
        module = _chosen[key]
    except KeyError:
        module = _chosen[key] = find_fitted_module(gpu_slug)
    if module is not None:
        try:
            pick = module.select(int(num_rows), int(max_seq_len), int(k))
        except Exception as exc:  # a hand-edited module must not break a decode step
            warnings.warn(f"the fitted heuristic for {gpu_slug} failed ({type(exc).__name__}: {exc}); "
                          "using the default", RuntimeWarning, stacklevel=2)
        else:
            if pick in available:
                return pick
    return default_choice(num_rows, max_seq_len, k, available)
