"""Goals for the benchmarks: a target, the figure measured in the same run, met or missed.

Every benchmark prints its anchors (the hand-written clients it is compared with) beside
notifykit in one JSON, and a ``goals`` list built here; ``run_all.py`` renders that list
as the table of docs/performance.md. A missed goal keeps its ``cause`` (what the
profile says the time goes to), so it stays visible with its explanation.

The machine is shared and loaded: contenders run in interleaved rounds (each round runs
every contender once, in an order that rotates); a rate is the median of its rounds, and
a ratio is the median of the per-round ratios (notifykit and its anchor measured minutes
apart at most, so slow drifts of the machine's load cancel out).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["OPS", "goal", "median", "paired_ratio", "rotated"]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, "==": lambda a, b: a == b,
}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(ours: Sequence[float], anchor: Sequence[float]) -> float:
    """Median of the per-round ratios ``ours[i] / anchor[i]`` (rates of the same rounds)."""
    return median([a / b for a, b in zip(ours, anchor, strict=True)])


def rotated(items: Sequence[Any], round_number: int) -> list[Any]:
    """The contenders in the order of this round: each goes first in turn."""
    shift = round_number % len(items)
    return [*items[shift:], *items[:shift]]


def goal(name: str, figure: float, op: str, target: float, *, anchor: str = "", cause: str = "",
         digits: int = 3) -> dict[str, Any]:
    """One row of the goals table. ``cause`` is kept only when the target is missed."""
    figure = round(figure, digits)
    met = OPS[op](figure, target)
    row: dict[str, Any] = {"goal": name, "figure": figure, "op": op, "target": target, "met": met}
    if anchor:
        row["anchor"] = anchor
    if not met and cause:
        row["cause"] = cause
    return row
