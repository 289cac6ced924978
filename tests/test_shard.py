"""--shard: a deterministic, cost-balanced partition whose shards together are exactly the config's
points, the index and count from Slurm or Kubernetes, and the run id the shards agree on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from test_cli import main_in_process
from topkbench.config import load_config, parse_config
from topkbench.errors import UsageError
from topkbench.schema import KEY_COLUMNS
from topkbench.shard import (Shard, agreed_run_id, config_point_cost_us, lpt_partition, parse_shard,
                             shard_points)
from topkbench.store import read_results

TINY = """\
name: tiny-shard
implementations: [torch-cpu, numpy]
axes:
  rows: [1, 3]
  seq_len: [64, 300, 1000]
  k: [7, 64]
  length_mode: [fixed, ragged]
timing: {warmup: 1, min_samples: 3, max_samples: 6, noise_target: 0.5, budget_s: 0.02}
"""


def test_lpt_partition_is_balanced_deterministic_and_covers_every_item():
    costs = [9, 7, 6, 5, 5, 4, 4, 3, 1, 1]
    parts = lpt_partition(costs, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(costs)))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= 1
    assert parts == lpt_partition(list(costs), 3) and all(p == sorted(p) for p in parts)
    assert lpt_partition([1.0], 3) == [[0], [], []]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_of_dsv32_decode_cover_every_point_once_and_balance_cost(count):
    cfg = load_config("dsv32-decode")
    shards = [shard_points(cfg, Shard(i, count)) for i in range(count)]
    assert sum(len(s) for s in shards) == cfg.num_points
    assert frozenset().union(*shards) == frozenset(cfg.points())
    loads = [sum(config_point_cost_us(cfg, p) for p in s) for s in shards]
    assert max(loads) / min(loads) < 1.02  # the greedy leaves less than one large point of slack


def test_the_partition_depends_on_the_config_only():
    cfg = load_config("dsv32-decode")
    again = load_config("dsv32-decode")
    assert [shard_points(cfg, Shard(i, 4)) for i in range(4)] == [shard_points(again, Shard(i, 4)) for i in range(4)]
    # a k >= seq_len point measures nothing: it costs only its workload
    point = next(p for p in cfg.points() if p.k >= p.seq_len)
    assert config_point_cost_us(cfg, point) < config_point_cost_us(cfg, next(p for p in cfg.points() if p.k < p.seq_len))


def test_an_only_slice_is_partitioned_the_same_on_every_shard():
    cfg = parse_config({"name": "s", "implementations": ["numpy"], "axes": {"rows": [1, 2, 4], "seq_len": [100, 200],
                                                                            "k": [4, 8]}}, "s")
    only = cfg.parse_only(["k=8"])
    shards = [shard_points(cfg, Shard(i, 2), only) for i in range(2)]
    assert frozenset().union(*shards) == frozenset(cfg.points(only)) and not shards[0] & shards[1]


@pytest.mark.parametrize(("text", "expected"), [("1/3", Shard(0, 3)), ("3/3", Shard(2, 3)), (" 2/8 ", Shard(1, 8))])
def test_parse_i_of_n(text, expected):
    assert parse_shard(text, {}) == expected
    assert str(expected) == text.strip()


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "1-3", "a/b", "", "auto/3"])
def test_parse_rejects_bad_shards(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text, {})


def test_auto_from_a_slurm_array():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_MAX": "7"}
    assert parse_shard("auto", env) == Shard(5, 8, "SLURM_ARRAY_TASK_ID")
    with pytest.raises(UsageError, match="1-8 with 8 tasks"):
        parse_shard("auto", {**env, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"})
    # resubmitting task 5 alone: the array has one task; the count comes from TOPKBENCH_SHARD_COUNT
    alone = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "5",
             "SLURM_ARRAY_TASK_MAX": "5"}
    with pytest.raises(UsageError, match="5-5 with 1 tasks") as info:
        parse_shard("auto", alone)
    assert "TOPKBENCH_SHARD_COUNT" in info.value.hint
    assert parse_shard("auto", {**alone, "TOPKBENCH_SHARD_COUNT": "8"}).index == 5
    with pytest.raises(UsageError, match="outside 0..3"):
        parse_shard("auto", {**alone, "TOPKBENCH_SHARD_COUNT": "4"})


def test_auto_from_a_kubernetes_indexed_job_needs_the_count():
    with pytest.raises(UsageError, match="no shard count") as info:
        parse_shard("auto", {"JOB_COMPLETION_INDEX": "2"})
    assert "spec.completions" in info.value.hint
    assert parse_shard("auto", {"JOB_COMPLETION_INDEX": "2", "TOPKBENCH_SHARD_COUNT": "8"}) == \
        Shard(2, 8, "JOB_COMPLETION_INDEX")
    with pytest.raises(UsageError, match="no SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX"):
        parse_shard("auto", {})
    with pytest.raises(UsageError, match="not an integer"):
        parse_shard("auto", {"JOB_COMPLETION_INDEX": "x"})


def test_the_run_id_shards_agree_on():
    shard = Shard(0, 8)
    assert agreed_run_id(None, None, True, {}) is None  # unsharded: the newest run, or a new one
    assert agreed_run_id("job-7", shard, True, {"SLURM_ARRAY_JOB_ID": "99"}) == "job-7"
    assert agreed_run_id(None, shard, True, {"SLURM_ARRAY_JOB_ID": "99"}) == "slurm-99"
    assert agreed_run_id(None, shard, False, {"SLURM_ARRAY_JOB_ID": "99"}) == "slurm-99"
    assert agreed_run_id(None, shard, True, {}) == "shards-of-8"
    with pytest.raises(UsageError, match="--no-resume needs --run-id"):
        agreed_run_id(None, shard, False, {})
    with pytest.raises(UsageError, match="--no-resume cannot apply"):
        agreed_run_id("job-7", None, False, {})
    for bad in ("a/b", ".hidden", "x" * 65, "white space"):
        with pytest.raises(UsageError, match="--run-id"):
            agreed_run_id(bad, None, True, {})


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from topkbench import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "measure_copy_bandwidth_gbs", lambda cuda: 10.0)
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "TOPKBENCH_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "tiny-shard.yaml"
    path.write_text(TINY)
    return path


def _keys(frame) -> list[tuple]:
    return [tuple(r) for r in frame[list(KEY_COLUMNS)].itertuples(index=False)]


def test_three_shards_equal_a_one_shot_run_in_separate_and_in_shared_folders(tiny, tmp_path, capsys):
    one_shot = main_in_process(capsys, "sweep", str(tiny), "--out", str(tmp_path / "all"), "-q")
    assert one_shot.returncode == 0, one_shot.stderr
    expected = _keys(read_results([tmp_path / "all"]))
    assert len(expected) == len(set(expected)) == 24 * 2
    for i in (1, 2, 3):
        separate = main_in_process(capsys, "sweep", str(tiny), "--out", str(tmp_path / f"shard{i}"), "--shard", f"{i}/3",
                                   "-q")
        assert separate.returncode == 0, separate.stderr
        assert re.search(rf"shard {i}/3: \d+ of 24 points, run id shards-of-3", separate.stderr), separate.stderr
        shared = main_in_process(capsys, "sweep", str(tiny), "--out", str(tmp_path / "shared"), "--shard", f"{i}/3",
                                 "--run-id", "job-1", "-q")
        assert shared.returncode == 0, shared.stderr
    separate = _keys(read_results([tmp_path / f"shard{i}" for i in (1, 2, 3)]))
    assert len(separate) == len(set(separate)) and set(separate) == set(expected)
    shared_frame = read_results([tmp_path / "shared"])
    assert sorted(_keys(shared_frame)) == sorted(expected)
    assert set(shared_frame["run_id"]) == {"job-1"}
    assert len(list((tmp_path / "shared").glob("*/tiny-shard-*-job-1.parquet"))) == 1


def test_a_shard_run_again_has_nothing_new(tiny, tmp_path, capsys):
    args = ("sweep", str(tiny), "--out", str(tmp_path), "--shard", "2/3")
    assert main_in_process(capsys, *args, "-q").returncode == 0
    again = main_in_process(capsys, *args)
    points = len(shard_points(load_config(tiny), Shard(1, 3)))
    assert again.returncode == 0 and "nothing new to measure" in again.stderr
    assert f"shard 2/3: {points} of 24 points" in again.stderr and f"{2 * points} already in this run" in again.stderr


def test_the_slurm_and_kubernetes_examples_run_8_shards_of_dsv32_decode_into_one_run():
    root = Path(__file__).resolve().parents[1] / "docs"
    slurm = (root / "slurm-dsv32-decode.sh").read_text()
    assert "#SBATCH --array=0-7" in slurm and "export TOPKBENCH_SHARD_COUNT=8" in slurm
    assert "topkbench sweep dsv32-decode" in slurm and "--devices all --shard auto --run-id" in slurm
    job = yaml.safe_load((root / "k8s-dsv32-decode.yaml").read_text())
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert spec["completionMode"] == "Indexed" and spec["completions"] == int(env["TOPKBENCH_SHARD_COUNT"]["value"]) == 8
    assert container["command"][:3] == ["topkbench", "sweep", "dsv32-decode"]
    assert container["command"][-4:] == ["--devices", "all", "--shard", "auto"]
    assert "job-name" in env["TOPKBENCH_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    # what each pod / array task computes: together every point once
    cfg = load_config("dsv32-decode")
    shards = [shard_points(cfg, parse_shard("auto", {"JOB_COMPLETION_INDEX": str(i), "TOPKBENCH_SHARD_COUNT": "8"}))
              for i in range(8)]
    assert sum(map(len, shards)) == cfg.num_points and frozenset().union(*shards) == frozenset(cfg.points())
    assert agreed_run_id(None, Shard(0, 8), True, {"SLURM_ARRAY_JOB_ID": "4242"}) == "slurm-4242"
