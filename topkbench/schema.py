"""The columns of a result row (docs/design.md section 7): one row per (point, implementation).

Everything that reads results (fit, report) relies on these names; bump SCHEMA_VERSION when a
column changes meaning or is added, and give older files' missing columns a default in
``ADDED_SINCE`` so that they still read.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

import pyarrow as pa

SCHEMA_VERSION = 2


class Status(str, Enum):
    OK = "ok"
    WRONG = "wrong"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


#: Columns that identify a measurement; a run holds each combination at most once.
KEY_COLUMNS = ("rows", "seq_len", "k", "length_mode", "distribution", "impl", "timing_mode", "l2")

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    # the point
    ("rows", pa.int64(), "rows of the score matrix (batch x next_n)"),
    ("seq_len", pa.int64(), "width: the longest row length"),
    ("k", pa.int64(), "indices kept per row"),
    ("length_mode", pa.string(), "fixed (all rows seq_len) or ragged (uniform in [0.8L, L])"),
    ("distribution", pa.string(), "score distribution (docs/design.md section 5)"),
    ("mean_length", pa.float64(), "mean valid length over the rows"),
    ("impl", pa.string(), "implementation name"),
    ("impl_device", pa.string(), "cpu or cuda"),
    ("timing_mode", pa.string(), "graph (CUDA-graph replay), eager, or host (CPU clock)"),
    ("l2", pa.string(), "hot or cold (L2 flushed before each sample)"),
    ("launches_per_sample", pa.int64(), "selections per timed sample (graph replays N launches)"),
    # outcome
    ("status", pa.string(), "ok, wrong, unsupported or error"),
    ("reason", pa.string(), "why the status is not ok (empty when ok)"),
    ("median_us", pa.float64(), "median time per selection, microseconds"),
    ("p20_us", pa.float64(), "20th percentile"),
    ("p80_us", pa.float64(), "80th percentile"),
    ("mean_us", pa.float64(), "mean"),
    ("min_us", pa.float64(), "minimum"),
    ("n_samples", pa.int64(), "timed samples kept"),
    ("samples_us", pa.list_(pa.float64()), "every timed sample, microseconds per selection"),
    ("rel_spread", pa.float64(), "(p80 - p20) / median"),
    ("noisy", pa.bool_(), "rel_spread stayed above the config's noise target"),
    # memory floor
    ("bytes", pa.int64(), "rows x mean length x 4 + rows x k x 4"),
    ("bandwidth_gbs", pa.float64(), "the run's measured copy bandwidth, GB/s (read + write)"),
    ("floor_us", pa.float64(), "bytes / bandwidth"),
    ("pct_of_floor", pa.float64(), "100 x floor_us / median_us"),
    ("read_us", pa.float64(), "the measured read floor: median time of one streaming read of the point's valid "
                              "scores, timed interleaved with the implementations in the same mode (GPU; NaN on "
                              "CPU)"),
    # provenance
    ("gpu_name", pa.string(), "device name (cpu: <processor> for CPU runs)"),
    ("gpu_slug", pa.string(), "file-system name of the device, the results/<gpu>/ folder"),
    ("sm_count", pa.int64(), "multiprocessors (CPU: logical cores)"),
    ("l2_bytes", pa.int64(), "L2 size in bytes (0 on CPU)"),
    ("driver", pa.string(), "driver version"),
    ("cuda_version", pa.string(), "CUDA runtime torch was built with"),
    ("cupy_version", pa.string(), "CuPy version, empty if absent"),
    ("torch_version", pa.string(), "torch version"),
    ("topkbench_version", pa.string(), "topkbench version"),
    ("git_sha", pa.string(), "commit of the topkbench checkout, empty if unknown"),
    ("git_dirty", pa.bool_(), "the checkout had uncommitted changes"),
    ("config_name", pa.string(), "sweep config name"),
    ("config_hash", pa.string(), "hash of the normalised config"),
    ("kernel_hash", pa.string(), "hash of the kernel source with its headers and defines (a plugin: of its file "
                                 "or distribution; empty for library code)"),
    ("impl_source", pa.string(), "where the implementation came from: builtin, or a plugin's entry point, path or "
                                 "module"),
    ("impl_version", pa.string(), "the implementation's version (topkbench's for built-ins, the plugin's otherwise)"),
    ("deterministic", pa.bool_(), "the implementation promises lowest-index ties and a fixed output order, and the "
                                  "check held it to that"),
    ("compute_capability", pa.string(), "CUDA compute capability, e.g. 9.0 (empty on CPU)"),
    ("device_index", pa.int64(), "CUDA device index the point ran on (-1 on CPU)"),
    ("device_uuid", pa.string(), "the GPU's UUID (empty on CPU)"),
    ("device_flag", pa.string(), "why this device's timings are suspect (e.g. it disagreed with the other GPUs "
                                 "of a multi-GPU sweep on the calibration points); empty when none"),
    ("seed", pa.int64(), "workload seed"),
    ("timestamp", pa.string(), "UTC ISO-8601 time the row was measured"),
    ("run_id", pa.string(), "the sweep run that measured it"),
    ("host", pa.string(), "host name"),
    ("schema_version", pa.int64(), "version of this schema"),
]

SCHEMA = pa.schema([pa.field(name, dtype, metadata={"doc": doc}) for name, dtype, doc in _FIELDS])
COLUMNS = tuple(SCHEMA.names)

#: Columns added after schema version 1, with the value a version-1 file is read with.
ADDED_SINCE: dict[int, dict[str, Any]] = {
    2: {"read_us": float("nan"), "impl_source": "builtin", "impl_version": "", "deterministic": False, "compute_capability": "",
        "device_index": -1, "device_uuid": "", "device_flag": ""},
}


class RowError(ValueError):
    """A result row that does not have exactly the schema's columns (a bug in the writer)."""


def build_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A result row in schema column order, refusing missing or unknown columns: every writer
    goes through here, so a new column cannot be forgotten by one of them."""
    missing = [c for c in COLUMNS if c not in values]
    unknown = [c for c in values if c not in SCHEMA.names]
    if missing or unknown:
        raise RowError(f"result row: missing columns {missing}, unknown columns {unknown}")
    return {c: values[c] for c in COLUMNS}
