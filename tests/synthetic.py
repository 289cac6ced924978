"""Schema-complete synthetic result frames for unit tests of fit and report.

Synthetic data is for planted facts (a crossover at a known seq_len); tests that stand for real
behaviour use the committed fixtures of real measurements in tests/fixtures/.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from topkbench.schema import COLUMNS, SCHEMA_VERSION

DEFAULTS: dict[str, Any] = {
    "length_mode": "fixed",
    "distribution": "normal",
    "impl_device": "cuda",
    "timing_mode": "graph",
    "l2": "hot",
    "launches_per_sample": 20,
    "status": "ok",
    "reason": "",
    "noisy": False,
    "bandwidth_gbs": 3000.0,
    "gpu_name": "Synthetic GPU",
    "gpu_slug": "synthetic-gpu",
    "sm_count": 132,
    "l2_bytes": 50 * 2**20,
    "driver": "0",
    "cuda_version": "13.0",
    "cupy_version": "",
    "torch_version": "0",
    "topkbench_version": "0.1.0",
    "git_sha": "",
    "git_dirty": False,
    "config_name": "synthetic",
    "config_hash": "0" * 16,
    "kernel_hash": "",
    "read_us": float("nan"),
    "impl_source": "builtin",
    "impl_version": "0.1.0",
    "deterministic": False,
    "compute_capability": "9.0",
    "device_index": 0,
    "device_uuid": "",
    "device_flag": "",
    "seed": 0,
    "timestamp": "2026-01-01T00:00:00+00:00",
    "run_id": "synthetic-run",
    "host": "test",
    "schema_version": SCHEMA_VERSION,
}


def make_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from records giving at least rows, seq_len, k, impl and median_us."""
    rows = []
    for record in records:
        row = {**DEFAULTS, **record}
        median = float(row["median_us"]) if row["status"] == "ok" else float("nan")
        row.setdefault("p20_us", median * 0.98)
        row.setdefault("p80_us", median * 1.02)
        row.setdefault("mean_us", median)
        row.setdefault("min_us", median * 0.97)
        row.setdefault("samples_us", [] if np.isnan(median) else [median] * 5)
        row.setdefault("n_samples", len(row["samples_us"]))
        row.setdefault("rel_spread", 0.04)
        row["median_us"] = median
        row.setdefault("mean_length", float(row["seq_len"]))
        row.setdefault("bytes", int(row["rows"] * row["mean_length"] * 4 + row["rows"] * row["k"] * 4))
        row.setdefault("floor_us", row["bytes"] / (row["bandwidth_gbs"] * 1e3))
        row.setdefault("pct_of_floor", 100.0 * row["floor_us"] / median if median == median else float("nan"))
        rows.append({c: row[c] for c in COLUMNS})
    return pd.DataFrame(rows, columns=list(COLUMNS))
