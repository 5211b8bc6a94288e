"""Figures: what one run measures, and the summary over repeats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Measurement", "Series", "percentile", "summarize_latencies"]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of latencies, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
        "mean": statistics.fmean(ms) if ms else math.nan,
    }


@dataclass
class Measurement:
    """One figure from one run: ``metric`` of ``system`` (and ``variant``) in
    a scenario, e.g. drain / conveyor / "" / throughput = 27,000 jobs/s."""

    system: str
    metric: str
    value: float
    unit: str
    variant: str = ""
    higher_is_better: bool = True


@dataclass
class Series:
    """The repeats of one figure, and their median, min and max."""

    scenario: str
    system: str
    variant: str
    metric: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scenario, self.system, self.variant, self.metric)

    @property
    def label(self) -> str:
        return f"{self.system} {self.variant}".strip()

    @property
    def median(self) -> float:
        good = [s for s in self.samples if not math.isnan(s)]
        return statistics.median(good) if good else math.nan

    @property
    def min(self) -> float:
        good = [s for s in self.samples if not math.isnan(s)]
        return min(good) if good else math.nan

    @property
    def max(self) -> float:
        good = [s for s in self.samples if not math.isnan(s)]
        return max(good) if good else math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "variant": self.variant,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "median": _finite(self.median),
            "min": _finite(self.min),
            "max": _finite(self.max),
            "samples": [_finite(s) for s in self.samples],
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value
