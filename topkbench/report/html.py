"""Page assembly: one self-contained HTML file, plotly.js embedded once in the head.

The page records its own health for anyone who opens it (and for the browser test): script
errors are caught from the very first script on and shown in a banner, and once the page has
loaded a small script writes into ``#render-status`` how many figures drew SVG content.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from topkbench.report.fmt import sig

#: Tables longer than this are cut, with a line saying how many rows were left out.
MAX_TABLE_ROWS = 400

_ERROR_HOOK = """
(function () {
  var errors = [];
  window.__topkbenchErrors = errors;
  function show() {
    var el = document.getElementById('report-errors');
    if (el && errors.length) { el.hidden = false; el.textContent = 'Script errors in this report: ' + errors.join(' | '); }
  }
  function record(text) { errors.push(String(text)); show(); }
  window.addEventListener('error', function (e) {
    record((e.message || 'error') + ' (' + (e.filename || '?') + ':' + (e.lineno || '?') + ')');
  });
  window.addEventListener('unhandledrejection', function (e) {
    record('unhandled promise rejection: ' + ((e.reason && e.reason.message) || e.reason));
  });
  var original = console.error;
  console.error = function () { record(Array.prototype.join.call(arguments, ' ')); return original.apply(console, arguments); };
  document.addEventListener('DOMContentLoaded', show);
})();
"""

# Counted after 'load' plus a pause, so that figures drawn asynchronously have finished: a figure
# counts as rendered when its SVG holds drawn layers and plotly filled in its trace data.
_RENDER_CHECK = """
window.addEventListener('load', function () {
  setTimeout(function () {
    var plots = document.querySelectorAll('.js-plotly-plot');
    var rendered = 0;
    plots.forEach(function (p) {
      var svg = p.querySelector('.main-svg');
      var drawn = svg && svg.childElementCount > 0 && p.querySelectorAll('.main-svg .trace, .main-svg .hm image').length > 0;
      if (drawn && p._fullData && p._fullData.length > 0) { rendered += 1; }
    });
    var status = document.getElementById('render-status');
    status.setAttribute('data-plots', String(plots.length));
    status.setAttribute('data-rendered', String(rendered));
    status.setAttribute('data-errors', String((window.__topkbenchErrors || []).length));
    status.setAttribute('data-done', 'yes');
  }, 300);
});
"""

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 48px; }
h3 { margin-top: 28px; } p.note { color: #555; max-width: 1100px; }
nav li { margin: 3px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fff0f0; }
#report-errors { background: #b00020; color: white; padding: 8px 12px; font-weight: bold; }
.figure { margin: 12px 0 24px; }
.summary td:first-child { font-weight: 600; }
"""


@dataclass
class Column:
    """A table column: source field, header, and how to show a value (exact value in the tooltip)."""

    key: str
    label: str
    show: Callable[[Any], str] = str
    numeric: bool = False


def num(value: Any) -> str:
    return sig(value)


def _cell(column: Column, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"<td{' class=num' if column.numeric else ''}>-</td>"
    shown = html.escape(column.show(value))
    if column.numeric:
        return f"<td class=num title=\"{html.escape(repr(value))}\">{shown}</td>"
    return f"<td>{shown}</td>"


def table(frame: pd.DataFrame, columns: Sequence[Column], row_class: Callable[[dict], str] | None = None,
          limit: int = MAX_TABLE_ROWS) -> str:
    """An HTML table of ``frame``; numeric cells show 3 significant digits, the exact value on hover."""
    if frame.empty:
        return "<p class=note>(none)</p>"
    head = "".join(f"<th>{html.escape(c.label)}</th>" for c in columns)
    body = []
    for record in frame.head(limit).to_dict("records"):
        cls = row_class(record) if row_class else ""
        cells = "".join(_cell(c, record.get(c.key)) for c in columns)
        body.append(f"<tr{f' class={cls}' if cls else ''}>{cells}</tr>")
    more = len(frame) - limit
    tail = f"<p class=note>... and {more} more rows not shown.</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{tail}"


def key_values(pairs: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in pairs)
    return f"<table class=summary><tbody>{rows}</tbody></table>"


def note(text: str) -> str:
    return f"<p class=note>{html.escape(text)}</p>"


@dataclass
class Page:
    """Sections of HTML and figures, in order; figures become divs sharing one plotly.js."""

    title: str
    parts: list[tuple[str, Any]] = field(default_factory=list)
    toc: list[tuple[str, str, int]] = field(default_factory=list)
    figure_count: int = 0

    def heading(self, text: str, level: int, anchor: str | None = None) -> None:
        anchor_attr = f' id="{html.escape(anchor)}"' if anchor else ""
        if anchor:
            self.toc.append((anchor, text, level))
        self.parts.append(("html", f"<h{level}{anchor_attr}>{html.escape(text)}</h{level}>"))

    def html(self, fragment: str) -> None:
        self.parts.append(("html", fragment))

    def figure(self, fig: Any) -> None:
        if fig is not None:
            self.parts.append(("figure", fig))
            self.figure_count += 1

    def render(self, plotly_js: str) -> str:
        import plotly.io as pio

        body = []
        for kind, item in self.parts:
            if kind == "html":
                body.append(item)
            else:
                div = pio.to_html(item, full_html=False, include_plotlyjs=False,
                                  config={"displaylogo": False, "responsive": True})
                body.append(f"<div class=figure>{div}</div>")
        # Level-2 headings are list entries; their subsections follow inline, so a report of
        # many datasets keeps a table of contents one can take in at a glance.
        entries: list[tuple[str, list[str]]] = []
        for anchor, text, level in self.toc:
            link = f'<a href="#{html.escape(anchor)}">{html.escape(text)}</a>'
            if level <= 2 or not entries:
                entries.append((link, []))
            else:
                entries[-1][1].append(link)
        toc = "".join(f"<li>{head}{': ' + ' &middot; '.join(subs) if subs else ''}</li>" for head, subs in entries)
        # '</script' inside the library text would end the element early; plotly's bundle does
        # not contain it today, and escaping keeps the page valid whatever version is installed.
        safe_js = plotly_js.replace("</script", "<\\/script")
        return "\n".join([
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title>",
            f"<script>{_ERROR_HOOK}</script>",
            f"<style>{_CSS}</style>",
            f'<script type="text/javascript">{safe_js}</script>',
            "</head><body>",
            '<div id="report-errors" hidden></div>',
            f"<h1>{html.escape(self.title)}</h1>",
            f"<nav><ul>{toc}</ul></nav>",
            *body,
            f'<div id="render-status" hidden data-expected="{self.figure_count}" data-done="no"></div>',
            f"<script>{_RENDER_CHECK}</script>",
            "</body></html>",
        ])
