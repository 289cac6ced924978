"""Number formatting and the colours shared by every figure of a report."""

from __future__ import annotations

import math

# Okabe-Ito first (readable for colour-blind readers), then Tableau for more implementations.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
            "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#9C755F", "#BAB0AC"]
#: Baselines keep one colour in every report so that a reader learns it once.
_FIXED = {"torch": "#7F7F7F", "torch-cpu": "#7F7F7F", "numpy": "#8C564B"}
RULE_STYLES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
RULE_COLOURS = ["#111111", "#C00000", "#6A3D9A", "#1F78B4", "#33A02C", "#FF7F00"]


def impl_colours(impls: list[str]) -> dict[str, str]:
    """A stable colour per implementation (sorted names, baselines fixed)."""
    colours = {}
    free = iter(c for c in _PALETTE if c not in _FIXED.values())
    for impl in sorted(impls):
        colours[impl] = _FIXED.get(impl) or next(free, "#333333")
    return colours


def sig(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without exponent notation for everyday sizes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    # Round first, then read the magnitude: 999.6 rounds to 1000, which has no decimals.
    rounded = float(f"{value:.{digits - 1}e}")
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude >= 7 or magnitude < -4:
        return f"{rounded:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{rounded:.{decimals}f}"


def pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{sig(100.0 * value)}%"


def count_label(n: int) -> str:
    """Axis labels for sizes: 2048 -> 2K, 131072 -> 128K, 1000 -> 1000."""
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
