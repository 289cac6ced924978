"""Sweep configs: bundled ones load, every mistake is one ConfigError naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from topkbench.config import (AVAILABLE, L2Mode, TimingMode, bundled_configs, load_config, parse_config)
from topkbench.errors import ConfigError
from topkbench.workload import Distribution, LengthMode

GOOD = {
    "name": "tiny",
    "description": "a test config",
    "seed": 3,
    "implementations": ["torch-cpu", "numpy"],
    "axes": {"rows": [1, 2], "seq_len": [64, 128], "k": [4], "length_mode": ["fixed", "ragged"],
             "distribution": ["normal", "tie_heavy"]},
    "timing": {"mode": "eager", "l2": ["hot", "cold"], "warmup": 1, "min_samples": 3, "max_samples": 5,
               "noise_target": 0.1, "budget_s": 0.5, "launches_per_sample": 4},
}


def good() -> dict:
    return copy.deepcopy(GOOD)


def test_bundled_configs_are_listed_and_load():
    names = bundled_configs()
    assert {"quick", "verify", "dsv32-decode"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.num_points > 0
        assert cfg.source == f"bundled:{name}"
        assert cfg.num_points == len(list(cfg.points()))


def test_bundled_config_files_match_repo_configs():
    repo = Path(__file__).resolve().parents[1] / "configs"
    assert sorted(p.stem for p in repo.glob("*.yaml")) == bundled_configs()


def test_good_config_parses_to_expected_values():
    cfg = parse_config(good(), "fallback")
    assert cfg.name == "tiny"
    assert cfg.seed == 3
    assert cfg.implementations == ("torch-cpu", "numpy")
    assert cfg.axes.rows == (1, 2)
    assert cfg.axes.length_mode == (LengthMode.FIXED, LengthMode.RAGGED)
    assert cfg.axes.distribution == (Distribution.NORMAL, Distribution.TIE_HEAVY)
    assert cfg.timing.mode is TimingMode.EAGER
    assert cfg.timing.l2 == (L2Mode.HOT, L2Mode.COLD)
    assert (cfg.timing.min_samples, cfg.timing.max_samples) == (3, 5)
    assert cfg.timing.noise_target == pytest.approx(0.1)
    assert cfg.num_points == 2 * 2 * 1 * 2 * 2 == len(list(cfg.points()))
    points = list(cfg.points())
    assert len(set(points)) == len(points)


def test_defaults_and_scalars():
    cfg = parse_config({"axes": {"rows": 1, "seq_len": 8, "k": 2}}, "scalar")
    assert cfg.name == "scalar"
    assert cfg.implementations == AVAILABLE
    assert cfg.axes.rows == (1,) and cfg.axes.seq_len == (8,) and cfg.axes.k == (2,)
    assert cfg.axes.length_mode == (LengthMode.FIXED,)
    assert cfg.num_points == 1 == len(list(cfg.points()))


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize("dotted, value, key", [
    ("bogus", 1, "bogus"),
    ("axes.bogus", [1], "axes.bogus"),
    ("timing.bogus", 1, "timing.bogus"),
    ("axes.rows", "many", "axes.rows"),
    ("axes.rows", [1, 0], "axes.rows"),
    ("axes.seq_len", [1.5], "axes.seq_len"),
    ("axes.k", [True], "axes.k"),
    ("axes.rows", [], "axes.rows"),
    ("axes.k", [], "axes.k"),
    ("axes.distribution", [], "axes.distribution"),
    ("axes.rows", _DELETE, "axes.rows"),
    ("axes.distribution", ["normal", "gaussian"], "axes.distribution"),
    ("axes.length_mode", "jagged", "axes.length_mode"),
    ("timing.mode", "turbo", "timing.mode"),
    ("timing.mode", ["graph", "eager"], "timing.mode"),
    ("timing.l2", ["lukewarm"], "timing.l2"),
    ("timing.noise_target", "small", "timing.noise_target"),
    ("timing.noise_target", -0.1, "timing.noise_target"),
    ("timing.budget_s", -1, "timing.budget_s"),
    ("timing.warmup", 0, "timing.warmup"),
    ("timing.max_samples", 2, "timing.max_samples"),
    ("timing", [1, 2], "timing"),
    ("axes", [1, 2], "axes"),
    ("seed", -1, "seed"),
    ("seed", "zero", "seed"),
    ("name", "has space", "name"),
    ("name", "a/b", "name"),
    ("implementations", [1], "implementations"),
    ("implementations", [], "implementations"),
])
def test_invalid_values_name_the_key(dotted, value, key):
    data = _set(good(), dotted, value)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x")
    message = info.value.message
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message
    assert info.value.hint


def test_max_samples_below_min_samples_names_both():
    data = good()
    data["timing"].update(min_samples=20, max_samples=10)
    with pytest.raises(ConfigError, match=r"^timing\.max_samples: .*timing\.min_samples"):
        parse_config(data, "x")


def test_missing_axes_and_non_mapping():
    with pytest.raises(ConfigError, match="^axes: missing"):
        parse_config({"name": "x"}, "x")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config([1, 2], "x")


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\naxes:\n  rows: [1, 2\n  k: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "line" in info.value.message
    assert "\n" not in info.value.message


def test_invalid_key_in_file_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("axes: {rows: [1], seq_len: [8], k: [2]}\ntiming: {noise_target: lots}\n")
    with pytest.raises(ConfigError, match=r"^timing\.noise_target"):
        load_config(path)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in info.value.message
    with pytest.raises(ConfigError, match="config not found"):
        load_config("no-such-bundled-config")


def test_load_from_file_uses_stem_as_default_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("axes: {rows: [1], seq_len: [8], k: [2]}\n")
    cfg = load_config(path)
    assert cfg.name == "mine"
    assert cfg.source == str(path)


def test_hash_is_stable_and_ignores_name_and_description():
    a = parse_config(good(), "x")
    b = parse_config(good(), "x")
    assert a.hash() == b.hash()
    assert len(a.hash()) == 16
    renamed = good()
    renamed["name"] = "other"
    renamed["description"] = "something else"
    c = parse_config(renamed, "y", source="elsewhere.yaml")
    assert c.hash() == a.hash()


def test_hash_ignores_spelling_but_not_content():
    base = parse_config({"axes": {"rows": [1], "seq_len": [8], "k": [2]}}, "x")
    scalar = parse_config({"axes": {"rows": 1, "seq_len": 8, "k": 2}}, "x")
    dup = parse_config({"axes": {"rows": [1, 1], "seq_len": [8], "k": [2]}}, "x")
    assert base.hash() == scalar.hash() == dup.hash()
    for change in ({"seed": 1}, {"timing": {"budget_s": 9}}, {"implementations": ["numpy"]}):
        other = parse_config({"axes": {"rows": [1], "seq_len": [8], "k": [2]}, **change}, "x")
        assert other.hash() != base.hash(), change
    wider = parse_config({"axes": {"rows": [1], "seq_len": [8, 16], "k": [2]}}, "x")
    assert wider.hash() != base.hash()


def test_hash_known_value_for_quick_is_stable_across_loads():
    assert load_config("quick").hash() == load_config("quick").hash()


def test_only_restricts_points_to_values_the_config_has():
    from topkbench.config import load_config

    cfg = load_config("dsv32-decode")
    only = cfg.parse_only(["k=2048", "length_mode=fixed", "rows=1,256"])
    points = list(cfg.points(only))
    assert len(points) == 2 * len(cfg.axes.seq_len) * len(cfg.axes.distribution)
    assert {p.k for p in points} == {2048} and {p.rows for p in points} == {1, 256}
    assert len(list(cfg.points())) == cfg.num_points


@pytest.mark.parametrize("spec, fragment", [
    ("k=3", "not a value of axes.k"),
    ("bogus=1", "expected AXIS=V1,V2"),
    ("rows", "expected AXIS=V1,V2"),
    ("distribution=gauss", "not a value of axes.distribution"),
])
def test_only_rejects_values_outside_the_config(spec, fragment):
    from topkbench.config import load_config

    with pytest.raises(ConfigError, match=fragment):
        load_config("dsv32-decode").parse_only([spec])
