"""The Parquet store: round trips, parts and compaction, resume, several GPUs, bad files."""

from __future__ import annotations

import time

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthetic import make_frame
from topkbench.errors import StoreError
from topkbench.schema import COLUMNS, KEY_COLUMNS, SCHEMA, SCHEMA_VERSION
from topkbench.store import PARTS_SUFFIX, RunStore, empty_frame, read_file, read_results, row_key, to_table


def rows_for(seq_lens, impls=("torch-cpu", "numpy"), **extra) -> list[dict]:
    records = [{"rows": 1, "seq_len": L, "k": 8, "impl": impl, "median_us": 10.0 + L / 100 + i, **extra}
               for L in seq_lens for i, impl in enumerate(impls)]
    records = [{**r, "samples_us": [r["median_us"], r["median_us"] * 1.01, r["median_us"] * 0.99]} for r in records]
    return make_frame(records).to_dict("records")


def test_to_table_round_trip(tmp_path):
    rows = rows_for([64, 128], status="ok")
    rows.append({**rows[0], "impl": "broken", "status": "wrong", "reason": "row 0: duplicate indices",
                 "median_us": float("nan"), "samples_us": [], "n_samples": 0})
    table = to_table(rows)
    assert table.schema.equals(SCHEMA)
    path = tmp_path / "r.parquet"
    pq.write_table(table, path)
    frame = read_file(path)
    assert list(frame.columns) == [*COLUMNS, "source_file"]
    assert len(frame) == len(rows)
    for got, want in zip(frame.to_dict("records"), rows):
        for column in COLUMNS:
            g, w = got[column], want[column]
            if column == "samples_us":
                assert list(g) == pytest.approx(list(w))
            elif isinstance(w, float) and w != w:
                assert g != g, column
            else:
                assert g == w, column
    assert set(frame["source_file"]) == {str(path)}


def test_to_table_rejects_incomplete_rows():
    row = rows_for([64])[0]
    del row["median_us"]
    with pytest.raises(ValueError, match="median_us"):
        to_table([row])


def test_append_and_done_keys(tmp_path):
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=True)
    assert not store.exists and store.read().empty and store.done_keys() == set()
    first = rows_for([64])
    second = rows_for([128])
    p1 = store.append(first)
    p2 = store.append(second)
    assert store.append([]) is None
    assert p1.parent == store.parts_dir and p2.parent == store.parts_dir and p1 != p2
    assert store.exists
    assert store.done_keys() == {row_key(r) for r in first + second}
    assert len(store.read()) == 4
    assert not [p for p in store.parts_dir.iterdir() if ".tmp" in p.name]  # no temporary files left


def test_finalize_compacts_parts(tmp_path):
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=False)
    for L in (256, 64, 128):
        store.append(rows_for([L]))
    path = store.finalize()
    assert path == store.final_path and path.exists()
    assert not store.parts_dir.exists()
    frame = read_results([path])
    assert len(frame) == 6
    assert list(frame["seq_len"]) == sorted(frame["seq_len"])  # sorted by key
    assert pq.read_schema(path).equals(SCHEMA, check_metadata=False)
    # finalize is idempotent, and appending after it then finalizing merges
    assert store.finalize() == path
    store.append(rows_for([512]))
    store.finalize()
    assert len(read_results([path])) == 8 and not store.parts_dir.exists()
    assert store.finalize() == path


def test_finalize_drops_a_row_measured_twice(tmp_path):
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=False)
    store.append(rows_for([64]))
    store.finalize()
    dup = rows_for([64])
    dup[0]["median_us"] = 999.0
    store.append(dup)  # crash between compaction and clean-up: same keys in final file and a part
    store.finalize()
    frame = read_results([store.final_path])
    assert len(frame) == 2 and 999.0 not in set(frame["median_us"])


def test_empty_run_finalize(tmp_path):
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=False)
    assert store.finalize() is None
    assert empty_frame().columns.tolist() == list(COLUMNS)


def test_resume_picks_newest_run_of_same_config(tmp_path):
    h = "abcdef0123456789"
    directory = tmp_path / "cpu-test"
    directory.mkdir()
    # the newest is the run written last, whatever its id (--run-id and scheduler ids do not sort)
    for age, run_id in ((300, "20250101T000000-aaaa"), (100, "slurm-17"), (200, "20260101T000000-cccc")):
        written = RunStore(directory, f"tiny-{h[:8]}-{run_id}", run_id).append(rows_for([64]))
        os.utime(written.parent, (time.time() - age, time.time() - age))
    RunStore(directory, "tiny-ffffffff-20270101T000000-dddd", "20270101T000000-dddd").append(rows_for([64]))
    RunStore(directory, f"other-{h[:8]}-20280101T000000-eeee", "x").append(rows_for([64]))
    store = RunStore.open(tmp_path, "cpu-test", "tiny", h, resume=True)
    assert store.run_id == "slurm-17"
    assert store.stem == f"tiny-{h[:8]}-slurm-17"
    assert len(store.done_keys()) == 2
    # a finalized run (no parts folder left) is found too
    store.finalize()
    again = RunStore.open(tmp_path, "cpu-test", "tiny", h, resume=True)
    assert again.run_id == store.run_id and again.final_path.exists()
    assert not (directory / f"{store.stem}{PARTS_SUFFIX}").exists()
    fresh = RunStore.open(tmp_path, "cpu-test", "tiny", h, resume=False)
    assert fresh.run_id not in {"20260301T120000-bbbb"} and not fresh.exists


def test_read_results_over_two_gpu_folders(tmp_path):
    for slug, name in (("nvidia-h100", "NVIDIA H100"), ("nvidia-h200", "NVIDIA H200")):
        store = RunStore.open(tmp_path, slug, "tiny", "abcdef0123456789", resume=False)
        store.append(rows_for([64, 128], gpu_name=name, gpu_slug=slug, run_id=f"run-{slug}"))
        store.finalize()
    frame = read_results([tmp_path])
    assert len(frame) == 8
    assert set(frame["gpu_slug"]) == {"nvidia-h100", "nvidia-h200"}
    assert frame["source_file"].nunique() == 2
    both = read_results([tmp_path / "nvidia-h100", tmp_path / "nvidia-h200"])
    assert len(both) == 8


def test_read_results_includes_parts_and_skips_hidden(tmp_path):
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=False)
    store.append(rows_for([64]))
    (store.parts_dir / ".part-x.parquet.tmp-1").write_bytes(b"half a file")
    (tmp_path / "cpu-test" / ".hidden.parquet").write_bytes(b"junk")
    assert len(read_results([tmp_path])) == 2


def test_corrupt_parquet_is_store_error_naming_file(tmp_path):
    path = tmp_path / "gpu" / "junk.parquet"
    path.parent.mkdir()
    path.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError) as info:
        read_results([tmp_path])
    assert str(path) in info.value.message and "\n" not in info.value.message
    truncated = tmp_path / "gpu" / "trunc.parquet"
    good = tmp_path / "good.parquet"
    pq.write_table(to_table(rows_for([64])), good)
    truncated.write_bytes(good.read_bytes()[:-40])
    path.unlink()
    with pytest.raises(StoreError, match="trunc.parquet"):
        read_results([truncated])


def test_foreign_parquet_is_store_error(tmp_path):
    path = tmp_path / "pandas.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(path)
    with pytest.raises(StoreError, match="not a topkbench result file") as info:
        read_results([path])
    assert str(path) in info.value.message


def test_missing_columns_is_store_error(tmp_path):
    path = tmp_path / "partial.parquet"
    pd.DataFrame({"schema_version": [SCHEMA_VERSION], "rows": [1]}).to_parquet(path)
    with pytest.raises(StoreError, match="missing columns"):
        read_results([path])


def test_unsupported_schema_version_is_store_error(tmp_path):
    path = tmp_path / "future.parquet"
    rows = rows_for([64], schema_version=SCHEMA_VERSION + 1)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    with pytest.raises(StoreError, match="schema version") as info:
        read_results([path])
    assert str(path) in info.value.message and info.value.hint


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(StoreError, match="no such"):
        read_results([tmp_path / "nope"])
    with pytest.raises(StoreError, match="no result files"):
        read_results([tmp_path])


def test_key_columns_are_schema_columns():
    assert set(KEY_COLUMNS) <= set(COLUMNS)
    assert "schema_version" in COLUMNS and "samples_us" in COLUMNS


def test_done_keys_match_the_sweep_measurement_keys(tmp_path):
    """done_keys gives plain tuples that compare equal to the tuples the sweep plans with."""
    store = RunStore.open(tmp_path, "gpu", "cfg", "0123456789abcdef", resume=True)
    rows = rows_for([100, 200])
    store.append(rows)
    keys = store.done_keys()
    assert keys == {row_key(r) for r in rows}
    assert all(isinstance(key, tuple) and len(key) == len(KEY_COLUMNS) for key in keys)


def test_compact_results_script_merges_an_interrupted_runs_parts(tmp_path):
    # scripts/compact_results.py: what scripts/gpu_check.sh's compact stage runs after a sweep that
    # was stopped, so that the run comes back from the GPU machine as one file.
    from script_module import load_script

    module = load_script("compact_results")
    store = RunStore.open(tmp_path, "cpu-test", "tiny", "abcdef0123456789", resume=False)
    store.append(rows_for([64]))
    store.append(rows_for([512]))
    assert store.parts_dir.is_dir() and not store.final_path.exists()
    assert module.main([str(tmp_path)]) == 0
    assert not store.parts_dir.exists()
    merged = read_file(store.final_path)
    assert sorted(merged.seq_len.unique()) == [64, 512] and len(merged) == 4
