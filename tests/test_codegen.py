"""The generated module: standalone, faithful to the fit, and byte-identical when regenerated."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthetic import make_frame
from test_fit import planted
from topkbench import __version__, codegen, dispatch
from topkbench.evaluate import evaluate
from topkbench.fit import fit
from topkbench.results import select_points
from topkbench.schema import COLUMNS, SCHEMA
from topkbench.store import read_results

# Loads the module from a file with topkbench made unimportable, then prints select() for the
# queries given as JSON on stdin.
RUNNER = r"""
import importlib.abc, importlib.util, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "topkbench":
            raise ImportError("topkbench must not be imported by a generated module")
        return None

sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("fitted", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
queries = json.load(sys.stdin)
print(json.dumps({"picks": [module.select(*q) for q in queries], "thresholds": module.THRESHOLDS,
                  "gpu": module.GPU_SLUG}))
"""


def write_results(frame, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False), path)
    return path


def fitted(tmp_path: Path, records=None, name="run-a.parquet"):
    records = records or planted(run_id="20260101T000000-abcd", kernel_hash="")
    for rec in records:
        if rec["impl"] == "per_row":
            rec["kernel_hash"] = "feedbeef1234"
    path = write_results(make_frame(records), tmp_path / name)
    points, prov = select_points(read_results([path]))
    result = fit(points, prov)
    return result, evaluate(result)


def run_isolated(module_path: Path, queries, cwd: Path) -> dict:
    script = cwd / "runner.py"
    script.write_text(RUNNER)
    proc = subprocess.run([sys.executable, "-I", str(script), str(module_path)], input=json.dumps(queries),
                          capture_output=True, text=True, cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_module_runs_without_topkbench_and_agrees_with_the_fit(tmp_path):
    result, evaluation = fitted(tmp_path)
    module = tmp_path / "gen" / "synthetic_gpu.py"
    module.parent.mkdir()
    source = codegen.render_module(result, evaluation)
    module.write_text(source)
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]

    training = [[r, s, k] for k, r, s in result.points.cells]
    outside = [[0, 1, 1], [10**6, 10**8, 10**6], [1, 10**8, 300], [10**6, 1, 300]]
    out = run_isolated(module, training + outside, cwd=module.parent)
    assert out["picks"][: len(training)] == result.choices()
    # clamped to the nearest measured band
    assert out["picks"][len(training):] == [result.select(*q) for q in outside]
    assert out["picks"][len(training):] == ["per_row", "large_context", "large_context", "per_row"]
    assert json.loads(json.dumps(result.thresholds.to_data())) == out["thresholds"]
    assert out["gpu"] == "synthetic-gpu"
    # what impl="auto" loads answers the same
    loaded = dispatch.load_heuristic_module(module)
    assert [loaded.select(*q) for q in training + outside] == out["picks"]
    assert loaded.DEVICE == {"name": "Synthetic GPU", "slug": "synthetic-gpu", "compute_capability": "9.0",
                             "sm_count": 132, "l2_bytes": 50 * 2**20, "bandwidth_gbs": 3000.0}


def test_banner_names_the_data_and_the_figures(tmp_path):
    result, evaluation = fitted(tmp_path)
    source = codegen.render_module(result, evaluation)
    assert source.startswith(f"# {codegen.BANNER}\n")
    doc = ast.get_docstring(ast.parse(source))
    assert "run-a.parquet: 20260101T000000-abcd" in doc
    assert str(tmp_path) not in source  # basenames only
    assert "Device: Synthetic GPU (compute capability 9.0, 132 SMs, 3000 GB/s) (slug synthetic-gpu)" in doc
    assert "per_row feedbeef1234" in doc
    assert f"fitted with topkbench {__version__}" in doc
    assert "fit, held-out seq_len" in doc and "always per_row" in doc and "rule proposal" in doc
    assert "nearest measured band" in doc and "worst regret" in doc


def test_regeneration_is_byte_identical(tmp_path):
    first, eval_first = fitted(tmp_path)
    # Same data in another order and another folder: the same bytes.
    records = planted(run_id="20260101T000000-abcd")[::-1]
    other = tmp_path / "again"
    other.mkdir()
    second, eval_second = fitted(other, records)
    for render in (codegen.render_module, codegen.render_json, codegen.render_markdown):
        assert render(first, eval_first) == render(second, eval_second)


def test_json_and_markdown_carry_thresholds_and_figures(tmp_path):
    result, evaluation = fitted(tmp_path)
    data = json.loads(codegen.render_json(result, evaluation))
    assert data["gpu_slug"] == "synthetic-gpu"
    assert data["combine"] == "worst regret over length modes and distributions"
    assert len(data["cells"]) == len(result.points.cells)
    labels = [row["label"] for row in data["evaluation"]]
    assert labels[:5] == ["fit, held-out seq_len", "fit, held-out rows", "fit, held-out random 20%", "fit, in-sample",
                          "per-cell best, in-sample"]
    assert data["complexity"] == {"k_bands": 1, "row_bands": 2, "cuts": 1}
    chosen = [c for c in data["model_selection"] if (c["k_bands"], c["row_bands"], c["cuts"]) == (1, 2, 1)]
    assert chosen[0]["score"] == min(c["score"] for c in data["model_selection"])
    md = codegen.render_markdown(result, evaluation)
    assert "| any k (fitted at k = 256, 2048) | rows < 8 | seq_len < 5800 | per_row |" in md
    assert "| any k (fitted at k = 256, 2048) | rows >= 8 | seq_len >= 2900 | large_context |" in md
    assert "| fit, held-out random 20% | 1.0146 | 1.5000 | 96.4% | 0/56 | random 20% held out (5 folds) |" in md


def test_infinite_figures_stay_valid_python(tmp_path):
    records = planted(ks=(64,))
    for rec in records:
        if rec["impl"] == "large_context" and rec["seq_len"] == 1024:
            rec.update(status="unsupported", reason="too short")
    result, evaluation = fitted(tmp_path, records)
    assert evaluation.get("always large_context").figures.geomean == float("inf")
    source = codegen.render_module(result, evaluation)
    namespace: dict = {}
    exec(compile(source, "gen.py", "exec"), namespace)
    assert namespace["FIGURES"]["always large_context"]["max"] == float("inf")
