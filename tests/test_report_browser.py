"""The report in a real browser: headless Chromium loads it offline, and the page itself reports
script errors and how many figures drew SVG (see topkbench/report/html.py).

Needs the Debian packages ``chromium`` (and ``chromium-driver`` in CI's list); skipped with a
reason where Chromium is absent. Set TOPKBENCH_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the report needs plotly (pip install 'topkbench[report]')")

from test_report import FIXTURES, gpu_frame  # noqa: E402

from topkbench.report import build_report, render  # noqa: E402

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--hide-scrollbars", "--virtual-time-budget=15000"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def load(page: Path, tmp_path: Path) -> dict[str, str]:
    """The page's #render-status attributes and error banner after Chromium ran its scripts."""
    done = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    status = re.search(r'<div id="render-status"([^>]*)>', done.stdout)
    assert status, f"no render status in the dumped DOM ({len(done.stdout)} chars)"
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', status.group(1)))
    banner = re.search(r'<div id="report-errors"[^>]*>(.*?)</div>', done.stdout, re.S)
    attrs["banner"] = banner.group(1) if banner else ""
    return attrs


def screenshot(page: Path, tmp_path: Path, name: str) -> Path:
    png = tmp_path / name
    done = _chromium(tmp_path, "--window-size=1400,3000", f"--screenshot={png}", page.as_uri())
    assert done.returncode == 0 and png.exists() and png.stat().st_size > 10_000, done.stderr[-2000:]
    keep = os.environ.get("TOPKBENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / name)
    return png


def assert_rendered(attrs: dict[str, str]) -> None:
    assert attrs["data-done"] == "yes", "the page's render check never ran"
    assert attrs["data-errors"] == "0" and attrs["banner"] == "", f"script errors: {attrs['banner']}"
    assert int(attrs["data-expected"]) > 0
    assert attrs["data-plots"] == attrs["data-rendered"] == attrs["data-expected"], attrs


def test_fixture_report_renders_every_figure_without_errors(tmp_path):
    page = build_report([FIXTURES], tmp_path / "fixtures.html")
    assert_rendered(load(page, tmp_path))
    screenshot(page, tmp_path, "report-cpu-fixtures.png")


def test_gpu_shaped_report_renders_every_figure_without_errors(tmp_path):
    page = tmp_path / "gpu.html"
    page.write_text(render(gpu_frame()))  # with the hand rules of topkbench.rules drawn
    assert_rendered(load(page, tmp_path))
    screenshot(page, tmp_path, "report-gpu-synthetic.png")


def test_the_page_reports_script_errors_and_missing_figures(tmp_path):
    """The checks above can fail: a broken script and a figure that cannot draw are both seen."""
    html = render(gpu_frame(), rules=[])
    broken = html.replace("</body>", "<script>window.notAFunction();</script></body>", 1)
    # An empty plot div looks like a figure to the counter but never draws.
    broken = broken.replace('<div class=figure>', '<div class=figure><div class="js-plotly-plot"></div>', 1)
    page = tmp_path / "broken.html"
    page.write_text(broken)
    attrs = load(page, tmp_path)
    assert attrs["data-done"] == "yes"
    assert int(attrs["data-errors"]) >= 1 and "notAFunction" in attrs["banner"]
    assert int(attrs["data-plots"]) == int(attrs["data-expected"]) + 1
    assert int(attrs["data-rendered"]) == int(attrs["data-expected"])
