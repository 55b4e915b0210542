"""Percentiles and medians of rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, ``p`` in 0..100 (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def distribution_ms(seconds: Sequence[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(seconds, p) * 1000, 1) for p in (50, 95, 99)} | {
        "max": round(max(seconds, default=0.0) * 1000, 1)
    }


def median_of(rounds: Sequence[dict[str, Any]], *paths: str) -> dict[str, Any]:
    """The median of each ``a.b`` path over the rounds, with the rounds kept beside it."""
    medians: dict[str, Any] = {}
    for path in paths:
        values = [_get(r, path) for r in rounds]
        present = [v for v in values if isinstance(v, int | float)]
        medians[path.replace(".", "_")] = round(statistics.median(present), 2) if present else None
    return medians | {"rounds": list(rounds)}


def _get(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
