"""Sweep configs: YAML in, a validated :class:`SweepConfig` out.

Every mistake is one ConfigError line naming the key (``timing.noise_target``, ``axes.rows``...).
A config names a file, or one of the configs shipped with the package (``quick``,
``dsv32-decode``, ``verify``), which live in the top-level ``configs/`` folder.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from topkbench.errors import ConfigError
from topkbench.timing import L2Mode, TimingMode, TimingSettings
from topkbench.workload import Distribution, LengthMode


#: ``implementations: available`` means every implementation usable on this machine.
AVAILABLE = "available"


@dataclass(frozen=True)
class Axes:
    rows: tuple[int, ...]
    seq_len: tuple[int, ...]
    k: tuple[int, ...]
    length_mode: tuple[LengthMode, ...] = (LengthMode.FIXED,)
    distribution: tuple[Distribution, ...] = (Distribution.NORMAL,)


@dataclass(frozen=True)
class Point:
    rows: int
    seq_len: int
    k: int
    length_mode: LengthMode
    distribution: Distribution


@dataclass(frozen=True)
class SweepConfig:
    name: str
    axes: Axes
    implementations: tuple[str, ...] | str = AVAILABLE
    timing: TimingSettings = field(default_factory=TimingSettings)
    seed: int = 0
    description: str = ""
    source: str = ""

    def points(self, only: Mapping[str, Sequence[Any]] | None = None) -> Iterator[Point]:
        """Every point of the axes' product, or those whose axis values are in ``only``."""
        a = self.axes
        for rows, seq_len, k, mode, dist in itertools.product(a.rows, a.seq_len, a.k, a.length_mode, a.distribution):
            point = Point(rows, seq_len, k, mode, dist)
            if only is None or all(getattr(point, axis) in values for axis, values in only.items()):
                yield point

    def parse_only(self, specs: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """``["k=2048", "rows=1,8"]`` -> a restriction of the axes to values the config has.

        Sweeping a slice keeps the config (and so the run) the same: a later slice resumes it.
        """
        only: dict[str, tuple[Any, ...]] = {}
        for spec in specs:
            axis, sep, raw = spec.partition("=")
            axis = axis.strip()
            if not sep or axis not in _AXIS_KEYS or not raw.strip():
                raise ConfigError(f"--only {spec!r}: expected AXIS=V1,V2 with AXIS one of {', '.join(sorted(_AXIS_KEYS))}")
            have = getattr(self.axes, axis)
            wanted = []
            for text in raw.split(","):
                text = text.strip()
                match = next((v for v in have if str(getattr(v, "value", v)) == text), None)
                if match is None:
                    shown = ", ".join(str(getattr(v, "value", v)) for v in have)
                    raise ConfigError(f"--only {axis}={text}: not a value of axes.{axis} in {self.name} ({shown})")
                wanted.append(match)
            only[axis] = tuple(dict.fromkeys(only.get(axis, ()) + tuple(wanted)))
        return only

    @property
    def num_points(self) -> int:
        a = self.axes
        return len(a.rows) * len(a.seq_len) * len(a.k) * len(a.length_mode) * len(a.distribution)

    def hash(self) -> str:
        """Hash of everything that changes what is measured (not the name or description)."""
        data = asdict(self)
        for key in ("name", "description", "source"):
            data.pop(key)
        text = json.dumps(data, sort_keys=True, default=lambda v: v.value if isinstance(v, Enum) else str(v))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- validation -----------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "seed", "implementations", "axes", "timing"}
_AXIS_KEYS = {"rows", "seq_len", "k", "length_mode", "distribution"}
_REQUIRED_AXES = ("rows", "seq_len", "k")


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}", hint="see configs/quick.yaml for a complete example")


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(f"{where}.{key}" if where else str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"expected a positive integer, got {value!r}")
    return value


def _number(where: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _fail(where, f"expected a number {bound}, got {value!r}")
    return float(value)


def _as_list(where: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(where, "empty: give at least one value")
    return values


def _enum_list(where: str, value: Any, enum: type[Enum]) -> tuple[Any, ...]:
    out = []
    for item in _as_list(where, value):
        try:
            out.append(enum(item))
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise _fail(where, f"unknown value {item!r} (choose from: {choices})") from None
    return tuple(dict.fromkeys(out))


def _int_list(where: str, value: Any) -> tuple[int, ...]:
    return tuple(dict.fromkeys(_positive_int(where, v) for v in _as_list(where, value)))


def _parse_axes(data: Any) -> Axes:
    if not isinstance(data, dict):
        raise _fail("axes", "expected a mapping of axis name to values")
    _check_keys("axes", data, _AXIS_KEYS)
    for key in _REQUIRED_AXES:
        if key not in data:
            raise _fail(f"axes.{key}", "missing")
    kwargs: dict[str, Any] = {key: _int_list(f"axes.{key}", data[key]) for key in _REQUIRED_AXES}
    if "length_mode" in data:
        kwargs["length_mode"] = _enum_list("axes.length_mode", data["length_mode"], LengthMode)
    if "distribution" in data:
        kwargs["distribution"] = _enum_list("axes.distribution", data["distribution"], Distribution)
    return Axes(**kwargs)


def _parse_timing(data: Any) -> TimingSettings:
    if data is None:
        return TimingSettings()
    if not isinstance(data, dict):
        raise _fail("timing", "expected a mapping")
    _check_keys("timing", data, set(TimingSettings.__dataclass_fields__))
    kwargs: dict[str, Any] = {}
    if "mode" in data:
        if isinstance(data["mode"], list):
            raise _fail("timing.mode", "expected one value, not a list")
        kwargs["mode"] = _enum_list("timing.mode", data["mode"], TimingMode)[0]
        if kwargs["mode"] is TimingMode.HOST:
            raise _fail("timing.mode", "'host' is chosen for CPU implementations; give graph or eager")
    if "l2" in data:
        kwargs["l2"] = _enum_list("timing.l2", data["l2"], L2Mode)
    for key in ("launches_per_sample", "warmup", "min_samples", "max_samples"):
        if key in data:
            kwargs[key] = _positive_int(f"timing.{key}", data[key])
    if "noise_target" in data:
        kwargs["noise_target"] = _number("timing.noise_target", data["noise_target"], 0.0, 10.0)
    if "budget_s" in data:
        kwargs["budget_s"] = _number("timing.budget_s", data["budget_s"], 0.0)
    timing = TimingSettings(**kwargs)
    if timing.max_samples < timing.min_samples:
        raise _fail("timing.max_samples", f"{timing.max_samples} is below timing.min_samples ({timing.min_samples})")
    return timing


def _parse_implementations(data: Any) -> tuple[str, ...] | str:
    if data is None or data == AVAILABLE:
        return AVAILABLE
    names = _as_list("implementations", data)
    for name in names:
        if not isinstance(name, str):
            raise _fail("implementations", f"expected implementation names, got {name!r}")
    return tuple(dict.fromkeys(names))


def parse_config(data: Any, name: str, source: str = "") -> SweepConfig:
    """Validate a config already read from YAML."""
    if not isinstance(data, dict):
        raise ConfigError(f"config {source or name}: expected a mapping at the top level")
    _check_keys("", data, _TOP_KEYS)
    if "axes" not in data:
        raise _fail("axes", "missing")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail("seed", f"expected a non-negative integer, got {seed!r}")
    config_name = data.get("name", name)
    if not isinstance(config_name, str) or not config_name or any(c in config_name for c in "/\\ "):
        raise _fail("name", f"expected a short name without spaces or slashes, got {config_name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", "expected text")
    return SweepConfig(
        name=config_name,
        axes=_parse_axes(data["axes"]),
        implementations=_parse_implementations(data.get("implementations")),
        timing=_parse_timing(data.get("timing")),
        seed=seed,
        description=description,
        source=source,
    )


def bundled_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    root = _bundled_root()
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _bundled_root() -> Any:
    try:
        return importlib.resources.files("topkbench._configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "configs"


def load_config(spec: str | Path) -> SweepConfig:
    """Load a config from a path, or by the name of a bundled config."""
    path = Path(spec)
    if path.is_file():
        text, source, stem = path.read_text(encoding="utf-8"), str(path), path.stem
    else:
        entry = _bundled_root() / f"{spec}.yaml"
        if path.suffix or not entry.is_file():
            raise ConfigError(f"config not found: {spec}",
                              hint=f"give a YAML file or one of the bundled configs: {', '.join(bundled_configs())}")
        text, source, stem = entry.read_text(encoding="utf-8"), f"bundled:{spec}", str(spec)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config {source}: {problem}{where}", hint="check the YAML syntax") from None
    return parse_config(data, stem, source)
