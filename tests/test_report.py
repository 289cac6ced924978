"""The HTML report: built from synthetic GPU-shaped frames and from the committed real CPU fixtures."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly", reason="the report needs plotly (pip install 'topkbench[report]')")

from synthetic import make_frame  # noqa: E402

from topkbench import results  # noqa: E402
from topkbench.errors import ReportError  # noqa: E402
from topkbench.report import build_report, render  # noqa: E402
from topkbench.report import data as D  # noqa: E402
from topkbench.report import figures as F  # noqa: E402
from topkbench.report.fmt import sig  # noqa: E402
from topkbench.report.selectors import hand_rules, load_heuristic  # noqa: E402
from topkbench.store import read_results, to_table  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
#: A wrong kernel's timing, distinctive so that the test can see it is never drawn.
WRONG_FAST_US = 0.0314159265

ROWS = (1, 4, 16, 64, 128, 256)
SEQ = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


def _model(rows: int, seq: int) -> dict[str, float]:
    """Latency shapes like docs/design.md section 4: per_row on short rows, large_context with many rows
    of long ones, radix on few very long rows, torch behind."""
    return {
        "torch": 10 + 0.00005 * rows * seq + 0.0003 * seq,
        "per_row": 4 + 0.0000625 * rows * seq + 0.0002 * seq,
        "large_context": 6 + 0.0000375 * rows * seq + 0.00012 * seq,
        "radix": 9 + 0.00006 * rows * seq + 0.00002 * seq,
    }


def gpu_frame() -> pd.DataFrame:
    """A GPU-shaped dataset with a wrong, an unsupported and a noisy point planted."""
    records = []
    for k in (512, 2048):
        for rows in ROWS:
            for seq in SEQ:
                for impl, us in _model(rows, seq).items():
                    rec = dict(rows=rows, seq_len=seq, k=k, impl=impl, median_us=us,
                               kernel_hash="" if impl == "torch" else f"{impl}-hash0001")
                    if impl == "radix" and (k, rows, seq) == (2048, 256, 131072):
                        rec.update(status="wrong", reason="dropped 3 candidates at the k-th value")
                    if impl == "large_context" and (k, rows, seq) == (512, 1, 131072):
                        rec.update(status="unsupported", reason="k below 1024 not compiled")
                    if impl == "per_row" and (rows, seq) == (16, 4096):
                        rec.update(noisy=True, rel_spread=0.31, p20_us=us * 0.85, p80_us=us * 1.16)
                    records.append(rec)
    frame = make_frame(records)
    # A wrong kernel can be very fast; its timing is stored and must never reach a figure.
    frame.loc[frame["status"] == "wrong", "median_us"] = WRONG_FAST_US
    return frame


def without_bundle(html: str) -> str:
    """The page minus the plotly.js library text (which has its own URLs and numbers)."""
    start = html.index("* plotly.js v")
    return html[:start] + html[html.index("</script>", start):]


class Rule:
    def __init__(self, name, fn):
        self.name, self.description, self._fn = name, f"test rule {name}", fn

    def select(self, num_rows, max_seq_len, k):
        return self._fn(num_rows, max_seq_len, k)


def test_sig_rounds_to_three_significant_digits():
    assert [sig(v) for v in (12345.6, 123.456, 1.23456, 0.0123456, 999.6, 0.99951, 0.0)] == \
        ["12300", "123", "1.23", "0.0123", "1000", "1.00", "0"]
    assert sig(float("nan")) == "-"


def test_winners_and_margins_on_planted_times():
    frame = make_frame([
        dict(rows=1, seq_len=1024, k=8, impl="a", median_us=10.0),
        dict(rows=1, seq_len=1024, k=8, impl="b", median_us=15.0),
        dict(rows=1, seq_len=4096, k=8, impl="a", median_us=40.0),
        dict(rows=1, seq_len=4096, k=8, impl="b", median_us=20.0),
        dict(rows=1, seq_len=8192, k=8, impl="a", median_us=80.0),
        dict(rows=1, seq_len=8192, k=8, impl="b", status="wrong", reason="bad"),
    ])
    (ds,) = D.split_datasets(frame)
    pts = ds.points.set_index("seq_len")
    assert list(pts["winner"]) == ["a", "b", "a"]
    assert pts.at[1024, "margin"] == pytest.approx(0.5)
    assert pts.at[4096, "margin"] == pytest.approx(1.0)
    assert pts.at[8192, "runner_up"] == ""  # b's wrong result is no competitor
    (rules,) = D.rule_tables(frame, [])
    summary = D.rule_summary(rules).set_index("rule")
    assert summary.at["always a", "geomean_regret"] == pytest.approx(2 ** (1 / 3))
    # b is unavailable where it was wrong: infinite regret, counted, as in the fit's figures
    assert summary.at["always b", "unavailable"] == 1 and math.isinf(summary.at["always b", "max_regret"])


def test_the_report_and_the_fit_summary_give_the_same_regret(tmp_path):
    """One table behind both: newest-wins, worst over length modes and distributions, unavailable = inf."""
    from topkbench import codegen
    from topkbench.evaluate import evaluate
    from topkbench.fit import fit
    from topkbench.results import select_points

    old = gpu_frame()
    old["run_id"], old["timestamp"] = "20251231T000000-old0", "2025-12-31T00:00:00+00:00"
    old["median_us"] = old["median_us"] * 3.0  # superseded: must count nowhere
    ragged = gpu_frame()
    ragged["length_mode"] = "ragged"
    ragged.loc[ragged["impl"] == "radix", "median_us"] *= 1.3  # the worst case differs from the fixed one
    frame = pd.concat([old, gpu_frame(), ragged], ignore_index=True)

    points, provenance = select_points(frame)
    result = fit(points, provenance)
    evaluation = evaluate(result)
    fit_json = json.loads(codegen.render_json(result, evaluation))
    written = {row["label"]: row["figures"] for row in fit_json["evaluation"]}
    module = tmp_path / "synthetic_gpu.py"
    module.write_text(codegen.render_module(result, evaluation))

    (rules,) = D.rule_tables(results.newest(frame).frame, hand_rules())
    summary = D.rule_summary(rules).set_index("rule")
    for label in ("rule proposal", "rule batch128", "always radix", "always torch", "always per_row"):
        for figure, column in (("geomean", "geomean_regret"), ("max", "max_regret"), ("within_5pct", "within_5pct"),
                               ("unavailable", "unavailable")):
            # JSON spells an infinite figure "inf"
            assert summary.at[label, column] == pytest.approx(float(written[label][figure]), abs=1e-6), label
    # the planted wrong radix and unsupported large_context results: rules picking them are unavailable there
    assert summary.at["rule proposal", "unavailable"] == 1 and math.isinf(summary.at["rule proposal", "geomean_regret"])
    assert 1.0 < summary.at["always per_row", "geomean_regret"] < math.inf  # finite figures compared too

    html = render(frame, heuristic=load_heuristic(module))
    # the fitted module on the data it was fitted to: in-sample, and labelled so
    in_sample = written["fit, in-sample"]
    assert "fitted module, in-sample" in html and sig(in_sample["geomean"]) in html
    # its quality is the held-out figures it recorded, shown as such
    for label in ("fit, held-out seq_len", "fit, held-out rows", "fit, held-out random 20%"):
        assert label in html
    assert "recorded by fit-heuristic on the data it was fitted to" in html
    assert "runs overlap" in html and "20251231T000000-old0" in html


def test_speedup_is_baseline_over_fastest_other():
    frame = make_frame([dict(rows=2, seq_len=4096, k=64, impl="torch", median_us=30.0),
                        dict(rows=2, seq_len=4096, k=64, impl="per_row", median_us=10.0),
                        dict(rows=2, seq_len=4096, k=64, impl="radix", median_us=15.0)])
    (ds,) = D.split_datasets(frame)
    table = D.speedup(ds)
    assert ds.baseline == "torch"
    assert table.loc[0, "best_impl"] == "per_row" and table.loc[0, "speedup"] == pytest.approx(3.0)


def test_gpu_report_embeds_plotly_once_and_draws_rules():
    html = render(gpu_frame(), rules=[Rule("proposal", lambda r, s, k: "radix" if s >= 65536 else "per_row")])
    assert html.count("* plotly.js v") == 1  # the bundle's licence banner
    assert "cdn.plot.ly" not in without_bundle(html) and not re.search(r"<script[^>]+src=", html)
    assert html.count('class="plotly-graph-div') == html.count("Plotly.newPlot") > 5
    assert '"name":"rule: proposal"' in html
    for section in ("Latency vs seq_len", "Winner map", "Speedup over torch", "memory floor",
                    "Dispatch rules: Synthetic GPU - graph/hot L2", "Timing noise", "Provenance",
                    "large_context-hash0001"):
        assert section in html


def test_failed_points_are_listed_not_plotted():
    frame = gpu_frame()
    html = without_bundle(render(frame, rules=[]))
    assert "dropped 3 candidates at the k-th value" in html and "k below 1024 not compiled" in html
    assert repr(WRONG_FAST_US) not in html
    datasets = D.split_datasets(frame)
    (ds,) = datasets
    assert ds.points.set_index(["rows", "seq_len", "k"]).at[(256, 131072, 2048), "winner"] != "radix"
    fig = F.latency(ds, 2048)
    for trace in fig.data:
        if trace.name == "radix":
            assert WRONG_FAST_US not in list(trace.y)
    assert len(D.failures(frame)) == 2


def test_noisy_points_are_counted_and_listed():
    html = render(gpu_frame(), rules=[])
    assert "2 of 334 timings are flagged noisy" in html
    assert "per_row (noisy)" in html


def test_report_from_real_cpu_fixtures(tmp_path):
    out = build_report([FIXTURES], tmp_path / "r" / "report.html")
    html = out.read_text()
    frame = read_results([FIXTURES])
    assert set(frame["impl"]) == {"torch-cpu", "numpy"}
    assert html.count("* plotly.js v") == 1
    assert "Speedup over torch-cpu" in html
    # Every (length mode, distribution) of the fixture is its own section.
    groups = frame.groupby(["length_mode", "distribution"]).ngroups
    assert html.count("<h2 id=\"ds") == groups
    assert str(frame["run_id"].iloc[0]) in html and str(frame["host"].iloc[0]) in html
    # The hand rules pick GPU kernels that a CPU run never measures: reported, not fatal.
    assert "large_context, per_row" in html or "per_row, large_context" in html


def test_no_input_and_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(ReportError, match="no result files given"):
        build_report([], tmp_path / "r.html")
    with pytest.raises(ReportError, match="no result files found"):
        build_report([tmp_path], tmp_path / "r.html")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(ReportError, match="not a readable Parquet file") as info:
        build_report([junk], tmp_path / "r.html")
    assert "\n" not in info.value.message
    assert not (tmp_path / "r.html").exists()


def test_no_ok_points_is_an_error(tmp_path):
    frame = make_frame([dict(rows=1, seq_len=1024, k=8, impl="radix", median_us=1.0, status="error",
                             reason="illegal address"),
                        dict(rows=1, seq_len=1024, k=8, impl="per_row", median_us=1.0, status="unsupported",
                             reason="k too large")])
    path = tmp_path / "bad.parquet"
    import pyarrow.parquet as pq

    pq.write_table(to_table(frame.to_dict("records")), path)
    with pytest.raises(ReportError, match=r"no ok timings to report \(1 error, 1 unsupported\)"):
        build_report([path], tmp_path / "r.html")


def _write_module(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "heuristic_test.py"
    path.write_text('"""generated by topkbench fit-heuristic, do not edit"""\n' + body)
    return path


def test_matching_heuristic_is_drawn_and_judged(tmp_path):
    module = _write_module(tmp_path, "GPU_NAME = 'Synthetic GPU'\n"
                           "def select(num_rows, max_seq_len, k):\n"
                           "    return 'per_row' if max_seq_len < 16384 else 'large_context'\n")
    html = render(gpu_frame(), heuristic=load_heuristic(module), rules=[])
    assert '"name":"rule: fitted (heuristic_test.py)"' in html
    assert "fitted module, on these results" in html  # it records no source runs: not in-sample


@pytest.mark.parametrize("body, message", [
    ("GPU_NAME = 'NVIDIA H100 80GB HBM3'\ndef select(r, s, k):\n    return 'per_row'\n",
     "fitted on 'NVIDIA H100 80GB HBM3' but the results are from 'Synthetic GPU'"),
    ("GPU_NAME = 'Synthetic GPU'\ndef select(r, s, k):\n    return 'air_topk' if s > 8192 else 'per_row'\n",
     "picks air_topk, not measured"),
    ("THRESHOLDS = ()\n", "no select"),
    ("import nonexistent_module_xyz\n", "cannot load the heuristic module"),
])
def test_heuristic_that_does_not_match_the_data_is_an_error(tmp_path, body, message):
    with pytest.raises(ReportError, match=re.escape(message)) as info:
        render(gpu_frame(), heuristic=load_heuristic(_write_module(tmp_path, body)), rules=[])
    assert "\n" not in info.value.message


def test_generated_heuristic_module_from_the_real_fit(tmp_path):
    from topkbench import codegen
    from topkbench.fit import fit
    from topkbench.results import select_points

    frame = read_results([FIXTURES])
    points, provenance = select_points(frame)
    module = tmp_path / "cpu_heuristic.py"
    module.write_text(codegen.render_module(fit(points, provenance)))
    heuristic = load_heuristic(module)
    assert heuristic.gpu_name == frame["gpu_name"].iloc[0]
    out = build_report([FIXTURES], tmp_path / "report.html", heuristic=module)
    assert "fitted (cpu_heuristic.py)" in out.read_text()
    with pytest.raises(ReportError, match="was fitted on 'cpu: "):
        render(gpu_frame(), heuristic=heuristic, rules=[])


def test_hand_rules_come_from_topkbench_rules():
    from topkbench import rules

    loaded = {r.name: r for r in hand_rules()}
    assert set(loaded) == set(rules.RULES)
    assert loaded["proposal"].select(1, 131072, 2048) == "radix"
    html = render(gpu_frame())
    assert '"name":"rule: proposal"' in html and '"name":"rule: batch128"' in html


def test_missing_plotly_is_a_report_error_with_a_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ReportError, match="plotly is not installed") as info:
        F.plotly_modules()
    assert "topkbench[report]" in info.value.hint


def test_cli_report_and_its_errors(tmp_path, capsys):
    from topkbench.cli import main

    out = tmp_path / "cli.html"
    main(["report", str(FIXTURES), "--out", str(out)])
    assert out.exists() and "report:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as failed:
        main(["report", str(tmp_path / "missing.parquet"), "--out", str(out)])
    err = capsys.readouterr().err
    assert failed.value.code == 2
    assert err.startswith("error: no such result file or folder") and "Traceback" not in err
    with pytest.raises(SystemExit) as failed:
        main(["report", "--out", str(out)])
    assert failed.value.code == 2 and "no result files given" in capsys.readouterr().err


def test_shown_numbers_are_rounded_and_hover_is_exact():
    frame = make_frame([dict(rows=1, seq_len=1024, k=8, impl="torch", median_us=12.3456789),
                        dict(rows=1, seq_len=1024, k=8, impl="per_row", median_us=4.56789012)])
    (ds,) = D.split_datasets(frame)
    (heat,) = F.speedup(ds).data
    assert heat.text[0][0] == "2.70x"
    assert repr(12.3456789 / 4.56789012) in heat.customdata[0][0] and "12.3456789" in heat.customdata[0][0]
    line = next(t for t in F.latency(ds, 8).data if t.name == "torch")
    assert line.customdata[0][0] == "12.3456789"


def test_hot_l2_graph_datasets_come_first():
    records = [dict(rows=1, seq_len=4096, k=64, impl=impl, median_us=t, l2=l2, length_mode=mode)
               for l2 in ("cold", "hot") for mode in ("ragged", "fixed") for impl, t in (("a", 1.0), ("b", 2.0))]
    order = [(d.key["l2"], d.key["length_mode"]) for d in D.split_datasets(make_frame(records))]
    assert order == [("hot", "fixed"), ("hot", "ragged"), ("cold", "fixed"), ("cold", "ragged")]


def test_out_that_cannot_be_written_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from topkbench.cli import main

    folder = tmp_path / "reports"
    folder.mkdir()
    with pytest.raises(ReportError, match="is a folder; give the file to write"):
        build_report([FIXTURES], folder)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match="is a file, not a folder"):
        build_report([FIXTURES], blocker / "report.html")
    for out in (folder, blocker / "report.html"):
        with pytest.raises(SystemExit) as failed:
            main(["report", str(FIXTURES), "--out", str(out)])
        err = capsys.readouterr().err
        assert failed.value.code == 2 and err.startswith("error: --out ") and "Traceback" not in err
    # a failure while writing: one line, and no temporary file left behind
    monkeypatch.setattr("os.replace", lambda a, b: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(ReportError, match="cannot write \\(No space left on device\\)") as info:
        build_report([FIXTURES], folder / "report.html")
    assert "\n" not in info.value.message
    assert list(folder.iterdir()) == []
