"""Hand-written dispatch rules (docs/design.md section 1), by name.

Serving engines pick a top-k kernel per decode step with rules read off a plot by hand. They live
here as data so that ``fit-heuristic`` can report how much time each one leaves on the table, the
report can draw them next to the fitted thresholds, and ``dispatch`` can fall back on one.

A rule sees ``(num_rows, max_seq_len, k)``. The published rules speak of the *batch*; they are
applied to the number of rows, which is the batch when next_n = 1 (no speculative tokens).
Each rule lists every implementation it can answer (``impls``): a rule whose implementations are
not all in the measured data cannot be evaluated and is reported as not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from topkbench.errors import UsageError


@dataclass(frozen=True)
class HandRule:
    """A named hand rule: ``select(num_rows, max_seq_len, k) -> implementation name``."""

    name: str
    description: str
    impls: tuple[str, ...]
    _select: Callable[[int, int, int], str]

    def select(self, num_rows: int, max_seq_len: int, k: int) -> str:
        return self._select(int(num_rows), int(max_seq_len), int(k))

    def missing(self, available: "list[str] | tuple[str, ...] | set[str]") -> list[str]:
        """The implementations this rule can answer that are not in ``available`` (sorted)."""
        return sorted(set(self.impls) - set(available))


def _proposal(num_rows: int, max_seq_len: int, k: int) -> str:
    if max_seq_len >= 65536:
        return "radix"
    if max_seq_len == 2048 or 8192 < max_seq_len < 65536:
        return "large_context"
    return "per_row"


def _batch128(num_rows: int, max_seq_len: int, k: int) -> str:
    if num_rows <= 128 and max_seq_len > 8192:
        return "large_context"
    return "per_row"


RULES: dict[str, HandRule] = {
    rule.name: rule
    for rule in (
        HandRule(
            "proposal",
            "radix when max_seq_len >= 65536; large_context when max_seq_len == 2048 or "
            "8192 < max_seq_len < 65536; per_row otherwise",
            ("per_row", "large_context", "radix"),
            _proposal,
        ),
        HandRule(
            "batch128",
            "large_context when rows <= 128 and max_seq_len > 8192; per_row otherwise",
            ("per_row", "large_context"),
            _batch128,
        ),
    )
}


def names() -> list[str]:
    return list(RULES)


def get_rule(name: str) -> HandRule:
    """The rule called ``name`` (UsageError naming the rules if there is none)."""
    try:
        return RULES[name]
    except KeyError:
        raise UsageError(f"unknown hand rule {name!r}", hint=f"choose from: {', '.join(RULES)}") from None
