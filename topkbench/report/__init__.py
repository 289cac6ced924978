"""Self-contained HTML reports from stored results (docs/design.md section 2): read Parquet, never re-run.

plotly is an optional dependency (the 'report' extra); it is imported only when a report is built.
"""

from topkbench.report.build import build_report, render

__all__ = ["build_report", "render"]
