"""Screenshot the winner map of the first dataset (graph, hot L2, fixed, normal) as a PNG.

    python scripts/winner_map_png.py RESULTS... --heuristic MODULE.py --out docs/winner-map.png

Renders the report's own winner-map figure on a page of its own and photographs it with
headless Chromium (Debian package ``chromium``); used for the README's picture.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from topkbench.report import data as D
from topkbench.report import figures as F
from topkbench.report.selectors import hand_rules, load_heuristic
from topkbench.store import read_results

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=15000"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--heuristic")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    dataset = D.split_datasets(read_results(args.results))[0]
    selectors = ([load_heuristic(args.heuristic)] if args.heuristic else []) + hand_rules()
    figure = F.winner_map(dataset, selectors)
    figure.update_layout(width=1300)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "map.html"
        figure.write_html(page, include_plotlyjs=True, full_html=True)
        height = int(figure.layout.height or 800) + 20
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size=1320,{height}",
                        f"--screenshot={Path(args.out).resolve()}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
